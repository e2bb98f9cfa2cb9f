package netstack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/tun"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	addrA  = netip.MustParseAddr("fc11::1")
	addrB  = netip.MustParseAddr("fc22::2")
	addrA4 = netip.MustParseAddr("192.0.2.1")
	addrB4 = netip.MustParseAddr("192.0.2.2")
)

const testMTU = 1280

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(time.Millisecond)
	}
}

func newTestStack(t testing.TB, tn tuning, addrs ...netip.Addr) *Stack {
	t.Helper()
	s, err := newStack(Config{Addresses: addrs, MTU: testMTU}, tn)
	if err != nil {
		t.Fatalf("new stack: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// linkCond describes the wire between two stacks in a pair, per direction.
type linkCond struct {
	delay     time.Duration // one-way propagation delay
	lossEvery int           // drop every lossEvery-th packet; 0 = none
	rate      int           // bottleneck rate in bytes/s; 0 = unlimited
	queue     time.Duration // bottleneck drop-tail queue, as time to drain it
}

// wire applies a linkCond to one direction's packets.
type wire struct {
	lc   linkCond
	seq  int
	free time.Time // when the bottleneck will have sent all it holds
}

// admit returns when a packet of size bytes entering at now arrives, or
// false if the wire loses it.
func (w *wire) admit(now time.Time, size int) (time.Time, bool) {
	w.seq++
	if w.lc.lossEvery > 0 && w.seq%w.lc.lossEvery == 0 {
		return time.Time{}, false
	}
	out := now
	if w.lc.rate > 0 {
		start := now
		if w.free.After(now) {
			start = w.free
		}
		if start.Sub(now) > w.lc.queue {
			return time.Time{}, false // bottleneck queue full
		}
		w.free = start.Add(time.Duration(size) * time.Second / time.Duration(w.lc.rate))
		out = w.free
	}
	return out.Add(w.lc.delay), true
}

// pair is two stacks wired back to back: what one Reads the other is
// Written, in batches, in both directions.
type pair struct {
	a, b *Stack
	wg   sync.WaitGroup
}

func newPair(t testing.TB, tn tuning, lc linkCond, addrsA, addrsB []netip.Addr) *pair {
	t.Helper()
	p := &pair{a: newTestStack(t, tn, addrsA...), b: newTestStack(t, tn, addrsB...)}
	p.wg.Add(2)
	go p.pump(p.a, p.b, lc)
	go p.pump(p.b, p.a, lc)
	t.Cleanup(func() {
		p.a.Close()
		p.b.Close()
		p.wg.Wait()
	})
	return p
}

// newV6Pair is a pair with one IPv6 address each, a lossless zero-delay
// link and the default tuning.
func newV6Pair(t testing.TB) *pair {
	return newPair(t, defaultTuning(), linkCond{}, []netip.Addr{addrA}, []netip.Addr{addrB})
}

// pump moves packets from src to dst until src is closed. A nonzero offset
// checks that both sides honour it.
func (p *pair) pump(src, dst *Stack, lc linkCond) {
	defer p.wg.Done()
	const offset = 16
	bufs := make([][]byte, src.BatchSize())
	pkts := make([][]byte, 0, len(bufs))
	sizes := make([]int, len(bufs))
	for i := range bufs {
		bufs[i] = make([]byte, offset+testMTU)
	}
	w := wire{lc: lc}
	var line chan delayed
	if lc.delay > 0 || lc.rate > 0 {
		line = make(chan delayed, 1024)
		p.wg.Add(1)
		go p.deliver(dst, line, offset)
		defer close(line)
	}
	for {
		n, err := src.Read(bufs, sizes, offset)
		if err != nil {
			return
		}
		now := time.Now()
		pkts = pkts[:0]
		var d delayed
		for i := range n {
			pkt := bufs[i][:offset+sizes[i]]
			due, ok := w.admit(now, sizes[i])
			if !ok {
				continue
			}
			if line == nil {
				pkts = append(pkts, pkt)
				continue
			}
			// Packets due within 200µs of each other travel together;
			// one slab per group keeps the emulation cheap enough not to
			// be the bottleneck it measures through.
			if len(d.pkts) > 0 && due.Sub(d.due) > 200*time.Microsecond {
				line <- d
				d = delayed{}
			}
			if d.slab == nil {
				d.slab = make([]byte, 0, (n-i)*(offset+testMTU))
			}
			d.slab = append(d.slab, pkt...)
			d.pkts = append(d.pkts, d.slab[len(d.slab)-len(pkt):])
			d.due = due
		}
		if line == nil {
			dst.Write(pkts, offset)
		} else if len(d.pkts) > 0 {
			line <- d
		}
	}
}

// delayed is a batch of packets on the wire, deliverable from due.
type delayed struct {
	due  time.Time
	pkts [][]byte
	slab []byte // backing store of pkts
}

// deliver writes each batch from line to dst once it is due.
func (p *pair) deliver(dst *Stack, line <-chan delayed, offset int) {
	defer p.wg.Done()
	for d := range line {
		if wait := time.Until(d.due); wait > 0 {
			time.Sleep(wait) // the delay being emulated, not synchronisation
		}
		dst.Write(d.pkts, offset)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; "" means valid
	}{
		{"valid v6", Config{Addresses: []netip.Addr{addrA}, MTU: 1420}, ""},
		{"valid v6+v4", Config{Addresses: []netip.Addr{addrA, addrA4}, MTU: MaxMTU}, ""},
		{"no addresses", Config{MTU: 1420}, "Addresses is empty"},
		{"mtu 100", Config{Addresses: []netip.Addr{addrA}, MTU: 100}, "MTU 100 out of range"},
		{"mtu too big", Config{Addresses: []netip.Addr{addrA}, MTU: 70000}, "MTU 70000 out of range"},
		{"zero addr", Config{Addresses: []netip.Addr{{}}, MTU: 1420}, "Addresses[0] is the zero netip.Addr"},
		{"zone", Config{Addresses: []netip.Addr{netip.MustParseAddr("fe80::1%eth0")}, MTU: 1420}, "has a zone"},
		{"mapped", Config{Addresses: []netip.Addr{netip.MustParseAddr("::ffff:192.0.2.1")}, MTU: 1420}, "IPv4-mapped"},
		{"unspecified", Config{Addresses: []netip.Addr{netip.IPv6Unspecified()}, MTU: 1420}, "not a unicast"},
		{"duplicate", Config{Addresses: []netip.Addr{addrA, addrA}, MTU: 1420}, "Addresses[1] fc11::1 is listed twice"},
		{"batch 4", Config{Addresses: []netip.Addr{addrA}, MTU: 1420, BatchSize: 4}, ""},
		{"batch too big", Config{Addresses: []netip.Addr{addrA}, MTU: 1420, BatchSize: 129}, "BatchSize 129 out of range"},
		{"batch negative", Config{Addresses: []netip.Addr{addrA}, MTU: 1420, BatchSize: -1}, "BatchSize -1 out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				s.Close()
				return
			}
			if err == nil {
				s.Close()
				t.Fatalf("New succeeded, want error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestDeviceBasics(t *testing.T) {
	s := newTestStack(t, defaultTuning(), addrA)
	if s.File() != nil {
		t.Error("File() != nil")
	}
	if mtu, err := s.MTU(); mtu != testMTU || err != nil {
		t.Errorf("MTU() = %d, %v", mtu, err)
	}
	if name, err := s.Name(); name != "netstack" || err != nil {
		t.Errorf("Name() = %q, %v", name, err)
	}
	if s.BatchSize() != batchSize {
		t.Errorf("BatchSize() = %d", s.BatchSize())
	}
	small, err := New(Config{Addresses: []netip.Addr{addrB}, MTU: testMTU, BatchSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	if small.BatchSize() != 4 {
		t.Errorf("BatchSize() = %d with Config.BatchSize 4", small.BatchSize())
	}
	small.Close()
	select {
	case ev := <-s.Events():
		if ev != tun.EventUp {
			t.Errorf("first event %v, want EventUp", ev)
		}
	default:
		t.Fatal("no EventUp queued after New")
	}
	s.Close()
	if _, ok := <-s.Events(); ok {
		t.Error("Events not closed by Close")
	}
}

// echo accepts connections on l and echoes each until EOF.
func echo(t testing.TB, l net.Listener) *sync.WaitGroup {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return &wg
}

func TestTCPEchoBothWays(t *testing.T) {
	p := newV6Pair(t)
	for _, dir := range []struct {
		name           string
		server, client *Stack
		serverAddr     netip.Addr
	}{
		{"b to a", p.a, p.b, addrA},
		{"a to b", p.b, p.a, addrB},
	} {
		t.Run(dir.name, func(t *testing.T) {
			l, err := dir.server.ListenTCP(netip.AddrPortFrom(dir.serverAddr, 7))
			if err != nil {
				t.Fatal(err)
			}
			wg := echo(t, l)
			defer wg.Wait()
			defer l.Close()

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := dir.client.DialContext(ctx, "tcp", netip.AddrPortFrom(dir.serverAddr, 7).String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			for i := range 5 {
				msg := fmt.Sprintf("hello %d from %s", i, dir.name)
				if _, err := io.WriteString(c, msg); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil {
					t.Fatal(err)
				}
				if string(got) != msg {
					t.Fatalf("echo %q, want %q", got, msg)
				}
			}
			if got, want := c.RemoteAddr().String(), netip.AddrPortFrom(dir.serverAddr, 7).String(); got != want {
				t.Errorf("RemoteAddr %s, want %s", got, want)
			}
		})
	}
}

func TestTCPTransfer20MB(t *testing.T) {
	const size = 20 << 20
	p := newV6Pair(t)
	l, err := p.b.ListenTCP(netip.AddrPortFrom(addrB, 9000))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	type result struct {
		n   int64
		sum [32]byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		h := sha256.New()
		n, err := io.Copy(h, c)
		var r result
		r.n, r.err = n, err
		copy(r.sum[:], h.Sum(nil))
		done <- r
	}()

	c, err := p.a.DialContext(context.Background(), "tcp6", "[fc22::2]:9000")
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	rng := rand.NewChaCha8([32]byte{1, 2, 3})
	data := make([]byte, size)
	rng.Read(data)
	want := sha256.Sum256(data)
	start := time.Now()
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	c.Close()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.n != size || r.sum != want {
		t.Fatalf("received %d bytes with sha256 %x, want %d bytes %x", r.n, r.sum, size, want)
	}
	t.Logf("20 MB in %v (%.1f MB/s), stats a=%+v b=%+v", time.Since(start), size/time.Since(start).Seconds()/1e6, p.a.Stats(), p.b.Stats())
	// The pump hands B batches of A's segments: with receive coalescing on
	// (the default), runs of them reach B's TCP merged.
	if st := p.b.Stats(); st.CoalescedIn == 0 {
		t.Errorf("no inbound segments were coalesced: %+v", st)
	}
}

// TestTCPThroughBottleneck sends several transfers through a rate-limited,
// drop-tail bottleneck, where slow start ends in a burst of loss, and checks
// each completes. With RACK on, the pinned gVisor stalls some of them for
// good (see defaultTuning).
func TestTCPThroughBottleneck(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	lc := linkCond{delay: 10 * time.Millisecond, rate: 50e6, queue: 10 * time.Millisecond}
	for i := range 6 {
		p := newPair(t, defaultTuning(), lc, []netip.Addr{addrA}, []netip.Addr{addrB})
		l, err := p.b.ListenTCP(netip.AddrPortFrom(addrB, 9000))
		if err != nil {
			t.Fatal(err)
		}
		size := int64(1+i) << 20
		got := make(chan int64, 1)
		go func() {
			c, err := l.Accept()
			if err != nil {
				got <- -1
				return
			}
			defer c.Close()
			n, _ := io.Copy(io.Discard, c)
			got <- n
		}()
		c, err := p.a.DialContext(t.Context(), "tcp", "[fc22::2]:9000")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c.Write(make([]byte, size))
			c.Close()
		}()
		select {
		case n := <-got:
			if n != size {
				t.Fatalf("run %d: received %d bytes, want %d", i, n, size)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("run %d: transfer of %d bytes stalled; sender stats %+v", i, size, p.a.Stats())
		}
		l.Close()
		p.a.Close()
		p.b.Close()
	}
}

func TestUDPBothWays(t *testing.T) {
	p := newV6Pair(t)
	for _, dir := range []struct {
		name           string
		server, client *Stack
		serverAddr     netip.Addr
	}{
		{"b to a", p.a, p.b, addrA},
		{"a to b", p.b, p.a, addrB},
	} {
		t.Run(dir.name, func(t *testing.T) {
			pc, err := dir.server.ListenUDP(netip.AddrPortFrom(dir.serverAddr, 5353))
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			var wg sync.WaitGroup
			defer wg.Wait()
			wg.Add(1)
			go func() { // reply to each datagram with it upper-cased
				defer wg.Done()
				buf := make([]byte, 2048)
				for {
					n, from, err := pc.ReadFrom(buf)
					if err != nil {
						return
					}
					pc.WriteTo(bytes.ToUpper(buf[:n]), from)
				}
			}()
			defer pc.Close()

			c, err := dir.client.DialContext(context.Background(), "udp", netip.AddrPortFrom(dir.serverAddr, 5353).String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			buf := make([]byte, 2048)
			for i := range 20 {
				msg := fmt.Sprintf("datagram %d %s", i, strings.Repeat("x", i*50))
				if _, err := c.Write([]byte(msg)); err != nil {
					t.Fatal(err)
				}
				n, err := c.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := string(buf[:n]), strings.ToUpper(msg); got != want {
					t.Fatalf("reply %q, want %q", got, want)
				}
			}
		})
	}
}

func TestListenUnspecified(t *testing.T) {
	p := newPair(t, defaultTuning(), linkCond{}, []netip.Addr{addrA, addrA4}, []netip.Addr{addrB, addrB4})
	for _, tc := range []struct {
		listen netip.AddrPort
		dial   string
	}{
		{netip.MustParseAddrPort("[::]:80"), "[fc11::1]:80"},
		{netip.MustParseAddrPort("[::]:81"), "192.0.2.1:81"}, // dual-stack
		{netip.MustParseAddrPort("0.0.0.0:82"), "192.0.2.1:82"},
		{netip.MustParseAddrPort("192.0.2.1:83"), "192.0.2.1:83"},
	} {
		t.Run(tc.listen.String()+"<-"+tc.dial, func(t *testing.T) {
			l, err := p.a.ListenTCP(tc.listen)
			if err != nil {
				t.Fatal(err)
			}
			wg := echo(t, l)
			defer wg.Wait()
			defer l.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := p.b.DialContext(ctx, "tcp", tc.dial)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "ping")
			got := make([]byte, 4)
			if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
				t.Fatalf("echo %q, %v", got, err)
			}
		})
	}

	t.Run("udp [::]", func(t *testing.T) {
		pc, err := p.a.ListenUDP(netip.MustParseAddrPort("[::]:53"))
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		c, err := p.b.DialContext(context.Background(), "udp6", "[fc11::1]:53")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("q"))
		pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 16)
		n, from, err := pc.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "q" {
			t.Fatalf("ReadFrom = %q, %v", buf[:n], err)
		}
		if ap := from.(*net.UDPAddr).AddrPort(); ap.Addr() != addrB {
			t.Errorf("datagram from %s, want %s", ap, addrB)
		}
	})
}

func TestDialErrors(t *testing.T) {
	s := newTestStack(t, defaultTuning(), addrA, addrA4)
	for _, tc := range []struct {
		network, address, want string
	}{
		{"tcp", "example.com:80", "not a literal IP address"},
		{"tcp", "192.0.2.2", "missing port"},
		{"tcp", "fc22::2", "too many colons"},
		{"tcp", "[fc22::2]:http", "not a number"},
		{"tcp", "[fe80::1%eth0]:80", "has a zone"},
		{"sctp", "[fc22::2]:80", "unsupported network"},
		{"tcp4", "[fc22::2]:80", "family does not match"},
		{"udp6", "192.0.2.2:80", "family does not match"},
	} {
		_, err := s.DialContext(context.Background(), tc.network, tc.address)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DialContext(%s, %s) = %v, want error containing %q", tc.network, tc.address, err, tc.want)
		}
	}
	if _, err := s.ListenTCP(netip.AddrPort{}); err == nil {
		t.Error("ListenTCP(zero) succeeded")
	}
	if _, err := s.ListenTCP(netip.MustParseAddrPort("[fc99::9]:80")); err == nil {
		t.Error("ListenTCP on a foreign address succeeded")
	}
}

func TestDialContextCancel(t *testing.T) {
	// No pump: the SYN goes nowhere, so only ctx can end the dial.
	s := newTestStack(t, defaultTuning(), addrA)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := s.DialContext(ctx, "tcp", "[fc22::2]:80")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("dial returned after %v", d)
	}
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := s.DialContext(cancelled, "udp", "[fc22::2]:53"); !errors.Is(err, context.Canceled) {
		t.Fatalf("udp dial with cancelled ctx: %v", err)
	}
}

func TestUDPWriteToBadAddr(t *testing.T) {
	s := newTestStack(t, defaultTuning(), addrA)
	pc, err := s.ListenUDP(netip.AddrPortFrom(addrA, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for _, addr := range []net.Addr{nil, (*net.UDPAddr)(nil), &net.TCPAddr{IP: net.ParseIP("fc22::2"), Port: 1}, &net.UDPAddr{Port: 1}} {
		if _, err := pc.WriteTo([]byte("x"), addr); err == nil {
			t.Errorf("WriteTo(%#v) succeeded", addr)
		}
	}
	if _, err := pc.WriteTo([]byte("x"), &net.UDPAddr{IP: net.ParseIP("fc22::2"), Port: 1}); err != nil {
		t.Errorf("WriteTo a valid address: %v", err)
	}
}

func TestCloseEndsConnections(t *testing.T) {
	p := newV6Pair(t)
	l, err := p.a.ListenTCP(netip.AddrPortFrom(addrA, 7))
	if err != nil {
		t.Fatal(err)
	}
	wg := echo(t, l)
	c, err := p.b.DialContext(context.Background(), "tcp", "[fc11::1]:7")
	if err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		readErr <- err
	}()
	p.b.Close()
	select {
	case err := <-readErr:
		if err == nil {
			t.Error("Read on a closed stack returned no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("conn Read still blocked 5s after stack Close")
	}
	c.Close()
	p.a.Close()
	wg.Wait()
}
