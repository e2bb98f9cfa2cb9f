package policy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/packet"
)

// otherPkt is a packet of a protocol without ports (GRE).
func otherPkt(src, dst netip.Addr) *packet.Parsed {
	return &packet.Parsed{Version: 6, Flow: packet.Flow{Proto: 47, Src: src, Dst: dst}}
}

// This node's answers on a connectionless flow a peer opened never turn
// that flow into one this node opened: once no rule admits the peer's
// packets, they are dropped, however long this node keeps answering.
func TestFilterAnswersOpenNothing(t *testing.T) {
	me, bob := mustKey(t), mustKey(t)
	A, B := me.Address(), bob.Address()
	tests := []struct {
		name    string
		rule    Rule
		in, out *packet.Parsed // bob's packet, this node's answer
	}{
		{"udp", mustRule(t, bob.String(), "udp", "53"), udpPkt(B, A, 40000, 53), udpPkt(A, B, 53, 40000)},
		{"other protocol", mustRule(t, bob.String(), "any", ""), otherPkt(B, A), otherPkt(A, B)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			remaining := Compile([]Rule{mustRule(t, "*", "tcp", "443")})
			f := NewFilter(Local{Addr: A, Site: me.SitePrefix()}, Compile([]Rule{tt.rule, mustRule(t, "*", "tcp", "443")}), NewConntrack(0), nil)
			now := time.Now().UnixNano()
			if v := f.Inbound(tt.in, now); v != Accept {
				t.Fatalf("bob's packet under his rule: %v", v)
			}
			if v := f.Outbound(tt.out, now); v != Accept {
				t.Fatalf("the answer: %v", v)
			}
			// bob's rule is revoked; a "*" rule for something else remains.
			f.SetMatcher(remaining)
			for i := range 3 {
				now += int64(time.Second)
				if v := f.Outbound(tt.out, now); v != Accept {
					t.Fatalf("answer %d after the revoke: %v", i, v)
				}
				if v := f.Inbound(tt.in, now); v != DropDenied {
					t.Fatalf("bob's packet %d after the revoke: %v, want denied", i, v)
				}
			}
			// Forgetting bob's flows (what revoke does) changes nothing:
			// this node answering again still opens nothing for bob.
			f.Conntrack().Flush(func(a netip.Addr) bool { return a == B })
			f.Outbound(tt.out, now)
			if v := f.Inbound(tt.in, now); v != DropDenied {
				t.Fatalf("bob's packet after a flush and another answer: %v, want denied", v)
			}
		})
	}
}

// Flows this node opens are answered without a rule, for every protocol.
func TestFilterRepliesToOwnFlows(t *testing.T) {
	me, bob := mustKey(t), mustKey(t)
	A, B := me.Address(), bob.Address()
	tests := []struct {
		name     string
		out, in  *packet.Parsed // this node's packet, bob's reply
		stranger *packet.Parsed // a packet of another flow from bob
	}{
		{"tcp", tcpPkt(A, B, 40000, 80, packet.TCPSyn), tcpPkt(B, A, 80, 40000, packet.TCPSyn|packet.TCPAck), tcpPkt(B, A, 80, 40001, packet.TCPSyn)},
		{"udp", udpPkt(A, B, 40000, 53), udpPkt(B, A, 53, 40000), udpPkt(B, A, 53, 40001)},
		{"other protocol", otherPkt(A, B), otherPkt(B, A), &packet.Parsed{Version: 6, Flow: packet.Flow{Proto: 50, Src: B, Dst: A}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFilter(Local{Addr: A, Site: me.SitePrefix()}, Compile(nil), NewConntrack(0), nil)
			now := time.Now().UnixNano()
			if v := f.Outbound(tt.out, now); v != Accept {
				t.Fatalf("our packet: %v", v)
			}
			if v := f.Inbound(tt.in, now); v != Accept {
				t.Fatalf("the reply: %v", v)
			}
			if v := f.Inbound(tt.stranger, now); v != DropDenied {
				t.Fatalf("another flow: %v, want denied", v)
			}
		})
	}
}

