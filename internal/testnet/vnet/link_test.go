package vnet

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/clock"
)

// pair is two hosts on one network, each with a socket on port 1000.
type pair struct {
	w      *World
	n      *Network
	ha, hb *Host
	a, b   *UDPConn
}

func newPair(t testing.TB, cfg Config) *pair {
	t.Helper()
	p := &pair{w: newWorld(t, cfg)}
	p.n = must(p.w.NewNetwork("lan", lanPrefix))
	p.ha = must(p.n.AddHost("a"))
	p.hb = must(p.n.AddHost("b"))
	p.a, p.b = udp(t, p.ha, 1000), udp(t, p.hb, 1000)
	return p
}

// drain counts the datagrams waiting on c, returning their sequence
// numbers (the first 4 bytes).
func drain(c *UDPConn) []uint32 {
	var seqs []uint32
	for {
		_, msg, ok := poll(c)
		if !ok {
			return seqs
		}
		seqs = append(seqs, binary.BigEndian.Uint32([]byte(msg)))
	}
}

func sendSeq(t testing.TB, c *UDPConn, to netip.AddrPort, seq uint32, size int) {
	t.Helper()
	buf := make([]byte, size)
	binary.BigEndian.PutUint32(buf, seq)
	if _, err := c.WriteToUDPAddrPort(buf, to); err != nil {
		t.Fatal(err)
	}
}

// Delay adds up over the links of a path, each way, and keeps order.
func TestLinkDelay(t *testing.T) {
	clk := clock.NewManual(time.Unix(1e9, 0))
	p := newPair(t, Config{Clock: clk})
	p.ha.Link().Set(LinkConfig{Delay: 30 * time.Millisecond})
	p.hb.Link().Set(LinkConfig{Delay: 20 * time.Millisecond})
	for i := range 10 {
		sendSeq(t, p.a, p.b.LocalAddrPort(), uint32(i), 100)
		clk.Advance(time.Millisecond)
	}
	// The first packet left at 0 and arrives at 50 ms; we are at 10 ms.
	clk.Advance(39 * time.Millisecond)
	if got := drain(p.b); len(got) != 0 {
		t.Fatalf("at 49 ms %v arrived, want nothing before 50 ms", got)
	}
	clk.Advance(time.Millisecond)
	if got := drain(p.b); len(got) != 1 || got[0] != 0 {
		t.Fatalf("at 50 ms %v arrived, want [0]", got)
	}
	clk.Advance(10 * time.Millisecond)
	got := drain(p.b)
	if len(got) != 9 {
		t.Fatalf("at 60 ms %v arrived, want the other 9", got)
	}
	for i, s := range got {
		if s != uint32(i+1) {
			t.Fatalf("order %v", got)
		}
	}
	if n := clk.Pending(); n != 0 {
		t.Errorf("%d timers armed on idle links", n)
	}
}

// Loss drops about the configured share, the same packets for the same
// seed.
func TestLinkLoss(t *testing.T) {
	const n = 4000
	run := func(seed uint64) []uint32 {
		p := newPair(t, Config{Seed: seed, SocketQueue: n})
		p.ha.Link().Set(LinkConfig{Loss: 0.25})
		for i := range n {
			sendSeq(t, p.a, p.b.LocalAddrPort(), uint32(i), 64)
		}
		got := drain(p.b)
		if st := p.w.Stats(); st.Lost != uint64(n-len(got)) {
			t.Errorf("stats %+v, %d arrived of %d", st, len(got), n)
		}
		return got
	}
	got := run(7)
	if share := 1 - float64(len(got))/n; share < 0.22 || share > 0.28 {
		t.Errorf("lost %.3f, want about 0.25", share)
	}
	if again := run(7); !equalSeqs(got, again) {
		t.Error("the same seed lost other packets")
	}
	if other := run(8); equalSeqs(got, other) {
		t.Error("another seed lost the same packets")
	}
}

