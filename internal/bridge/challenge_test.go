package bridge

import (
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/bridgetest"
	"github.com/tomoe-net/tomoe/internal/bridge/client"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// nodeAt reports whether key is registered at ep with relay id id.
func nodeAt(s *Server, key identity.PublicKey, ep netip.AddrPort, id uint32) bool {
	return slices.ContainsFunc(s.Nodes(), func(n NodeInfo) bool { return n.PublicKey == key && n.Endpoint == ep && n.RelayID == id })
}

// The review of issue 9 (finding 7): a member who can spoof its source
// sent its own fresh Register from a victim's address; the bridge dropped
// the victim's registration and gave the attacker the address, so the
// victim was unregistered until its next keepalive (lookups and relays
// failed), and its relay frames went on with the attacker's relay id,
// which its peers then took for the victim's. Now the address stays the
// victim's: the attacker's key is challenged to prove it receives there,
// and the challenge goes to the victim, who cannot read it.
func TestSpoofedRegisterCannotTakeAnAddress(t *testing.T) {
	v, a, b := testKey(t), testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{v.Public(), a.Public(), b.Public()}})
	nv, na, nb := h.udpNode(v), h.udpNode(a), h.udpNode(b)
	idV, idA, idB := nv.mustRegister(), na.mustRegister(), nb.mustRegister()

	// a's fresh Registers, from v's address (spoofed): plain, and with a
	// guessed answer to a challenge.
	h.s.HandleFrames([][]byte{na.seal(wire.Message{Kind: wire.KindRegister}), na.seal(wire.Message{Kind: wire.KindRegister, Seq: 12345})},
		[]netip.AddrPort{nv.addr(), nv.addr()})
	if !nodeAt(h.s, v.Public(), nv.addr(), idV) || !nodeAt(h.s, a.Public(), na.addr(), idA) {
		t.Fatalf("a spoofed Register moved registrations: %+v", h.s.Nodes())
	}
	// What went to v's address: challenges sealed to a, which v cannot open.
	for range 2 {
		f := nv.recv()
		if _, err := wire.Open(f, &nv.shared); err == nil {
			t.Fatal("v got a frame it can open")
		}
		if m, err := wire.Open(f, &na.shared); err != nil || m.Kind != wire.KindChallenge || m.Seq == 0 {
			t.Fatalf("v's address got %+v (%v), want a challenge to a", m, err)
		}
	}
	// v's relay frames carry v's id; a lookup finds v where it is.
	nv.sendRaw(relayFrame(idB, "from v"))
	if id, msg := nb.expectRelay(); id != idV || msg != "from v" {
		t.Fatalf("v's relay frame reached b as %d %q, want id %d", id, msg, idV)
	}
	nb.send(wire.Message{Kind: wire.KindLookup, Seq: 1, Address: v.Public().Address()})
	if m := nb.expect(wire.KindLookupReply); !m.Found || m.ID != idV || len(m.Endpoints) == 0 || m.Endpoints[0] != nv.addr() {
		t.Fatalf("lookup of v: %+v", m)
	}
	if m := nv.expect(wire.KindIntroduce); m.Key != b.Public() {
		t.Fatalf("v was introduced to %s, want b", m.Key.ShortString())
	}
	nv.send(wire.Message{Kind: wire.KindLookup, Seq: 2, Address: b.Public().Address()})
	if m := nv.expect(wire.KindLookupReply); !m.Found {
		t.Fatalf("v's own lookup: %+v", m)
	}
	if st := h.s.Stats(); st.Challenges != 2 || st.Registrations != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// The legitimate moves still work. Two nodes behind one NAT that gives w