// One remote opening (and this node answering) far more connectionless
// flows than the table holds cannot stop this node from opening its own:
// past its quota, a remote's new flows are refused (flow_quota) and
// counted against it, and devices behind a gateway share its quota.
func TestFilterRemoteCannotFillTable(t *testing.T) {
	me, bob, carol := mustKey(t), mustKey(t), mustKey(t)
	A, B := me.Address(), bob.Address()
	const size = 64
	ct := NewConntrack(size)
	_, _, perOwner := ct.Limits()
	f := NewFilter(Local{Addr: A, Site: me.SitePrefix()}, Compile([]Rule{mustRule(t, "*", "udp", "53")}), ct, nil)
	lan := netip.MustParsePrefix("192.168.10.0/24")
	f.SetRouted([]RouteOwner{{Prefix: lan, Owner: B}})
	now := time.Now().UnixNano()
	accepted, refused := 0, 0
	for port := uint16(1000); port < 1000+4*size; port++ {
		switch v := f.Inbound(udpPkt(B, A, port, 53), now); v {
		case Accept:
			accepted++
			f.Outbound(udpPkt(A, B, 53, port), now)
		case DropFlowQuota:
			refused++
		default:
			t.Fatalf("bob's flow %d: %v", port-1000, v)
		}
	}
	if accepted != perOwner || refused != 4*size-perOwner || f.Denied(B) != uint64(refused) {
		t.Fatalf("bob: %d flows accepted, %d refused, %d counted; want %d, %d", accepted, refused, f.Denied(B), perOwner, 4*size-perOwner)
	}
	// A device behind bob's accepted route is charged to bob.
	behind := netip.MustParseAddr("192.168.10.7")
	if v := f.Inbound(udpPkt(behind, A, 1, 53), now); v != DropFlowQuota {
		t.Fatalf("a device behind bob: %v, want flow_quota", v)
	}
	// Flows of bob's already tracked still pass.
	if v := f.Inbound(udpPkt(B, A, 1000, 53), now); v != Accept {
		t.Fatalf("bob's first flow: %v", v)
	}
	for port := uint16(2000); port < 2000+size/2; port++ {
		if v := f.Outbound(udpPkt(A, carol.Address(), port, 53), now); v != Accept {
			t.Fatalf("this node's own flow %d: %v", port-2000, v)
		}
	}
}

func TestConntrackQuotas(t *testing.T) {
	me := mustKey(t).Address()
	owners := make([]netip.Addr, 10)
	for i := range owners {
		owners[i] = mustKey(t).Address()
	}
	const size = 64
	ct := NewConntrack(size)
	all, remoteMax, perOwner := ct.Limits()
	if all != size || remoteMax != size/2 || perOwner != size/16 {
		t.Fatalf("limits %d %d %d", all, remoteMax, perOwner)
	}
	now := time.Now().UnixNano()
	open := func(owner netip.Addr, port uint16, at int64) Verdict {
		return ct.Admitted(udpPkt(owner, me, port, 53), owner, at)
	}
	// Owners fill the remotes' share, each up to its quota.
	for i := 0; i < remoteMax/perOwner; i++ {
		for port := range uint16(perOwner) {
			if v := open(owners[i], port+1, now); v != Accept {
				t.Fatalf("owner %d flow %d: %v", i, port, v)
			}
		}
		if v := open(owners[i], 100, now); v != DropFlowQuota {
			t.Fatalf("owner %d over its quota: %v", i, v)
		}
	}
	next := owners[remoteMax/perOwner]
	if v := open(next, 1, now); v != DropFlowQuota {
		t.Fatalf("an owner past the remotes' share: %v", v)
	}
	// This node still has the other half.
	for port := range uint16(size - remoteMax) {
		if !ct.Outbound(udpPkt(me, owners[0], 5000+port, 53), now) {
			t.Fatalf("own flow %d refused", port)
		}
	}
	if ct.Outbound(udpPkt(me, owners[0], 9999, 53), now) {
		t.Fatal("table grew past its size")
	}
	if local, remote := ct.Counts(); local != size-remoteMax || remote != remoteMax || ct.OpenedBy(owners[0]) != perOwner {
		t.Fatalf("counts %d local, %d remote, %d by owner 0", local, remote, ct.OpenedBy(owners[0]))
	}
	// Idle remote flows expire and free their quota; the table being full
	// of this node's flows then refuses the remote's new flow as table_full.
	later := now + int64(remoteTimeout) + int64(time.Second)
	ct.Outbound(udpPkt(me, owners[0], 5000, 53), now+int64(remoteTimeout)) // keep one own flow
	if v := open(owners[0], 200, later); v != Accept {
		t.Fatalf("after expiry: %v", v)
	}
	if _, remote := ct.Counts(); remote != 1 {
		t.Fatalf("%d remote flows after expiry, want 1", remote)
	}
	small := NewConntrack(4) // remotes may have 2, one owner 1
	for port := range uint16(4) {
		small.Outbound(udpPkt(me, owners[0], port+1, 53), now)
	}
	if v := small.Admitted(udpPkt(owners[1], me, 1, 53), owners[1], now); v != DropTableFull {
		t.Fatalf("remote flow in a table full of ours: %v", v)
	}
}

