package policy

import (
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/packet"
)

// TestFilterL2: proto l2 admits a member's tunnel packets (UDP to L2Port)
// and nothing else; with its rule gone, the member's packets are refused
// even though this node sent it tunnel packets too (no reply path).
func TestFilterL2(t *testing.T) {
	me, bob, eve := mustKey(t), mustKey(t), mustKey(t)
	A, B, E := me.Address(), bob.Address(), eve.Address()
	l2 := Rule{From: Identity{Kind: KindNode, Addr: B}, Proto: ProtoL2, To: Dest{Kind: DestSelf}}
	s, _, err := OpenStore("", nil)
	if err != nil {
		t.Fatal(err)
	}
	s.SetL2Rules([]Rule{l2})
	f := NewFilter(Local{Addr: A, Site: me.SitePrefix()}, s.Matcher(), NewConntrack(0), nil)
	now := time.Now().UnixNano()
	for _, c := range []struct {
		name string
		p    *packet.Parsed
		want Verdict
	}{
		{"member's tunnel packet", udpPkt(B, A, L2Port, L2Port), Accept},
		{"member to another UDP port", udpPkt(B, A, L2Port, 53), DropDenied},
		{"member's TCP", tcpPkt(B, A, 5000, L2Port, packet.TCPSyn), DropDenied},
		{"stranger's tunnel packet", udpPkt(E, A, L2Port, L2Port), DropDenied},
	} {
		if v := f.Inbound(c.p, now); v != c.want {
			t.Errorf("%s: %v, want %v", c.name, v, c.want)
		}
	}
	if got := s.Rules(); len(got) != 1 || got[0].Source != SourceL2 || got[0].Proto.String() != "l2" {
		t.Errorf("rules: %+v", got)
	}
	// This node sends bob tunnel packets; then bob is removed.
	f.Outbound(udpPkt(A, B, L2Port, L2Port), now)
	s.SetL2Rules(nil)
	f.SetMatcher(s.Matcher())
	if v := f.Inbound(udpPkt(B, A, L2Port, L2Port), now); v != DropDenied {
		t.Errorf("removed member's tunnel packet: %v, want denied", v)
	}
	// proto = "l2" parses, prints, and refuses ports.
	r, err := ParseRule(B.String(), "l2", "")
	if err != nil || r.Proto != ProtoL2 || r.String() == "" {
		t.Fatalf("parse l2 rule: %v %v", r, err)
	}
	if _, err := ParseRule(B.String(), "l2", "22"); err == nil {
		t.Error("proto l2 with ports accepted")
	}
}
