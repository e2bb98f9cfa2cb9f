package bridge

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
)

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
