package policy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/packet"
)

// The filter runs once per flow per batch on the packet path (tunwrap's
// sameFlow), so these measure what a new batch of an existing flow costs:
// one matcher lookup and at most one conntrack lock, no allocation.

func udpPkt(src, dst netip.Addr, sport, dport uint16) *packet.Parsed {
	return &packet.Parsed{Version: 6, HasPorts: true,
		Flow: packet.Flow{Proto: packet.ProtoUDP, Src: src, Dst: dst, SrcPort: sport, DstPort: dport}}
}

func benchFilter(b *testing.B, rules ...Rule) (f *Filter, me, bob netip.Addr, now int64) {
	k, p := mustKey(b), mustKey(b)
	f = NewFilter(Local{Addr: k.Address(), Site: k.SitePrefix()}, Compile(rules), NewConntrack(0), nil)
	return f, k.Address(), p.Address(), time.Now().UnixNano()
}

func benchVerdict(b *testing.B, judge func() Verdict) {
	b.ReportAllocs()
	for b.Loop() {
		if v := judge(); v != Accept {
			b.Fatal(v)
		}
	}
}

// A segment of a TCP connection this node opened.
func BenchmarkFilterOutboundTCP(b *testing.B) {
	f, me, bob, now := benchFilter(b)
	f.Outbound(tcpPkt(me, bob, 40000, 80, packet.TCPSyn), now)
	p := tcpPkt(me, bob, 40000, 80, packet.TCPAck)
	benchVerdict(b, func() Verdict { return f.Outbound(p, now) })
}

// A datagram of a UDP flow this node opened.
func BenchmarkFilterOutboundUDP(b *testing.B) {
	f, me, bob, now := benchFilter(b)
	p := udpPkt(me, bob, 40000, 53)
	f.Outbound(p, now)
	benchVerdict(b, func() Verdict { return f.Outbound(p, now) })
}

// This node's answer on a UDP flow a peer opened (a rule admitted it).
func BenchmarkFilterOutboundUDPAnswer(b *testing.B) {
	f, me, bob, now := benchFilter(b, Rule{From: Identity{Any: true}, Proto: ProtoUDP})
	f.Inbound(udpPkt(bob, me, 40000, 53), now)
	p := udpPkt(me, bob, 53, 40000)
	benchVerdict(b, func() Verdict { return f.Outbound(p, now) })
}

// A reply to a TCP connection this node opened; no rule admits it.
func BenchmarkFilterInboundReply(b *testing.B) {
	f, me, bob, now := benchFilter(b)
	f.Outbound(tcpPkt(me, bob, 40000, 80, packet.TCPSyn), now)
	p := tcpPkt(bob, me, 80, 40000, packet.TCPAck)
	benchVerdict(b, func() Verdict { return f.Inbound(p, now) })
}

// A reply to a UDP flow this node opened; no rule admits it.
func BenchmarkFilterInboundUDPReply(b *testing.B) {
	f, me, bob, now := benchFilter(b)
	f.Outbound(udpPkt(me, bob, 40000, 53), now)
	p := udpPkt(bob, me, 53, 40000)
	benchVerdict(b, func() Verdict { return f.Inbound(p, now) })
}

// A datagram of a UDP flow a peer opened, admitted by a rule.
func BenchmarkFilterInboundUDPAllowed(b *testing.B) {
	f, me, bob, now := benchFilter(b, Rule{From: Identity{Any: true}, Proto: ProtoUDP})
	p := udpPkt(bob, me, 40000, 53)
	f.Inbound(p, now)
	f.Outbound(udpPkt(me, bob, 53, 40000), now)
	benchVerdict(b, func() Verdict { return f.Inbound(p, now) })
}

// A segment of a TCP connection a peer opened, admitted by a rule.
func BenchmarkFilterInboundTCPAllowed(b *testing.B) {
	f, me, bob, now := benchFilter(b, Rule{From: Identity{Any: true}, Proto: ProtoTCP})
	p := tcpPkt(bob, me, 40000, 22, packet.TCPAck)
	benchVerdict(b, func() Verdict { return f.Inbound(p, now) })
}

// A datagram of a new UDP flow from a peer past its quota (a flood):
// refused and counted.
func BenchmarkFilterInboundUDPOverQuota(b *testing.B) {
	f, me, bob, now := benchFilter(b, Rule{From: Identity{Any: true}, Proto: ProtoUDP})
	_, _, perOwner := f.Conntrack().Limits()
	for port := range uint16(perOwner) {
		f.Inbound(udpPkt(bob, me, port+1, 53), now)
	}
	p := udpPkt(bob, me, 60000, 53)
	b.ReportAllocs()
	for b.Loop() {
		if v := f.Inbound(p, now); v != DropFlowQuota {
			b.Fatal(v)
		}
	}
}
