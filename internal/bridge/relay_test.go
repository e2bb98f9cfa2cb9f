package bridge

import (
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
)

func TestRelayUDP(t *testing.T) {
	a, b := testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public(), b.Public()}})
	na, nb := h.udpNode(a), h.udpNode(b)
	idA, idB := na.mustRegister(), nb.mustRegister()

	na.sendRaw(relayFrame(idB, "hello b"))
	if id, msg := nb.expectRelay(); id != idA || msg != "hello b" {
		t.Fatalf("b got id %d %q, want %d", id, msg, idA)
	}
	nb.sendRaw(relayFrame(idA, "hello a"))
	if id, msg := na.expectRelay(); id != idB || msg != "hello a" {
		t.Fatalf("a got id %d %q, want %d", id, msg, idB)
	}

	// A batch to one destination goes out in one send.
	calls := h.udp.calls.Load()
	batch := [][]byte{relayFrame(idB, "1"), relayFrame(idB, "2"), relayFrame(idB, "3")}
	h.s.HandleFrames(batch, []netip.AddrPort{na.addr(), na.addr(), na.addr()})
	if got := h.udp.calls.Load() - calls; got != 1 {
		t.Fatalf("%d sends for a batch of 3", got)
	}
	for _, want := range []string{"1", "2", "3"} {
		if id, msg := nb.expectRelay(); id != idA || msg != want {
			t.Fatalf("b got %d %q", id, msg)
		}
	}

	// From an unregistered address, to an unknown id, malformed: dropped.
	stranger := h.udpNode(testKey(t))
	stranger.sendRaw(relayFrame(idB, "spoof"))
	unknown := idA ^ idB ^ 0x5a5a5a5a
	na.sendRaw(relayFrame(unknown, "lost"))
	na.sendRaw([]byte{wire.FrameRelay, 0, 0, 0, 0, 0, 0, 1})
	waitCond(t, "drops", func() bool {
		st := h.s.Stats()
		return st.RelayDroppedUnregistered == 1 && st.RelayDroppedUnknownID == 1 && st.RelayDroppedMalformed == 1
	})

	// Roaming: a registers from a new address; the old one no longer relays.
	na2 := h.udpNode(a)
	if id := na2.mustRegister(); id != idA {
		t.Fatalf("relay id changed on roaming: %d -> %d", idA, id)
	}
	na.sendRaw(relayFrame(idB, "old"))
	na2.sendRaw(relayFrame(idB, "new"))
	if id, msg := nb.expectRelay(); id != idA || msg != "new" {
		t.Fatalf("b got %d %q", id, msg)
	}
	nb.sendRaw(relayFrame(idA, "to new"))
	if _, msg := na2.expectRelay(); msg != "to new" {
		t.Fatalf("a got %q", msg)
	}
	waitCond(t, "old address dropped", func() bool { return h.s.Stats().RelayDroppedUnregistered == 2 })

	st := h.s.Stats()
	if st.RelayedFrames != 7 {
		t.Fatalf("stats %+v", st)
	}
	for _, n := range h.s.Nodes() {
		if n.PublicKey == a.Public() && n.RelayedBytes != uint64(5*wire.RelayHeaderSize+len("hello b")+3+len("new")) {
			t.Fatalf("a relayed %d bytes", n.RelayedBytes)
		}
	}
}

func TestRelayTCP(t *testing.T) {
	a, b := testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public(), b.Public()}, TCP: "127.0.0.1:0"})
	ta, nb := h.tcpNode(a), h.udpNode(b)
	m := ta.register("", netip.MustParseAddrPort("10.1.1.1:4610"))
	if m.Kind != wire.KindRegistered || !slices.Equal(m.Endpoints, []netip.AddrPort{ta.addr()}) {
		t.Fatalf("tcp register: %+v", m)
	}
	idA, idB := m.ID, nb.mustRegister()
	if nodes := h.s.Nodes(); nodes[slices.IndexFunc(nodes, func(n NodeInfo) bool { return n.PublicKey == a.Public() })].Transport != "tcp" {
		t.Fatalf("nodes %+v", nodes)
	}

	ta.sendRaw(relayFrame(idB, "over tcp"))
	if id, msg := nb.expectRelay(); id != idA || msg != "over tcp" {
		t.Fatalf("b got %d %q", id, msg)
	}
	nb.sendRaw(relayFrame(idA, "to tcp"))
	if id, msg := ta.expectRelay(); id != idB || msg != "to tcp" {
		t.Fatalf("a got %d %q", id, msg)
	}

	// Lookups over TCP; the introduction carries no TCP address.
	ta.send(wire.Message{Kind: wire.KindLookup, Seq: 1, Address: b.Public().Address()})
	if got := ta.expect(wire.KindLookupReply); !got.Found || got.ID != idB {
		t.Fatalf("lookup %+v", got)
	}
	if in := nb.expect(wire.KindIntroduce); in.ID != idA || !slices.Equal(in.Endpoints, []netip.AddrPort{netip.MustParseAddrPort("10.1.1.1:4610")}) {
		t.Fatalf("introduce %+v", in)
	}
	nb.send(wire.Message{Kind: wire.KindLookup, Seq: 2, Address: a.Public().Address()})
	if got := nb.expect(wire.KindLookupReply); !got.Found || got.ID != idA || !slices.Equal(got.Endpoints, []netip.AddrPort{netip.MustParseAddrPort("10.1.1.1:4610")}) {
		t.Fatalf("lookup of a tcp node %+v", got)
	}
	ta.expect(wire.KindIntroduce)

	// a moves to UDP: closing the old connection leaves it registered.
	na := h.udpNode(a)
	na.last = ta.last
	if id := na.mustRegister(); id != idA {
		t.Fatalf("relay id changed: %d -> %d", idA, id)
	}
	ta.tc.Close()
	waitCond(t, "connection gone", func() bool { return h.s.Stats().TCPConnsOpen == 0 })
	if nodes := h.s.Nodes(); len(nodes) != 2 || nodes[slices.IndexFunc(nodes, func(n NodeInfo) bool { return n.PublicKey == a.Public() })].Transport != "udp" {
		t.Fatalf("nodes %+v", nodes)
	}

	// and back to TCP; then closing the connection unregisters it.
	ta2 := h.tcpNode(a)
	ta2.last = na.last
	ta2.mustRegister()
	ta2.tc.Close()
	waitCond(t, "tcp registration gone", func() bool { return len(h.s.Nodes()) == 1 })
}

