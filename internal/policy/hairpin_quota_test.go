package policy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/packet"
)

// A hosted device is one key the home does not control (a phone may be
// lost or compromised): the flows it opens through its home are charged
// to it under a remote's quota, so that a flood of them cannot fill the
// home's table and stop the home from opening flows of its own.
func TestHostedDeviceFlowsAreBounded(t *testing.T) {
	me, dev, dev2, bob := mustKey(t), mustKey(t), mustKey(t), mustKey(t)
	A, D, D2, B := me.Address(), dev.Address(), dev2.Address(), bob.Address()
	ct := NewConntrack(64) // 32 for remotes together, 4 per owner
	f := NewFilter(Local{Addr: A, Site: me.SitePrefix()}, Compile(nil), ct, nil)
	f.SetHosted([]netip.Addr{D, D2})
	now := time.Now().UnixNano()
	_, _, perOwner := ct.Limits()

	forwarded := 0
	for port := uint16(1); port <= 1000; port++ {
		v, fwd := f.Hairpin(tcpPkt(D, B, 40000, port, packet.TCPSyn), now)
		if !fwd {
			t.Fatalf("the device's packet to bob was not for the hairpin")
		}
		if v == Accept {
			forwarded++
		} else if v != DropFlowQuota {
			t.Fatalf("flow %d: %v, want %v over the quota", port, v, DropFlowQuota)
		}
	}
	if forwarded != perOwner {
		t.Fatalf("the device opened %d flows, want its quota %d", forwarded, perOwner)
	}
	if got := ct.OpenedBy(D); got != perOwner {
		t.Fatalf("flows charged to the device: %d, want %d", got, perOwner)
	}
	// The home still opens its own flows, and another device its own.
	for port := uint16(1); port <= 20; port++ {
		if v := f.Outbound(tcpPkt(A, B, 50000, port, packet.TCPSyn), now); v != Accept {
			t.Fatalf("the home's own flow %d: %v", port, v)
		}
	}
	if v, _ := f.Hairpin(tcpPkt(D2, B, 40000, 1, packet.TCPSyn), now); v != Accept {
		t.Fatalf("another device's first flow: %v", v)
	}
	// Replies to the device's flows still pass, packets of them still flow.
	if v, _ := f.Hairpin(tcpPkt(B, D, 1, 40000, packet.TCPSyn|packet.TCPAck), now); v != Accept {
		t.Fatalf("bob's reply to the device: %v", v)
	}
	if v, _ := f.Hairpin(tcpPkt(D, B, 40000, 1, packet.TCPAck), now); v != Accept {
		t.Fatalf("the device's next packet: %v", v)
	}
	// Flushing bob's flows frees the device's quota.
	ct.Flush(func(a netip.Addr) bool { return a == B })
	if got := ct.OpenedBy(D); got != 0 {
		t.Fatalf("after flushing bob's flows the device is charged %d", got)
	}
	if v, _ := f.Hairpin(tcpPkt(D, B, 40001, 1, packet.TCPSyn), now); v != Accept {
		t.Fatalf("a new flow after the flush: %v", v)
	}
}