func equalSeqs(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Bandwidth paces a burst to the configured rate; beyond the queue, the
// link drops.
func TestLinkBandwidth(t *testing.T) {
	clk := clock.NewManual(time.Unix(1e9, 0))
	p := newPair(t, Config{Clock: clk})
	const rate, size, n = 100_000, 1000, 100 // 100 kB/s: 10 ms a packet
	p.ha.Link().Set(LinkConfig{Bandwidth: rate, Burst: size, Queue: 1 << 20})
	for i := range n {
		sendSeq(t, p.a, p.b.LocalAddrPort(), uint32(i), size)
	}
	var arrived []time.Duration
	for step := time.Duration(0); step <= 1100*time.Millisecond; step += time.Millisecond {
		for range drain(p.b) {
			arrived = append(arrived, step)
		}
		clk.Advance(time.Millisecond)
	}
	if len(arrived) != n {
		t.Fatalf("%d of %d arrived", len(arrived), n)
	}
	// The burst passes at once; then one packet each 10 ms: the last
	// at 990 ms.
	if last := arrived[n-1]; last < 985*time.Millisecond || last > 995*time.Millisecond {
		t.Errorf("last packet at %v, want 990ms (%d bytes at %d B/s)", last, n*size, rate)
	}
	if mid := arrived[n/2]; mid < 495*time.Millisecond || mid > 505*time.Millisecond {
		t.Errorf("packet %d at %v, want 500ms", n/2, mid)
	}

	// A queue of 10 packets: a burst of 100 loses the rest.
	p.ha.Link().Set(LinkConfig{Bandwidth: rate, Burst: size, Queue: 10 * size})
	clk.Advance(time.Second)
	for i := range n {
		sendSeq(t, p.a, p.b.LocalAddrPort(), uint32(i), size)
	}
	clk.Advance(2 * time.Second)
	if got := len(drain(p.b)); got < 10 || got > 12 {
		t.Errorf("%d passed a queue of 10 packets", got)
	}
	if st := p.w.Stats(); st.QueueFull < n-12 {
		t.Errorf("stats %+v: want about %d dropped by the queue", st, n-11)
	}
}

// A link that goes down drops everything until it comes back.
func TestLinkDown(t *testing.T) {
	p := newPair(t, Config{})
	p.hb.Link().SetDown(true)
	if reaches(t, p.a, p.b.LocalAddrPort(), p.b) {
		t.Fatal("crossed a link that is down")
	}
	p.hb.Link().SetDown(false)
	if !reaches(t, p.a, p.b.LocalAddrPort(), p.b) {
		t.Fatal("the restored link drops")
	}
	if st := p.w.Stats(); st.LinkDown != 1 {
		t.Errorf("stats %+v, want one LinkDown", st)
	}
	p.hb.Link().Set(LinkConfig{BlockUDP: true})
	if reaches(t, p.a, p.b.LocalAddrPort(), p.b) {
		t.Fatal("UDP crossed a link that blocks it")
	}
}

// With the real clock, delay is felt in real time, and nothing leaks.
func TestLinkDelayRealClock(t *testing.T) {
	p := newPair(t, Config{})
	p.ha.Link().Set(LinkConfig{Delay: 20 * time.Millisecond})
	start := time.Now()
	sendSeq(t, p.a, p.b.LocalAddrPort(), 1, 100)
	if _, _, ok := recvWithin(p.b, 5*time.Second); !ok {
		t.Fatal("nothing arrived")
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("arrived after %v, before the link's 20ms", d)
	}
	// Packets still queued when the world closes are dropped.
	sendSeq(t, p.a, p.b.LocalAddrPort(), 2, 100)
	p.w.Close()
}

func TestNetworkAddresses(t *testing.T) {
	w := newWorld(t, Config{})
	n := must(w.NewNetwork("tiny", netip.MustParsePrefix("192.0.2.0/30")))
	h := must(n.AddHost("h1"))
	if h.Addr() != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("first host at %v", h.Addr())
	}
	must(n.AddHost("h2"))
	if _, err := n.AddHost("h3"); err == nil {
		t.Error("a /30 held a third host (.3 is its broadcast address)")
	}
	if _, err := n.AddHostAt("h4", netip.MustParseAddr("192.0.2.1")); err == nil {
		t.Error("two hosts at one address")
	}
	if _, err := n.AddHostAt("h5", netip.MustParseAddr("198.51.100.1")); err == nil {
		t.Error("a host outside the prefix")
	}
	if _, err := n.AddHost("h1"); err == nil {
		t.Error("two hosts with one name")
	}
	if ia, _ := h.InterfaceAddrs(); len(ia) != 1 || ia[0].String() != "192.0.2.1/30" {
		t.Errorf("InterfaceAddrs %v, want [192.0.2.1/30]", ia)
	}
	v6 := must(w.NewNetwork("v6", netip.MustParsePrefix("2001:db8::/64")))
	a, b := must(v6.AddHost("a6")), must(v6.AddHost("b6"))
	ca, cb := udp(t, a, 1), udp(t, b, 2)
	if from := observed(t, ca, cb); from != netip.AddrPortFrom(netip.MustParseAddr("2001:db8::1"), 1) {
		t.Errorf("IPv6: b saw %v", from)
	}
}
