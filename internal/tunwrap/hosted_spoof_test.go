package tunwrap

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/packet"
)

// TestStackToHostedDeviceFiltered: what the home's own stack sends to a
// hosted device must come from the home itself: a LAN neighbour of a
// gateway home (kernel forwarding on) does not reach the device's ports
// with no rule naming it, and a local user (IPV6_FREEBIND) does not send
// as the device to the overlay. The home's own packets reach the device.
func TestStackToHostedDeviceFiltered(t *testing.T) {
	fx := newFixture(t, time.Second)
	D := key(t).Address()
	fx.filter.SetHosted([]netip.Addr{D})
	fx.w.SetPeer(D, true)
	lan := netip.MustParseAddr("2001:db8::5")
	fx.dev.fromStack <- tcp(lan, D, 40000, 22, packet.TCPSyn)
	if got := fx.read(t); len(got) != 0 {
		t.Errorf("a packet from %v (not this node's, not forwarded by it) to the hosted device left for it", lan)
	}
	fx.dev.fromStack <- tcp(D, fx.bob.Address(), 40000, 7, packet.TCPSyn)
	if got := fx.read(t); len(got) != 0 {
		t.Errorf("a local packet from the hosted device's address to bob left for bob")
	}
	fx.dev.fromStack <- tcp(fx.me.Address(), D, 40000, 22, packet.TCPSyn)
	if got := fx.read(t); len(got) != 1 {
		t.Errorf("the home's own SYN to its device: %d packets out, want 1", len(got))
	}
}