// the address (and port) v had: w proves it receives there by answering
// the challenge, once, and takes the address; the answer proves nothing
// for another key or address. A node whose NAT rebinds it to a free
// address needs no challenge.
func TestRegisterTakesAnAddressWithProof(t *testing.T) {
	v, w, x := testKey(t), testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{v.Public(), w.Public(), x.Public()}})
	nv := h.udpNode(v)
	idV := nv.mustRegister()
	nw := h.udpNode(w)
	nw.pc = nv.pc // the NAT maps w to v's old address
	nw.send(wire.Message{Kind: wire.KindRegister})
	ch := nw.expect(wire.KindChallenge)
	if ch.Echo != uint64(nw.last) || ch.Seq == 0 {
		t.Fatalf("challenge %+v does not answer the Register stamped %d", ch, nw.last)
	}
	// The answer, replayed by x for itself, or from elsewhere, proves nothing.
	nx := h.udpNode(x)
	nx.pc = nv.pc
	nx.send(wire.Message{Kind: wire.KindRegister, Seq: ch.Seq})
	nx.expect(wire.KindChallenge)
	h.s.HandleFrames([][]byte{nw.seal(wire.Message{Kind: wire.KindRegister, Seq: ch.Seq})}, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.7:4610")})
	waitCond(t, "w registered elsewhere", func() bool { return len(h.s.Nodes()) == 2 })
	if !nodeAt(h.s, v.Public(), nv.addr(), idV) {
		t.Fatalf("an answer for another key or address moved v: %+v", h.s.Nodes())
	}
	nw.send(wire.Message{Kind: wire.KindRegister, Seq: ch.Seq})
	if m := nw.expect(wire.KindRegistered); m.Echo != uint64(nw.last) || m.Endpoints[0] != nv.addr() {
		t.Fatalf("registered %+v", m)
	}
	if nodes := h.s.Nodes(); len(nodes) != 1 || nodes[0].PublicKey != w.Public() || nodes[0].Endpoint != nv.addr() {
		t.Fatalf("after w's proof: %+v, want w alone at %s", nodes, nv.addr())
	}

	// v's NAT rebinds it to a new, free address: registered at once, same id.
	nv2 := h.udpNode(v)
	if id := nv2.mustRegister(); id != idV {
		t.Fatalf("v's relay id changed: %d -> %d", idV, id)
	}
	if st := h.s.Stats(); st.Challenges != 2 {
		t.Fatalf("%d challenges, want 2", st.Challenges)
	}
}

// A node answers the bridge's challenge by itself, once per Register:
// given an address another node's registration still holds (its NAT
// reused a port), it registers within a round trip.
func TestClientAnswersChallenge(t *testing.T) {
	old, k := testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{old.Public(), k.Public()}})
	h.clk.AdvanceTo(time.Now()) // the client stamps with the real clock
	bind, port := bridgetest.OpenBind(t)
	bind.SetPrivateKey(k)
	at := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)
	registerDirect(t, h.s, h.key.Public(), old, at) // the port's previous owner
	// The Register the bridge challenges, as the challenge echoes it.
	var challenged atomic.Int64
	shared := wire.Precompute(k, h.key.Public())
	h.udp.tap.Store(ptr(func(f []byte) {
		if m, err := wire.Open(f, &shared); err == nil && m.Kind == wire.KindChallenge {
			challenged.Store(int64(m.Echo))
		}
	}))
	c := client.New(client.Config{Key: k, Bind: bind, Bridges: []client.BridgeConfig{{Endpoint: h.addr().String(), Key: h.key.Public()}}})
	bind.SetFrameHandler(c)
	c.Start()
	t.Cleanup(c.Close)
	waitCond(t, "registered", func() bool { return c.Status()[0].State == "registered" })
	if nodes := h.s.Nodes(); len(nodes) != 1 || nodes[0].PublicKey != k.Public() || nodes[0].Endpoint != at {
		t.Fatalf("nodes %+v, want the client alone at %s", nodes, at)
	}
	if st := h.s.Stats(); st.Challenges != 1 {
		t.Fatalf("%d challenges, want 1", st.Challenges)
	}

	// A replayed challenge draws no Register: the registrations counted
	// stay as they are (a lookup answered after it shows it was handled).
	echo := challenged.Load()
	regs := h.s.Stats().Registrations
	frame, err := h.s.keys.Seal(k.Public(), nil, wire.Message{Kind: wire.KindChallenge, Time: h.clk.Now().UnixNano(), Echo: uint64(echo), Seq: 99})
	if err != nil {
		t.Fatal(err)
	}
	c.HandleFrames([][]byte{frame}, []netip.AddrPort{h.addr()})
	c.Lookup(t.Context(), k.Public().Address())
	if got := h.s.Stats().Registrations; got != regs {
		t.Fatalf("a replayed challenge drew %d Registers", got-regs)
	}
}
