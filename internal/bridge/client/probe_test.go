package client

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/bridgetest"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/nat"
)

// probeNode is a node's client, not started (no timers: the test drives
// it), on a real Bind, that wants to talk to the keys in wants.
func probeNode(t *testing.T, k identity.PrivateKey, wants ...identity.PublicKey) (*Client, uint16) {
	t.Helper()
	bind, port := bridgetest.OpenBind(t)
	bind.SetPrivateKey(k)
	c := New(Config{Key: k, Bind: bind, Wants: func(p identity.PublicKey) bool {
		for _, w := range wants {
			if w == p {
				return true
			}
		}
		return false
	}})
	bind.SetFrameHandler(c)
	t.Cleanup(c.Close)
	// The keys it wants are known in advance (static peers, keys its rules
	// name): their frames open at once, on the receive goroutine.
	c.SetKnownKeys(wants)
	waitCond(t, "the wanted keys' shared keys computed", func() bool {
		return !slices.ContainsFunc(wants, func(k identity.PublicKey) bool { return c.keys.Cached(k) == nil })
	})
	return c, port
}

// Two nodes prove a direct path both ways with one probe: the answer
// carries a challenge, whose answer proves the other way. Neither probes
// the other's source address by itself.
func TestProbeThreeWay(t *testing.T) {
	ka, kb := testKey(t), testKey(t)
	a, _ := probeNode(t, ka, kb.Public())
	b, portB := probeNode(t, kb, ka.Public())
	atB := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), portB)
	a.prober.AddCandidates(kb.Public(), []netip.AddrPort{atB}, true)
	a.prober.Round(time.Now(), false)
	waitCond(t, "both ways proven", func() bool { return a.Stats().ProbeAcks.Load() == 1 && b.Stats().ProbeAcks.Load() == 1 })
	if st := b.Stats(); st.ProbesAnswered.Load() != 1 || st.ProbesSent.Load() != 0 {
		t.Fatalf("b answered %d, probed %d", st.ProbesAnswered.Load(), st.ProbesSent.Load())
	}
	if n := len(b.prober.Candidates()); n != 0 {
		t.Fatalf("b has %d candidate sets from a probe's source", n)
	}
}

// A replayed introduction, or a stale one, does nothing: it would make
// the node probe the endpoints it carries again (and point the peer's
// relay path at the relay id it names).
func TestReplayedIntroductionIgnored(t *testing.T) {
	peer := testKey(t).Public()
	fb := newFakeBridge(t, func(m wire.Message) wire.Message {
		return wire.Message{Kind: wire.KindLookupReply, Seq: m.Seq, Address: m.Address}
	})
	c := startClientWants(t, func(k identity.PublicKey) bool { return k == peer }, fb.config())
	eps := []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:4610")}
	introduced := func() bool { return c.prober.Candidates()[peer] != nil }
	captured := fb.seal(t, wire.Message{Kind: wire.KindIntroduce, Key: peer, ID: 7, Endpoints: eps})
	fb.sendRaw(t, captured)
	waitCond(t, "the introduction", introduced)
	c.prober.Round(time.Now().Add(time.Hour), false) // probed, and expired

	dropped := c.Stats().Dropped.Load()
	fb.sendRaw(t, captured)
	fb.tell(t, wire.Message{Kind: wire.KindIntroduce, Time: time.Now().Add(-nat.ClockWindow - time.Second).UnixNano(), Key: peer, ID: 8, Endpoints: eps})
	waitCond(t, "the replay and the stale one dropped", func() bool { return c.Stats().Dropped.Load() == dropped+2 })
	if introduced() {
		t.Fatal("a replayed or stale introduction made the node probe again")
	}
	fb.tell(t, wire.Message{Kind: wire.KindIntroduce, Key: peer, ID: 7, Endpoints: eps}) // a new one works
	waitCond(t, "a new introduction", introduced)
}

// A bridge's introduction (or a lying bridge's) cannot aim this node's
// probes at multicast, broadcast (its own networks' too), link-local or
// overlay addresses, or nowhere.
func TestIntroducedEndpointsMustBePlausible(t *testing.T) {
	peer := testKey(t).Public()
	fb := newFakeBridge(t, func(m wire.Message) wire.Message {
		return wire.Message{Kind: wire.KindLookupReply, Seq: m.Seq, Address: m.Address}
	})
	c := startClientWants(t, func(k identity.PublicKey) bool { return k == peer }, fb.config())
	c.bcast.SetSource(func() ([]net.Addr, error) {
		return []net.Addr{&net.IPNet{IP: net.IPv4(192, 168, 77, 1), Mask: net.CIDRMask(24, 32)}}, nil
	})
	var eps []netip.AddrPort
	for _, s := range []string{"224.0.0.1:1", "255.255.255.255:2", "0.0.0.0:3", "169.254.169.254:80", "192.168.77.255:5", "[fe80::1]:6", "198.51.100.7:4610", "127.0.0.1:9"} {
		eps = append(eps, netip.MustParseAddrPort(s))
	}
	fb.tell(t, wire.Message{Kind: wire.KindIntroduce, Key: peer, ID: 7, Endpoints: eps})
	candidates := func() []netip.AddrPort { return c.prober.Candidates()[peer] }
	waitCond(t, "the introduction", func() bool { return candidates() != nil })
	// The fake bridge is on 127.0.0.1: its loopback endpoints are this host's.
	want := []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:4610"), netip.MustParseAddrPort("127.0.0.1:9")}
	if got := candidates(); !slices.Equal(got, want) {
		t.Fatalf("candidates %v, want %v", got, want)
	}
	if !c.bcast.Has(netip.MustParseAddr("192.168.77.255"), time.Now()) || c.bcast.Has(netip.MustParseAddr("192.168.77.1"), time.Now()) {
		t.Fatal("broadcast set wrong")
	}
}

// Config.InterfaceAddrs, not the host's interfaces, is where the prober
// learns which broadcast addresses it must never probe (a node on an
// in-memory network has networks the host has not).
func TestInterfaceAddrsHook(t *testing.T) {
	c := New(Config{Key: testKey(t), InterfaceAddrs: func() ([]net.Addr, error) {
		return []net.Addr{&net.IPNet{IP: net.IPv4(10, 77, 3, 9), Mask: net.CIDRMask(24, 32)}}, nil
	}})
	defer c.Close()
	if !c.bcast.Has(netip.MustParseAddr("10.77.3.255"), time.Now()) {
		t.Fatal("the injected network's broadcast address is not known")
	}
}