// What each kind of entry does, step by step.
func TestConntrackOrigins(t *testing.T) {
	me, bob := mustKey(t), mustKey(t)
	A, B := me.Address(), bob.Address()
	now := time.Now().UnixNano()
	type step struct {
		op   string // out, admitted, reply, related, flush, hasRemote
		p    *packet.Parsed
		at   time.Duration // after now
		want bool          // out: not refused; admitted: Accept; reply, related, hasRemote: true
	}
	tests := []struct {
		name         string
		steps        []step
		local, remot int
	}{
		{"an answer opens nothing", []step{
			{"admitted", udpPkt(B, A, 40000, 53), 0, true},
			{"out", udpPkt(A, B, 53, 40000), time.Second, true},
			{"reply", udpPkt(B, A, 40000, 53), time.Second, false},
			{"related", udpPkt(A, B, 53, 40000), time.Second, false},
			{"hasRemote", udpPkt(A, B, 0, 0), time.Second, false},
		}, 0, 1},
		{"our flow stays ours when a rule admits its reply", []step{
			{"out", udpPkt(A, B, 40000, 53), 0, true},
			{"admitted", udpPkt(B, A, 53, 40000), 0, true},
			{"reply", udpPkt(B, A, 53, 40000), udpRepliedTimeout - time.Second, true},
			{"related", udpPkt(A, B, 40000, 53), 0, true},
			{"hasRemote", udpPkt(A, B, 0, 0), 0, true},
		}, 1, 0},
		{"answers keep a remote flow alive", []step{
			{"admitted", udpPkt(B, A, 40000, 53), 0, true},
			{"out", udpPkt(A, B, 53, 40000), remoteTimeout - time.Second, true},
			{"out", udpPkt(A, B, 53, 40000), 2*remoteTimeout - 2*time.Second, true},
			{"reply", udpPkt(B, A, 40000, 53), 2*remoteTimeout - 2*time.Second, false},
		}, 0, 1},
		{"after a minute of silence both ways, what this node sends is its own flow", []step{
			{"admitted", udpPkt(B, A, 40000, 53), 0, true},
			{"out", udpPkt(A, B, 53, 40000), remoteTimeout + time.Second, true},
			{"reply", udpPkt(B, A, 40000, 53), remoteTimeout + time.Second, true},
		}, 1, 0},
		{"flush forgets our flows and keeps the remote's", []step{
			{"out", udpPkt(A, B, 40001, 53), 0, true},
			{"admitted", udpPkt(B, A, 40000, 53), 0, true},
			{"flush", nil, 0, true},
			{"reply", udpPkt(B, A, 53, 40001), 0, false},
			{"out", udpPkt(A, B, 53, 40000), 0, true},
			{"reply", udpPkt(B, A, 40000, 53), 0, false},
		}, 0, 1},
		{"tcp and icmp are never the remote's", []step{
			{"admitted", tcpPkt(B, A, 40000, 22, packet.TCPSyn), 0, true},
			{"out", tcpPkt(A, B, 22, 40000, packet.TCPSyn|packet.TCPAck), 0, true},
			{"reply", tcpPkt(B, A, 40000, 22, packet.TCPAck), 0, false},
		}, 0, 0},
		{"an expired flow of ours answers nothing, even before collection", []step{
			{"out", tcpPkt(A, B, 40000, 22, packet.TCPSyn), 0, true},
			{"out", tcpPkt(A, B, 40000, 22, packet.TCPAck), tcpNewTimeout + time.Second, true},
			{"reply", tcpPkt(B, A, 22, 40000, packet.TCPAck), tcpNewTimeout + time.Second, false},
		}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct := NewConntrack(0)
			for i, s := range tt.steps {
				at := now + int64(s.at)
				var got bool
				switch s.op {
				case "out":
					got = ct.Outbound(s.p, at)
				case "admitted":
					got = ct.Admitted(s.p, B, at) == Accept
				case "reply":
					got = ct.Reply(s.p, at)
				case "related":
					got = ct.Related(s.p.Flow, at)
				case "hasRemote":
					got = ct.HasRemote(s.p.Dst)
				case "flush":
					ct.Flush(func(a netip.Addr) bool { return a == B })
					got = true
				}
				if got != s.want {
					t.Fatalf("step %d (%s): %v, want %v", i, s.op, got, s.want)
				}
			}
			if local, remote := ct.Counts(); local != tt.local || remote != tt.remot {
				t.Fatalf("%d local, %d remote flows; want %d, %d", local, remote, tt.local, tt.remot)
			}
		})
	}
}
