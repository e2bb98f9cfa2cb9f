package tunwrap

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/packet"
)

// REVIEW (adversarial): what the home's own stack sends to a hosted
// device leaves for the device whatever its source: a LAN neighbour of a
// gateway home (kernel forwarding on, the firewall's forward chain lets
// LAN -> tomoe0 through, its anti-spoof rules look only at overlay
// sources) reaches the device's every port with no rule naming it, and a
// local user (IPV6_FREEBIND) sends as the device to the overlay.
func TestReviewStackReachesHostedDeviceUnfiltered(t *testing.T) {
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
}
