package node

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/l2"
	"github.com/tomoe-net/tomoe/internal/node/l2held"
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
	p := planL2(segs, 1400, self, dir, nil, nil)
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
	if got := planL2(segs, 1400, self, dir2, l2held.Of(p.segs), nil).segs[0].Remotes; !slices.Equal(got, []netip.Addr{key, c}) {
		t.Errorf("after b left the group: %v", got)
	}

	// A member of a hub segment: one tunnel, to the hub; no rule for the
	// group (its members' frames come through the hub).
	hub := mustIdentity(t, "fc00::77")
	hs := []config.L2Segment{{Name: "office", Hub: hub, Members: []policy.Identity{mustIdentity(t, "group:acme/office")}}}
	hp := planL2(hs, 1400, self, dir, nil, nil)
	if got := hp.segs[0].Remotes; !slices.Equal(got, []netip.Addr{hub.Addr}) || len(hp.rules) != 1 || hp.rules[0].From.Addr != hub.Addr {
		t.Errorf("member of a hub segment: remotes %v, rules %v", got, hp.rules)
	}
	// On the hub: every matching member.
	hp = planL2(hs, 1400, hub.Addr, dir, nil, nil)
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
	p := planL2(segs, 1400, self, dir, nil, nil)
	if s := p.segs[0]; len(s.Remotes) != l2.MaxTunnels || s.LeftOut != 10000-l2.MaxTunnels {
		t.Fatalf("%d tunnels, %d left out", len(s.Remotes), s.LeftOut)
	}
	// A new member with a lower address does not take a tunnel.
	low := netip.MustParseAddr("fc00::2")
	dir[low] = []policy.Member{{Org: "acme", Name: "low", Groups: []string{"big"}}}
	p2 := planL2(segs, 1400, self, dir, l2held.Of(p.segs), nil)
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
	p := planL2(segs, 1400, self, nil, nil, nil)
	if got := p.segs[0].Remotes; !slices.Equal(got, []netip.Addr{x, netip.MustParseAddr("fc00::99")}) || p.segs[0].LeftOut != 1 || len(p.clashes) != 1 {
		t.Fatalf("remotes %v, left out %d, clashes %v", got, p.segs[0].LeftOut, p.clashes)
	}
	for _, r := range p.rules {
		if r.From.Addr == y {
			t.Errorf("a rule admits the left-out member: %v", r)
		}
	}
}

// vniClash finds a in the 0x1:... range and b in the 0x2:... range of
// fc00::/16 with VNI(segA, self, a) == VNI(segB, self, b) (a birthday
// search: a few thousand addresses each).
func vniClash(t *testing.T, self netip.Addr, segA, segB string) (a, b netip.Addr) {
	t.Helper()
	byVNI := map[uint32]netip.Addr{}
	for i := 1; i <= 1<<14; i++ {
		x := netip.MustParseAddr(fmt.Sprintf("fc00::2:%x", i))
		byVNI[l2.VNI(segB, self, x)] = x
	}
	for i := 1; i <= 1<<16; i++ {
		x := netip.MustParseAddr(fmt.Sprintf("fc00::1:%x", i))
		if y, ok := byVNI[l2.VNI(segA, self, x)]; ok {
			return x, y
		}
	}
	t.Fatal("no clash found")
	return
}

// TestPlanL2VNIClashAcrossSegments: a running tunnel to a member named
// by key in one segment is not knocked out when a certificate member of
// another (earlier) segment appears whose tunnel would have the same
// VXLAN ID. An attacker holding a certificate of the group can grind a
// key (2^24 tries) for that.
func TestPlanL2VNIClashAcrossSegments(t *testing.T) {
	self := netip.MustParseAddr("fc00::1")
	attacker, victim := vniClash(t, self, "lab", "office")
	segs := []config.L2Segment{
		{Name: "lab", Members: []policy.Identity{mustIdentity(t, "group:acme/lab")}},
		{Name: "office", Members: []policy.Identity{mustIdentity(t, victim.String())}},
	}
	p := planL2(segs, 1400, self, policy.Directory{}, nil, nil)
	if got := p.segs[1].Remotes; !slices.Equal(got, []netip.Addr{victim}) {
		t.Fatalf("before: office remotes %v", got)
	}
	dir := policy.Directory{attacker: {{Org: "acme", Name: "mallory.acme", Groups: []string{"lab"}}}}
	p2 := planL2(segs, 1400, self, dir, l2held.Of(p.segs), nil)
	if got := p2.segs[1].Remotes; !slices.Equal(got, []netip.Addr{victim}) {
		t.Errorf("after a lab member with a clashing VXLAN ID appeared: office remotes %v (the running tunnel to the key member %s was taken out; clashes %v)", got, victim, p2.clashes)
	}
}

