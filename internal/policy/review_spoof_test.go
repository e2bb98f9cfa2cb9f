package policy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/packet"
)

// REVIEW (adversarial): Outbound judges what the home's own stack sends
// (local programs, and in kernel mode whatever the kernel forwards into
// the TUN). Its anti-spoofing test lets through any packet whose source OR
// destination is a hosted device's address. Hairpinned packets never come
// this way except when a held one is released; so a local user on the
// home (IPV6_FREEBIND needs no privilege) can send packets from a device's
// address to any peer (which accepts them as the device's: peers[].devices),
// or from any overlay address (another node's) to the device.
func TestReviewOutboundSpoofViaHostedAddress(t *testing.T) {
	me, dev, bob, carol := mustKey(t), mustKey(t), mustKey(t), mustKey(t)
	A, D, B, C := me.Address(), dev.Address(), bob.Address(), carol.Address()
	_ = A
	f := NewFilter(Local{Addr: A, Site: me.SitePrefix()}, Compile(nil), NewConntrack(1024), nil)
	f.SetHosted([]netip.Addr{D})
	now := time.Now().UnixNano()
	if v := f.Outbound(udpPkt(D, B, 5353, 53), now); v != DropSpoofed {
		t.Errorf("a local packet from the device's address to bob: %v, want %v (the home's stack speaks as the device)", v, DropSpoofed)
	}
	if v := f.Outbound(udpPkt(C, D, 5353, 53), now); v != DropSpoofed {
		t.Errorf("a local packet from carol's address to the device: %v, want %v (the home's stack speaks as carol)", v, DropSpoofed)
	}
	if v := f.Outbound(tcpPkt(C, D, 40000, 22, packet.TCPSyn), now); v != DropSpoofed {
		t.Errorf("a local TCP SYN from carol's address to the device: %v, want %v", v, DropSpoofed)
	}
}
