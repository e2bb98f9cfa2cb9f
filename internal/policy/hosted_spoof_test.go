package policy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/packet"
)

// TestOutboundHostedDeviceAddresses: Outbound judges what the home's own
// stack sends (local programs, and in kernel mode whatever the kernel
// forwards into the TUN). A hosted device's address is not the home's: a
// local user binding it (IPV6_FREEBIND needs no privilege) must not send
// as the device, nor as another node to it. The home's own programs reach
// the device from its node address; what the home forwards (its LAN, an
// offered route) only answers flows the device opened there.
func TestOutboundHostedDeviceAddresses(t *testing.T) {
	me, dev, bob, carol := mustKey(t), mustKey(t), mustKey(t), mustKey(t)
	A, D, B, C := me.Address(), dev.Address(), bob.Address(), carol.Address()
	lanNet := netip.MustParsePrefix("2001:db8:1::/64")
	lan := netip.MustParseAddr("2001:db8:1::5")
	toLAN, err := ParseRuleSpec(RuleSpec{From: dev.String(), To: lanNet.String()})
	if err != nil {
		t.Fatal(err)
	}
	local := Local{Addr: A, Site: me.SitePrefix(), Offered: []netip.Prefix{lanNet}}
	f := NewFilter(local, CompileAt([]Entry{{Rule: toLAN}}, nil, Self{Addr: A, Hosted: []netip.Addr{D}}, time.Now()), NewConntrack(1024), nil)
	f.SetHosted([]netip.Addr{D})
	now := time.Now().UnixNano()
	siteHost := me.SitePrefix().Addr().Next()
	for _, c := range []struct {
		name string
		p    *packet.Parsed
		want Verdict
	}{
		{"from the device's address to bob", udpPkt(D, B, 5353, 53), DropSpoofed},
		{"from carol's address to the device", udpPkt(C, D, 5353, 53), DropSpoofed},
		{"a TCP SYN from carol's address to the device", tcpPkt(C, D, 40000, 22, packet.TCPSyn), DropSpoofed},
		{"the home's own SYN to the device", tcpPkt(A, D, 40000, 22, packet.TCPSyn), Accept},
		{"the home's own datagram to the device", udpPkt(A, D, 40000, 53), Accept},
		{"a SYN from the home's LAN (an offered route) to the device", tcpPkt(lan, D, 40000, 22, packet.TCPSyn), DropDenied},
		{"a datagram from the home's LAN to the device", udpPkt(lan, D, 40000, 53), DropDenied},
		{"a SYN from a host in the home's site prefix to the device", tcpPkt(siteHost, D, 40000, 22, packet.TCPSyn), DropDenied},
		{"the home's LAN to bob (forwarding as before)", tcpPkt(lan, B, 40000, 22, packet.TCPSyn), Accept},
	} {
		if v := f.Outbound(c.p, now); v != c.want {
			t.Errorf("%s: %v, want %v", c.name, v, c.want)
		}
	}

	// The device opens flows to the home's LAN (Inbound judges them with
	// the device as the source): the LAN's answers reach it.
	if v := f.Inbound(tcpPkt(D, lan, 40001, 80, packet.TCPSyn), now); v != Accept {
		t.Fatalf("the device's SYN to the home's LAN: %v", v)
	}
	if v := f.Outbound(tcpPkt(lan, D, 80, 40001, packet.TCPSyn|packet.TCPAck), now); v != Accept {
		t.Errorf("the LAN's SYN-ACK to the device: %v, want accept", v)
	}
	if v := f.Inbound(udpPkt(D, lan, 40002, 53), now); v != Accept {
		t.Fatalf("the device's datagram to the home's LAN: %v", v)
	}
	if v := f.Outbound(udpPkt(lan, D, 53, 40002), now); v != Accept {
		t.Errorf("the LAN's answer datagram to the device: %v, want accept", v)
	}
	if v := f.Outbound(udpPkt(lan, D, 53, 40003), now); v != DropDenied {
		t.Errorf("a LAN datagram on no flow of the device's: %v, want %v", v, DropDenied)
	}
}