func TestRelayRateLimit(t *testing.T) {
	a, b := testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public(), b.Public()}, RelayMbit: 1})
	na, nb := h.udpNode(a), h.udpNode(b)
	idB := nb.mustRegister()
	na.mustRegister()
	payload := strings.Repeat("x", 1000)
	frames := make([][]byte, 100)
	srcs := make([]netip.AddrPort, len(frames))
	for i := range frames {
		frames[i] = relayFrame(idB, payload)
		srcs[i] = na.addr()
	}
	// Burst: max(a quarter second at 1 Mbit/s, one maximal frame) bytes;
	// the clock stands still, so nothing refills.
	passed := uint64(wire.MaxFrame / (wire.RelayHeaderSize + len(payload)))
	h.s.HandleFrames(frames, srcs)
	if st := h.s.Stats(); st.RelayedFrames != passed || st.RelayDroppedRate != uint64(len(frames))-passed {
		t.Fatalf("relayed %d, dropped %d; want %d passed", st.RelayedFrames, st.RelayDroppedRate, passed)
	}
	for range passed {
		nb.expectRelay()
	}
	h.clk.Advance(100 * time.Millisecond) // 12,500 bytes
	for i := range frames {
		wire.RelayHeader(frames[i], idB)
	}
	h.s.HandleFrames(frames, srcs)
	if st := h.s.Stats(); st.RelayedFrames != passed+12 {
		t.Fatalf("after 100ms: relayed %d, want %d", st.RelayedFrames, passed+12)
	}
}

// The relay path allocates nothing per frame.
func TestRelayAllocations(t *testing.T) {
	bk, a, b := testKey(t), testKey(t), testKey(t)
	s, err := NewServer(ServerConfig{Key: bk, Allow: []identity.PublicKey{a.Public(), b.Public()}, Sender: &discardSender{}, RelayMbit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	srcA, srcB := netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("192.0.2.2:2")
	registerDirect(t, s, bk.Public(), a, srcA)
	registerDirect(t, s, bk.Public(), b, srcB)
	idB := s.Nodes()[slices.IndexFunc(s.Nodes(), func(n NodeInfo) bool { return n.PublicKey == b.Public() })].RelayID
	frames := make([][]byte, 64)
	srcs := make([]netip.AddrPort, len(frames))
	for i := range frames {
		frames[i] = relayFrame(idB, strings.Repeat("w", 1200))
		srcs[i] = srcA
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, f := range frames {
			wire.RelayHeader(f, idB)
		}
		s.HandleFrames(frames, srcs)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch", allocs)
	}
	if st := s.Stats(); st.RelayedFrames < 100*64 {
		t.Fatalf("stats %+v", st)
	}
}

// What the bridge holds per registered UDP node stays small.
func TestMemoryPerNode(t *testing.T) {
	if testing.Short() {
		t.Skip("generates many keys")
	}
	bk := testKey(t)
	s, err := NewServer(ServerConfig{Key: bk, StateFile: "", Sender: &discardSender{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 500
	frames := make([][]byte, n)
	srcs := make([]netip.AddrPort, n)
	keys := make([]identity.PublicKey, n)
	shared := make([]wire.SharedKey, n)
	for i := range frames {
		k := testKey(t)
		s.adm.Allow(k.Public())
		keys[i], shared[i] = k.Public(), wire.Precompute(bk, k.Public())
		frames[i], _ = wire.Seal(nil, k.Public(), &shared[i], &wire.Message{Kind: wire.KindRegister, Time: time.Now().UnixNano(),
			Endpoints: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:4610"), netip.MustParseAddrPort("[fd00::1]:4610")}})
		srcs[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 4610)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range frames {
		s.keys.PinShared(keys[i], &shared[i]) // as at admission
		s.HandleFrames(frames[i:i+1], srcs[i:i+1])
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := len(s.Nodes()); got != n {
		t.Fatalf("%d registered", got)
	}
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("%d bytes per registered node", per)
	if per > 2048 {
		t.Fatalf("%d bytes per registered node, want under 2 KB", per)
	}
}
