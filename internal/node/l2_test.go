package node

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/l2"
	"github.com/tomoe-net/tomoe/internal/policy"
)

func mustIdentity(t *testing.T, s string) policy.Identity {
	t.Helper()
	id, err := policy.ParseIdentity(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestPlanL2CertMembers: certificate members resolve against the
// directory (this node skipped), admitted by a rule naming the identity;
// key members by their address; on a member of a hub segment only the
// hub counts.
func TestPlanL2CertMembers(t *testing.T) {
	self := netip.MustParseAddr("fc00::1")
	b, c, d := netip.MustParseAddr("fc00::2"), netip.MustParseAddr("fc00::3"), netip.MustParseAddr("fc00::4")
	key := netip.MustParseAddr("fc00::9")
	dir := policy.Directory{
		self: {{Org: "acme", Name: "self.acme", Groups: []string{"office"}}},
		b:    {{Org: "acme", Name: "b.acme", Groups: []string{"office"}}},
		c:    {{Org: "acme", Name: "c.acme", Groups: []string{"lab"}}},
		d:    {{Org: "globex", Name: "d.globex", Groups: []string{"office"}}},
	}
	segs := []config.L2Segment{{Name: "office", Members: []policy.Identity{mustIdentity(t, "group:acme/office"), mustIdentity(t, key.String()), mustIdentity(t, "name:c.*")}}}
	p := planL2(segs, 1400, self, dir, nil)
	if got, want := p.segs[0].Remotes, []netip.Addr{key, b, c}; !slices.Equal(got, want) {
		t.Fatalf("remotes %v, want %v", got, want)
	}
	if got := p.matched["office"][b]; !slices.Equal(got, []string{"group:acme/office"}) {
		t.Errorf("b matched by %v", got)
	}
	if got := p.certNames[c]; !slices.Equal(got, []string{"c.acme"}) {
		t.Errorf("c's names %v", got)
	}
	var froms []string
	for _, r := range p.rules {
		if r.Proto != policy.ProtoL2 {
			t.Errorf("rule %v is not proto l2", r)
		}
		froms = append(froms, r.From.String())
	}
	slices.Sort(froms)
	if want := []string{key.String(), "group:acme/office", "name:c.*"}; !slices.Equal(froms, want) {
		t.Errorf("rules from %v, want %v (certificate members by identity, key members by address)", froms, want)
	}
	if p.segs[0].MaxMACs != config.DefaultL2MACLimit || p.segs[0].BroadcastPPS != config.DefaultL2BroadcastLimit {
		t.Errorf("limits %d %d", p.segs[0].MaxMACs, p.segs[0].BroadcastPPS)
	}

	// b leaves the group (a new certificate without it): its tunnel and
	// nothing else goes.
	dir2 := policy.Directory{b: {{Org: "acme", Name: "b.acme", Groups: []string{"sales"}}}, c: dir[c]}
	if got := planL2(segs, 1400, self, dir2, p).segs[0].Remotes; !slices.Equal(got, []netip.Addr{key, c}) {
		t.Errorf("after b left the group: %v", got)
	}

	// A member of a hub segment: one tunnel, to the hub; no rule for the
	// group (its members' frames come through the hub).
	hub := mustIdentity(t, "fc00::77")
	hs := []config.L2Segment{{Name: "office", Hub: hub, Members: []policy.Identity{mustIdentity(t, "group:acme/office")}}}
	hp := planL2(hs, 1400, self, dir, nil)
	if got := hp.segs[0].Remotes; !slices.Equal(got, []netip.Addr{hub.Addr}) || len(hp.rules) != 1 || hp.rules[0].From.Addr != hub.Addr {
		t.Errorf("member of a hub segment: remotes %v, rules %v", got, hp.rules)
	}
	// On the hub: every matching member.
	hp = planL2(hs, 1400, hub.Addr, dir, nil)
	if got := hp.segs[0].Remotes; !slices.Equal(got, []netip.Addr{self, b}) || !hp.segs[0].Hub {
		t.Errorf("the hub's tunnels: %v", got)
	}
}

// TestPlanL2Bound: a group of 10,000 known members makes l2.MaxTunnels
// tunnels; those with a tunnel keep it when new members come.
func TestPlanL2Bound(t *testing.T) {
	self := netip.MustParseAddr("fc00::1")
	dir := policy.Directory{}
	for i := 0; i < 10000; i++ {
		dir[netip.MustParseAddr(fmt.Sprintf("fc00::1:%x", i+1))] = []policy.Member{{Org: "acme", Name: "n", Groups: []string{"big"}}}
	}
	segs := []config.L2Segment{{Name: "big", Members: []policy.Identity{mustIdentity(t, "group:acme/big")}}}
	p := planL2(segs, 1400, self, dir, nil)
	if s := p.segs[0]; len(s.Remotes) != l2.MaxTunnels || s.LeftOut != 10000-l2.MaxTunnels {
		t.Fatalf("%d tunnels, %d left out", len(s.Remotes), s.LeftOut)
	}
	// A new member with a lower address does not take a tunnel.
	low := netip.MustParseAddr("fc00::2")
	dir[low] = []policy.Member{{Org: "acme", Name: "low", Groups: []string{"big"}}}
	p2 := planL2(segs, 1400, self, dir, p)
	if !slices.Equal(p2.segs[0].Remotes, p.segs[0].Remotes) || p2.segs[0].LeftOut != 10001-l2.MaxTunnels {
		t.Errorf("a new member displaced a tunnel: %d left out", p2.segs[0].LeftOut)
	}
}

// TestPlanL2VNIClash: of two members whose tunnels would have one VXLAN
// ID, the later is left out, not the whole segment.
func TestPlanL2VNIClash(t *testing.T) {
	self := netip.MustParseAddr("fc00::1")
	seen := map[uint32]netip.Addr{}
	var x, y netip.Addr
	for i := 1; !y.IsValid(); i++ {
		a := netip.MustParseAddr(fmt.Sprintf("fc00::%x:%x", i>>16, i&0xffff))
		v := l2.VNI("office", self, a)
		if o, ok := seen[v]; ok {
			x, y = o, a
		}
		seen[v] = a
	}
	segs := []config.L2Segment{{Name: "office", Members: []policy.Identity{mustIdentity(t, x.String()), mustIdentity(t, "fc00::99"), mustIdentity(t, y.String())}}}
	p := planL2(segs, 1400, self, nil, nil)
	if got := p.segs[0].Remotes; !slices.Equal(got, []netip.Addr{x, netip.MustParseAddr("fc00::99")}) || p.segs[0].LeftOut != 1 || len(p.clashes) != 1 {
		t.Fatalf("remotes %v, left out %d, clashes %v", got, p.segs[0].LeftOut, p.clashes)
	}
	for _, r := range p.rules {
		if r.From.Addr == y {
			t.Errorf("a rule admits the left-out member: %v", r)
		}
	}
}