// TestPlanL2VNIClashRestart: of two certificate members whose tunnels
// would have one VXLAN ID, the one that had the tunnel keeps it across a
// restart of this node too (not the lower address, which a newcomer can
// grind for along with the clash). After a restart the directory starts
// empty and fills as members greet the node, in any order: the far end
// it remembers (package l2held) is awaited, its ID kept from the other.
func TestPlanL2VNIClashRestart(t *testing.T) {
	self := netip.MustParseAddr("fc00::1")
	// Both in "office": attacker in fc00::1:..., victim in fc00::2:... (higher).
	attacker, victim := vniClash(t, self, "office", "office")
	segs := []config.L2Segment{{Name: "office", Members: []policy.Identity{mustIdentity(t, "group:acme/office")}}}
	dir := policy.Directory{victim: {{Org: "acme", Name: "alice.acme", Groups: []string{"office"}}}}
	p := planL2(segs, 1400, self, dir, nil, nil)
	dir2 := policy.Directory{victim: dir[victim], attacker: {{Org: "acme", Name: "mallory.acme", Groups: []string{"office"}}}}
	p2 := planL2(segs, 1400, self, dir2, l2held.Of(p.segs), nil)
	if got := p2.segs[0].Remotes; !slices.Equal(got, []netip.Addr{victim}) {
		t.Fatalf("running: remotes %v", got)
	}
	// Without a memory, a restart hands the ID to the lower address, or
	// to the first to greet: the clash is real.
	if got := planL2(segs, 1400, self, dir2, nil, nil).segs[0].Remotes; !slices.Equal(got, []netip.Addr{attacker}) {
		t.Fatalf("with no memory: remotes %v, want the lower address %s", got, attacker)
	}
	// After a restart victim is awaited: whether both greet at once or
	// the attacker first, the ID stays victim's.
	awaited := l2held.Held{"office": {victim: true}}
	if got := planL2(segs, 1400, self, dir2, nil, awaited).segs[0].Remotes; !slices.Equal(got, []netip.Addr{victim}) {
		t.Errorf("after a restart, both greeting at once: remotes %v: the newcomer %s took the VXLAN ID of %s, which had the tunnel", got, attacker, victim)
	}
	dirA := policy.Directory{attacker: dir2[attacker]}
	p3 := planL2(segs, 1400, self, dirA, nil, awaited)
	if got := p3.segs[0].Remotes; len(got) != 0 || p3.segs[0].LeftOut != 1 || len(p3.clashes) != 1 || !strings.Contains(p3.clashes[0], "awaited") {
		t.Fatalf("after a restart, the attacker greeting first: remotes %v, clashes %v", got, p3.clashes)
	}
	if got := planL2(segs, 1400, self, dir2, l2held.Of(p3.segs), awaited).segs[0].Remotes; !slices.Equal(got, []netip.Addr{victim}) {
		t.Errorf("after a restart, then victim: remotes %v", got)
	}
	// A member named by key wins over an awaited far end's kept ID.
	keyed := []config.L2Segment{{Name: "office", Members: []policy.Identity{mustIdentity(t, "group:acme/office"), mustIdentity(t, attacker.String())}}}
	if got := planL2(keyed, 1400, self, dirA, nil, awaited).segs[0].Remotes; !slices.Equal(got, []netip.Addr{attacker}) {
		t.Errorf("a key member against an awaited far end: remotes %v", got)
	}
}

// TestPlanL2HeldOnlyRanks: what the node remembers only ranks members:
// a remembered far end that is not a member now (its certificate gone,
// or never one: an edited file) gets no tunnel and no rule, and a
// remembered segment that the config no longer has adds none.
func TestPlanL2HeldOnlyRanks(t *testing.T) {
	self := netip.MustParseAddr("fc00::1")
	attacker, victim := vniClash(t, self, "office", "office")
	stranger := netip.MustParseAddr("fc00::66")
	segs := []config.L2Segment{{Name: "office", Members: []policy.Identity{mustIdentity(t, "group:acme/office")}}}
	dir := policy.Directory{
		victim:   {{Org: "acme", Name: "alice.acme", Groups: []string{"office"}}},
		attacker: {{Org: "acme", Name: "mallory.acme", Groups: []string{"office"}}},
		stranger: {{Org: "acme", Name: "eve.acme", Groups: []string{"sales"}}},
	}
	held := l2held.Held{"office": {victim: true, stranger: true, netip.MustParseAddr("fc00::77"): true}, "gone": {attacker: true}}
	p := planL2(segs, 1400, self, dir, held, held)
	if got := p.segs[0].Remotes; len(p.segs) != 1 || !slices.Equal(got, []netip.Addr{victim}) || p.segs[0].LeftOut != 1 {
		t.Fatalf("remotes %v, left out %d", got, p.segs[0].LeftOut)
	}
	for _, r := range p.rules {
		if r.From.Kind == policy.KindNode {
			t.Errorf("a rule for a remembered far end: %v", r)
		}
	}
	// The victim's certificate is gone: its memory gives it nothing, and
	// the attacker, a member, gets the ID.
	delete(dir, victim)
	if got := planL2(segs, 1400, self, dir, held, nil).segs[0].Remotes; !slices.Equal(got, []netip.Addr{attacker}) {
		t.Errorf("after the victim left: remotes %v", got)
	}
}
