package bridge

import (
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/admission"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
)

func TestRegisterAllowedAndRefused(t *testing.T) {
	a, b := testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public()}})
	na, nb := h.udpNode(a), h.udpNode(b)
	local := netip.MustParseAddrPort("192.168.7.2:4610")

	m := na.register("", local)
	if m.Kind != wire.KindRegistered || m.ID == 0 || m.Interval != keepaliveInterval || !slices.Equal(m.Endpoints, []netip.AddrPort{na.addr()}) {
		t.Fatalf("allowed key: got %+v", m)
	}
	if m := nb.register(""); m.Kind != wire.KindRefused || m.Text != admission.RefuseNotAllowed {
		t.Fatalf("other key: got %s %q", m.Kind, m.Text)
	}
	// A keepalive keeps the relay id.
	if id := na.mustRegister(local); id != m.ID {
		t.Fatalf("relay id changed from %d to %d on re-registration", m.ID, id)
	}

	nodes := h.s.Nodes()
	want := []NodeInfo{{
		PublicKey: a.Public(), Address: a.Public().Address(), Endpoint: na.addr(), Transport: "udp",
		LocalEndpoints: []netip.AddrPort{local}, LastSeen: h.clk.Now().UTC(), RelayID: m.ID,
	}}
	if !reflect.DeepEqual(nodes, want) {
		t.Fatalf("Nodes() = %+v\nwant %+v", nodes, want)
	}
	st := h.s.Stats()
	if st.Registrations != 2 || st.Refused != 1 || st.Registered != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// The JSON of NodeInfo and admission.TokenInfo is what `tomoe bridge ... --json`
// prints: a contract.
func TestInfoJSON(t *testing.T) {
	k := testKey(t).Public()
	n := NodeInfo{
		PublicKey: k, Address: k.Address(), Endpoint: netip.MustParseAddrPort("198.51.100.4:4610"), Transport: "udp",
		LocalEndpoints: []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::4]:4610")},
		LastSeen:       time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), RelayedBytes: 99, RelayID: 7,
	}
	b, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"public_key":"` + k.String() + `","address":"` + k.Address().String() + `","endpoint":"198.51.100.4:4610","transport":"udp",` +
		`"local_endpoints":["[2001:db8::4]:4610"],"last_seen":"2026-03-01T12:00:00Z","relayed_bytes":99,"relay_id":7}`
	if string(b) != want {
		t.Fatalf("NodeInfo JSON\n got %s\nwant %s", b, want)
	}
	ti := admission.TokenInfo{ID: "0123abcd", UsesLeft: 2, Expires: n.LastSeen.Add(time.Hour), Created: n.LastSeen}
	b, _ = json.Marshal(ti)
	if want := `{"id":"0123abcd","uses_left":2,"expires":"2026-03-01T13:00:00Z","created":"2026-03-01T12:00:00Z"}`; string(b) != want {
		t.Fatalf("TokenInfo JSON\n got %s\nwant %s", b, want)
	}
}

func TestRegisterReplayIgnored(t *testing.T) {
	a := testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public()}})
	na := h.udpNode(a)
	reg := na.seal(wire.Message{Kind: wire.KindRegister})
	na.sendRaw(reg)
	na.expect(wire.KindRegistered)

	na.sendRaw(reg) // the same frame again
	older := na.seal(wire.Message{Kind: wire.KindRegister, Time: na.last - 1})
	na.sendRaw(older)
	// From elsewhere, a captured frame must not move the registration.
	thief := h.udpNode(testKey(t))
	thief.pc.WriteToUDPAddrPort(reg, h.addr())
	waitCond(t, "three replays", func() bool { return h.s.Stats().Replays == 3 })

	// Nothing answered the replays: the next frame is the lookup's reply.
	na.send(wire.Message{Kind: wire.KindLookup, Seq: 1, Address: a.Public().Address()})
	na.expect(wire.KindLookupReply)
	if nodes := h.s.Nodes(); len(nodes) != 1 || nodes[0].Endpoint != na.addr() {
		t.Fatalf("nodes %+v", nodes)
	}
	if st := h.s.Stats(); st.Registrations != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestLookupAndIntroduce(t *testing.T) {
	a, b := testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public(), b.Public()}})
	na, nb := h.udpNode(a), h.udpNode(b)
	aLocal := netip.MustParseAddrPort("10.0.0.1:1234")
	bLocal := netip.MustParseAddrPort("[fd00::2]:5555")
	idA := na.mustRegister(aLocal)
	idB := nb.mustRegister(bLocal)

	na.send(wire.Message{Kind: wire.KindLookup, Seq: 7, Address: b.Public().Address()})
	got := na.expect(wire.KindLookupReply)
	want := wire.Message{Kind: wire.KindLookupReply, Time: got.Time, Seq: 7, Address: b.Public().Address(), Found: true,
		Key: b.Public(), ID: idB, Endpoints: []netip.AddrPort{nb.addr(), bLocal}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("lookup reply %+v\nwant %+v", got, want)
	}
	intro := nb.expect(wire.KindIntroduce)
	if intro.Key != a.Public() || intro.ID != idA || !slices.Equal(intro.Endpoints, []netip.AddrPort{na.addr(), aLocal}) {
		t.Fatalf("introduce %+v", intro)
	}

	unknown := testKey(t).Public().Address()
	na.send(wire.Message{Kind: wire.KindLookup, Seq: 8, Address: unknown})
	if got := na.expect(wire.KindLookupReply); got.Found || got.Seq != 8 || got.Address != unknown {
		t.Fatalf("unknown address: %+v", got)
	}

	na.send(wire.Message{Kind: wire.KindLookup, Seq: 9, Address: h.key.Public().Address()})
	got = na.expect(wire.KindLookupReply)
	if !got.Found || got.Key != h.key.Public() || got.ID != 0 || len(got.Endpoints) != 0 {
		t.Fatalf("bridge's own address: %+v", got)
	}

	// An unregistered node gets no answer: its next frame is the refusal
	// of the Register it sends afterwards.
	nc := h.udpNode(testKey(t))
	nc.send(wire.Message{Kind: wire.KindLookup, Seq: 10, Address: b.Public().Address()})
	if m := nc.register(""); m.Kind != wire.KindRefused {
		t.Fatalf("got %s", m.Kind)
	}
	if st := h.s.Stats(); st.Lookups != 3 || st.Introductions != 1 {
		t.Fatalf("stats %+v", st)
	}

	// Unregister drops the registration.
	nb.send(wire.Message{Kind: wire.KindUnregister})
	waitCond(t, "unregister", func() bool { return len(h.s.Nodes()) == 1 })
	na.send(wire.Message{Kind: wire.KindLookup, Seq: 11, Address: b.Public().Address()})
	if got := na.expect(wire.KindLookupReply); got.Found {
		t.Fatalf("unregistered node found: %+v", got)
	}
}

func TestLookupRateLimit(t *testing.T) {
	a := testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public()}})
	na := h.udpNode(a)
	na.mustRegister()
	frames := make([][]byte, lookupBurst+50)
	srcs := make([]netip.AddrPort, len(frames))
	for i := range frames {
		frames[i] = na.seal(wire.Message{Kind: wire.KindLookup, Seq: uint64(i), Address: netip.MustParseAddr("fc00::1")})
		srcs[i] = na.addr()
	}
	h.s.HandleFrames(frames, srcs) // the clock stands still: no refill
	if st := h.s.Stats(); st.Lookups != lookupBurst || st.LookupsLimited != 50 {
		t.Fatalf("lookups %d, limited %d", st.Lookups, st.LookupsLimited)
	}
	h.clk.Advance(time.Second)
	h.s.HandleFrames(frames[:1], srcs[:1])
	if st := h.s.Stats(); st.Lookups != lookupBurst+1 {
		t.Fatalf("no refill: %+v", st)
	}
}

func TestRegistrationExpiry(t *testing.T) {
	a, b := testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public(), b.Public()}, TCP: "127.0.0.1:0"})
	na, tb := h.udpNode(a), h.tcpNode(b)
	na.mustRegister()
	tb.mustRegister()
	h.clk.Advance(registrationTTL / 2)
	na.mustRegister()
	h.clk.Advance(registrationTTL/2 + time.Second)
	h.s.expireIdle(h.clk.Now())
	if nodes := h.s.Nodes(); len(nodes) != 1 || nodes[0].PublicKey != a.Public() {
		t.Fatalf("nodes %+v", nodes)
	}
	if _, err := tb.recvErr(5 * time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("expired TCP node's connection: %v", err)
	}
	h.clk.Advance(registrationTTL)
	h.s.expireIdle(h.clk.Now())
	if st := h.s.Stats(); st.Registered != 0 || st.Expired != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// The bridge keeps the shared keys of the nodes it admits only: strangers
// with throwaway keys cannot flush its cache.
func TestKeyCacheHoldsAdmittedKeysOnly(t *testing.T) {
	a := testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public()}})
	cached := func(k identity.PublicKey) bool { return h.s.keys.Cached(k) != nil }
	stranger := testKey(t)
	if m := h.udpNode(stranger).register(""); m.Kind != wire.KindRefused {
		t.Fatalf("stranger: %s", m.Kind)
	}
	if cached(stranger.Public()) {
		t.Fatal("a refused stranger's key was cached")
	}
	if m := h.udpNode(a).register(""); m.Kind != wire.KindRegistered {
		t.Fatalf("allowed node: %s", m.Kind)
	}
	if !cached(a.Public()) {
		t.Fatal("an admitted node's key was not cached")
	}
}

// What a node says of its own addresses goes to every node that looks it
// up: the bridge keeps only plausible ones, loopback ones only from a
// node on its own host.
func TestRegisterDropsImplausibleLocalEndpoints(t *testing.T) {
	a := testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public()}})
	na := h.udpNode(a)
	good := []netip.AddrPort{netip.MustParseAddrPort("10.0.0.5:4610"), netip.MustParseAddrPort("[2001:db8::5]:4610")}
	junk := []netip.AddrPort{}
	for _, s := range []string{"224.0.0.251:5353", "255.255.255.255:4610", "0.0.0.0:4610", "169.254.169.254:80", "[fe80::1]:4610", "[ff02::1]:4610"} {
		junk = append(junk, netip.MustParseAddrPort(s))
	}
	local := func() []netip.AddrPort {
		t.Helper()
		nodes := h.s.Nodes()
		if len(nodes) != 1 {
			t.Fatalf("nodes %+v", nodes)
		}
		return nodes[0].LocalEndpoints
	}
	na.mustRegister(append(junk, good...)...)
	if got := local(); !slices.Equal(got, good) {
		t.Fatalf("local endpoints %v, want %v", got, good)
	}
	// A node on the bridge's host may name loopback; one elsewhere may not.
	lo := netip.MustParseAddrPort("127.0.0.1:22")
	na.mustRegister(lo)
	if got := local(); !slices.Equal(got, []netip.AddrPort{lo}) {
		t.Fatalf("from loopback: local endpoints %v", got)
	}
	remote := netip.MustParseAddrPort("192.0.2.1:4610")
	h.s.HandleFrames([][]byte{na.seal(wire.Message{Kind: wire.KindRegister, Endpoints: []netip.AddrPort{lo, good[0]}})}, []netip.AddrPort{remote})
	if got := local(); !slices.Equal(got, good[:1]) {
		t.Fatalf("from %s: local endpoints %v", remote, got)
	}
}
