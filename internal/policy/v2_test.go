package policy

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/packet"
)

func mustSpec(t testing.TB, s RuleSpec) Rule {
	t.Helper()
	r, err := ParseRuleSpec(s)
	if err != nil {
		t.Fatalf("ParseRuleSpec(%+v): %v", s, err)
	}
	return r
}

func TestGlobMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		{"*", "alice@sales.acme", true},
		{"*", "", true},
		{"alice@sales.acme", "alice@sales.acme", true},
		{"alice@sales.acme", "alice@sales.acmex", false},
		{"alice@sales.acme", "alic@sales.acme", false},
		{"*@sales.acme", "alice@sales.acme", true},
		{"*@sales.acme", "alice@hr.acme", false},
		{"*@sales.acme", "@sales.acme", true}, // empty run
		{"mallory*", "mallory@ops.acme", true},
		{"mallory*", "mallory", true},
		{"mallory*", "mall", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "axxbyyc", true},
		{"a*b*c", "axxbyy", false},
		{"a**c", "ac", true},
		{"*a*", "bab", true},
		{"*a*", "bbb", false},
		{"*.acme", "x.acme.acme", true},
		{"Alice*", "alice", false}, // case-sensitive
	} {
		if got := globMatch(c.pattern, c.name); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

func TestParseCertIdentities(t *testing.T) {
	for _, c := range []struct {
		in   string
		kind IdentityKind
		ok   bool
	}{
		{"group:acme/sales", KindGroup, true},
		{"group:acme/sales.eu_1-x", KindGroup, true},
		{"group:acme", 0, false},
		{"group:Acme/sales", 0, false},
		{"group:acme/", 0, false},
		{"group:/sales", 0, false},
		{"group:acme/sa/les", 0, false},
		{"org:acme", KindOrg, true},
		{"org:ac.me", 0, false},
		{"org:" + strings.Repeat("a", 64), 0, false},
		{"org:", 0, false},
		{"name:*@sales.acme", KindName, true},
		{"name:*", KindName, true},
		{"name:alice+x@sales.acme", KindName, true},
		{"name:", 0, false},
		{"name:a?b", 0, false},
		{"name:" + strings.Repeat("a", 129), 0, false},
		{"*", KindAny, true},
		{"fc00::1", KindNode, true},
	} {
		id, err := ParseIdentity(c.in)
		if (err == nil) != c.ok {
			t.Errorf("ParseIdentity(%q): err %v, want ok %v", c.in, err, c.ok)
			continue
		}
		if !c.ok {
			continue
		}
		if id.Kind != c.kind || id.String() != c.in {
			t.Errorf("ParseIdentity(%q) = kind %d %q", c.in, id.Kind, id.String())
		}
		if id.ByCert() != (c.kind >= KindGroup) {
			t.Errorf("%q: ByCert %v", c.in, id.ByCert())
		}
	}
	a, _ := ParseIdentity("group:acme/sales")
	b, _ := ParseIdentity("group:acme/sales")
	o, _ := ParseIdentity("org:acme")
	if !a.Same(b) || a.Same(o) || o.Same(Identity{Any: true}) {
		t.Error("Same on certificate identities")
	}
	if (Identity{Any: true}).Kind != KindUnset || !(Identity{Any: true}).Same(Identity{Kind: KindAny, Any: true}) {
		t.Error("legacy literal {Any: true} is not the same as a parsed *")
	}
}

func TestIdentityMatches(t *testing.T) {
	addr := netip.MustParseAddr("fc00::1")
	alice := []Member{{Org: "acme", Name: "alice@sales.acme", Groups: []string{"sales", "eu"}}}
	for _, c := range []struct {
		id      string
		members []Member
		want    bool
	}{
		{"group:acme/sales", alice, true},
		{"group:acme/hr", alice, false},
		{"group:other/sales", alice, false},
		{"org:acme", alice, true},
		{"org:other", alice, false},
		{"name:*@sales.acme", alice, true},
		{"name:*@hr.acme", alice, false},
		{"org:acme", nil, false},
		{"*", nil, true},
		{"fc00::1", nil, true},
		{"fc00::2", alice, false},
	} {
		id, err := ParseIdentity(c.id)
		if err != nil {
			t.Fatal(err)
		}
		if got := id.Matches(addr, c.members); got != c.want {
			t.Errorf("%s.Matches = %v, want %v", c.id, got, c.want)
		}
	}
}

func TestParseDest(t *testing.T) {
	for _, c := range []struct {
		in   string
		kind DestKind
		out  string
	}{
		{"", DestDefault, ""},
		{"self", DestSelf, "self"},
		{"10.1.2.0/24", DestPrefix, "10.1.2.0/24"},
		{"10.1.2.3/24", DestPrefix, "10.1.2.0/24"},
		{"10.1.2.3", DestPrefix, "10.1.2.3"},
		{"fd00:1::/64", DestPrefix, "fd00:1::/64"},
		{"fc00::1", DestNodes, "fc00::1"},
		{"group:acme/servers", DestNodes, "group:acme/servers"},
		{"org:acme", DestNodes, "org:acme"},
		{"name:db*", DestNodes, "name:db*"},
	} {
		d, err := ParseDest(c.in)
		if err != nil {
			t.Errorf("ParseDest(%q): %v", c.in, err)
			continue
		}
		if d.Kind != c.kind || d.String() != c.out {
			t.Errorf("ParseDest(%q) = %d %q, want %d %q", c.in, d.Kind, d.String(), c.kind, c.out)
		}
	}
	for _, bad := range []string{"*", "10.0.0.0/33", "nonsense", "fe80::1%eth0", "group:x"} {
		if _, err := ParseDest(bad); err == nil {
			t.Errorf("ParseDest(%q) accepted", bad)
		}
	}
}

func TestRuleSpecRoundTrip(t *testing.T) {
	s := RuleSpec{Deny: true, From: "group:acme/sales", To: "10.0.0.0/8", Proto: "tcp", Ports: "22,80", Until: "2030-01-02T03:04:05Z"}
	r := mustSpec(t, s)
	if got := r.Spec(); got != s {
		t.Fatalf("Spec() = %+v, want %+v", got, s)
	}
	if got, want := r.String(), "deny from group:acme/sales to 10.0.0.0/8 proto tcp ports 22,80 until 2030-01-02T03:04:05Z"; got != want {
		t.Fatalf("String() = %q, want %q", got, want)
	}
	if _, err := ParseRuleSpec(RuleSpec{From: "*", Until: "tomorrow"}); err == nil || !strings.Contains(err.Error(), "RFC 3339") {
		t.Fatalf("bad until: %v", err)
	}
}

// dirFixture: alice (sales), mallory (ops), bob (no org).
func dirFixture() (alice, mallory, bob netip.Addr, dir Directory) {
	alice, mallory, bob = netip.MustParseAddr("fc00::a"), netip.MustParseAddr("fc00::b"), netip.MustParseAddr("fc00::c")
	dir = Directory{
		alice:   {{Org: "acme", Name: "alice@sales.acme", Groups: []string{"sales"}}},
		mallory: {{Org: "acme", Name: "mallory@ops.acme", Groups: []string{"ops", "sales"}}},
	}
	return
}

func entries(t testing.TB, source string, specs ...RuleSpec) []Entry {
	var out []Entry
	for _, s := range specs {
		out = append(out, Entry{Rule: mustSpec(t, s), Source: source, Origin: source})
	}
	return out
}

func TestMatcherCertAndDeny(t *testing.T) {
	alice, mallory, bob, dir := dirFixture()
	me := netip.MustParseAddr("fc00::1")
	now := time.Now()
	es := append(entries(t, SourceAPI,
		RuleSpec{Deny: true, From: "name:mallory*"}),
		entries(t, SourceOrg,
			RuleSpec{From: "group:acme/sales", Proto: "tcp", Ports: "22"},
			RuleSpec{From: bob.String(), Proto: "udp"})...)
	m := CompileAt(es, dir, Self{Addr: me}, now)
	tcp := uint8(packet.ProtoTCP)
	if !m.Allows(alice, tcp, 22, true) || m.Allows(alice, tcp, 23, true) {
		t.Error("alice (group sales) tcp/22 only")
	}
	if m.Allows(mallory, tcp, 22, true) {
		t.Error("mallory is in sales but denied by name: deny must beat allow")
	}
	if m.AllowsAny(mallory) {
		t.Error("AllowsAny(mallory) despite a deny of everything")
	}
	if !m.AllowsAny(alice) || !m.AllowsAny(bob) || m.AllowsAny(me) {
		t.Error("AllowsAny")
	}
	if m.Names(alice) || !m.Names(bob) {
		t.Error("Names: only key/address rules name a source")
	}
	if !m.ByCert() {
		t.Error("ByCert")
	}
	d := m.Explain(mallory, me, true, tcp, 22, true)
	if d.Allowed || d.Entry == nil || !d.Entry.Deny || !strings.HasPrefix(d.Reason, "denied by api rule") {
		t.Errorf("Explain mallory: %+v", d)
	}
	d = m.Explain(alice, me, true, tcp, 22, true)
	if !d.Allowed || d.Entry == nil || d.Entry.Source != SourceOrg || !strings.Contains(d.Reason, "group:acme/sales") {
		t.Errorf("Explain alice: %+v", d)
	}
	d = m.Explain(alice, me, true, tcp, 80, true)
	if d.Allowed || d.Entry != nil || !strings.HasPrefix(d.Reason, "default deny: no rule allows tcp port 80 from fc00::a") {
		t.Errorf("Explain default: %+v", d)
	}

	// Directory changes re-resolve: alice leaves sales.
	dir2 := Directory{alice: {{Org: "acme", Name: "alice@hr.acme", Groups: []string{"hr"}}}}
	if CompileAt(es, dir2, Self{Addr: me}, now).Allows(alice, tcp, 22, true) {
		t.Error("alice still allowed after leaving sales")
	}
}

func TestDenyBeatsAllowAcrossSources(t *testing.T) {
	_, _, bob, _ := dirFixture()
	tcp := uint8(packet.ProtoTCP)
	sources := []string{SourceConfig, SourceAPI, SourceOrg}
	for _, ds := range sources {
		for _, as := range sources {
			for _, denyFirst := range []bool{true, false} {
				deny := entries(t, ds, RuleSpec{Deny: true, From: bob.String(), Proto: "tcp", Ports: "22"})
				allow := entries(t, as, RuleSpec{From: "*"})
				es := append(allow, deny...)
				if denyFirst {
					es = append(deny, allow...)
				}
				m := CompileAt(es, nil, Self{}, time.Now())
				if m.Allows(bob, tcp, 22, true) {
					t.Errorf("deny (%s) lost to allow (%s), deny first %v", ds, as, denyFirst)
				}
				if !m.Allows(bob, tcp, 23, true) || !m.AllowsAny(bob) {
					t.Errorf("a deny of tcp/22 refused other traffic")
				}
			}
		}
	}
}

func TestMatcherDestinations(t *testing.T) {
	_, _, bob, _ := dirFixture()
	me := netip.MustParseAddr("fc00::1")
	lan := netip.MustParseAddr("10.1.2.3")
	other := netip.MustParseAddr("10.9.9.9")
	tcp := uint8(packet.ProtoTCP)
	for _, c := range []struct {
		to                   string
		self, lanOK, otherOK bool
	}{
		{"", true, true, true},
		{"self", true, false, false},
		{"10.1.0.0/16", false, true, false},
		{"10.1.2.3", false, true, false},
	} {
		m := CompileAt(entries(t, SourceConfig, RuleSpec{From: bob.String(), To: c.to}), nil, Self{Addr: me}, time.Now())
		if got := m.AllowsTo(bob, me, true, tcp, 22, true); got != c.self {
			t.Errorf("to %q: self %v", c.to, got)
		}
		if got := m.AllowsTo(bob, lan, false, tcp, 22, true); got != c.lanOK {
			t.Errorf("to %q: lan %v", c.to, got)
		}
		if got := m.AllowsTo(bob, other, false, tcp, 22, true); got != c.otherOK {
			t.Errorf("to %q: other %v", c.to, got)
		}
	}
	// To names destination nodes: applies on a node that is one.
	es := entries(t, SourceOrg, RuleSpec{From: bob.String(), To: "group:acme/servers"})
	server := Self{Addr: me, Members: []Member{{Org: "acme", Name: "db@srv.acme", Groups: []string{"servers"}}}}
	if !CompileAt(es, nil, server, time.Now()).AllowsTo(bob, lan, false, tcp, 22, true) {
		t.Error("to group:acme/servers on a server: refused")
	}
	if CompileAt(es, nil, Self{Addr: me}, time.Now()).Allows(bob, tcp, 22, true) {
		t.Error("to group:acme/servers on a non-server: allowed")
	}
	// A deny with a destination does not refuse everything.
	m := CompileAt(append(entries(t, SourceConfig, RuleSpec{From: "*"}), entries(t, SourceAPI, RuleSpec{Deny: true, From: bob.String(), To: "self"})...), nil, Self{Addr: me}, time.Now())
	if !m.AllowsAny(bob) || m.Allows(bob, tcp, 22, true) || !m.AllowsTo(bob, lan, false, tcp, 22, true) {
		t.Error("deny to self")
	}
}

func TestMatcherUntil(t *testing.T) {
	_, _, bob, _ := dirFixture()
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	es := entries(t, SourceConfig,
		RuleSpec{From: bob.String(), Proto: "tcp", Until: "2030-01-01T02:00:00Z"},
		RuleSpec{From: "*", Proto: "icmp", Until: "2030-01-01T01:00:00Z"},
		RuleSpec{From: "*", Proto: "udp", Until: "2029-01-01T00:00:00Z"})
	m := CompileAt(es, nil, Self{}, t0)
	if !m.Allows(bob, packet.ProtoTCP, 1, true) {
		t.Error("unexpired rule not applied")
	}
	if m.Allows(bob, packet.ProtoUDP, 1, true) {
		t.Error("expired rule applied")
	}
	if got := m.NextExpiry(); !got.Equal(t0.Add(time.Hour)) {
		t.Errorf("NextExpiry = %v", got)
	}
	m = CompileAt(es, nil, Self{}, t0.Add(2*time.Hour))
	if m.AllowsAny(bob) || !m.NextExpiry().IsZero() {
		t.Error("all expired at +2h (Until <= now)")
	}
}

func TestStoreV2(t *testing.T) {
	alice, mallory, bob, dir := dirFixture()
	path := filepath.Join(t.TempDir(), "policy.json")
	now := time.Now().UTC().Truncate(time.Second)
	config := []Rule{mustSpec(t, RuleSpec{Deny: true, From: "name:mallory*"})}
	s, _, err := OpenStore(path, config)
	if err != nil {
		t.Fatal(err)
	}
	s.SetOrgRules("acme", 3, []Rule{mustSpec(t, RuleSpec{From: "org:acme", Proto: "tcp"})})
	tcp := uint8(packet.ProtoTCP)
	if s.Matcher().Allows(alice, tcp, 22, true) {
		t.Fatal("cert rule applies before the directory knows alice")
	}
	s.SetDirectory(dir)
	m := s.Matcher()
	if !m.Allows(alice, tcp, 22, true) || m.Allows(mallory, tcp, 22, true) {
		t.Fatal("org rule for alice, config deny for mallory")
	}
	if d := m.Explain(alice, netip.Addr{}, true, tcp, 22, true); d.Entry == nil || d.Entry.Origin != "org acme v3" {
		t.Fatalf("Explain: %+v", d)
	}
	// Timed API rules.
	if _, err := s.Allow(mustSpec(t, RuleSpec{From: bob.String(), Proto: "udp", Until: now.Add(time.Hour).Format(time.RFC3339)}), now); err != nil {
		t.Fatal(err)
	}
	if added, err := s.Deny(mustSpec(t, RuleSpec{From: alice.String(), Proto: "tcp", Ports: "23", Until: now.Add(2 * time.Hour).Format(time.RFC3339)}), now); err != nil || !added {
		t.Fatal(added, err)
	}
	if _, err := s.Allow(mustSpec(t, RuleSpec{From: bob.String(), Until: now.Add(-time.Second).Format(time.RFC3339)}), now); err == nil {
		t.Fatal("an expired rule was added")
	}
	m = s.Matcher()
	if !m.Allows(bob, packet.ProtoUDP, 53, true) || m.Allows(alice, tcp, 23, true) || !m.Allows(alice, tcp, 22, true) {
		t.Fatal("api allow/deny")
	}
	if got := m.NextExpiry(); !got.Equal(now.Add(time.Hour)) {
		t.Fatalf("NextExpiry %v", got)
	}
	// Reopen: persisted with until and deny, as version 2.
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), `"version": 2`) || !strings.Contains(string(b), `"action": "deny"`) {
		t.Fatalf("state file:\n%s", b)
	}
	s2, _, err := OpenStore(path, config)
	if err != nil {
		t.Fatal(err)
	}
	s2.SetDirectory(dir)
	if got := len(s2.Rules()); got != 3 {
		t.Fatalf("reopened: %d rules: %v", got, s2.Rules())
	}
	// Expire at +1h drops bob's rule, keeps alice's deny.
	removed := s2.Expire(now.Add(time.Hour))
	if len(removed) != 1 || !removed[0].From.Covers(bob) {
		t.Fatalf("Expire removed %v", removed)
	}
	if s2.Matcher().Allows(bob, packet.ProtoUDP, 53, true) || !s2.Matcher().NextExpiry().Equal(now.Add(2*time.Hour)) {
		t.Fatal("after Expire")
	}
	// Undeny.
	id, _ := ParseIdentity(alice.String())
	if rm, err := s2.Undeny(id, now); err != nil || len(rm) != 1 {
		t.Fatal(rm, err)
	}
	mid, _ := ParseIdentity("name:mallory*")
	if _, err := s2.Undeny(mid, now); !errors.Is(err, ErrNoRule) || !strings.Contains(err.Error(), "config") {
		t.Fatalf("undeny of a config deny: %v", err)
	}
	// Revoke does not remove deny rules.
	if _, err := s2.Revoke(mid, now); !errors.Is(err, ErrNoRule) {
		t.Fatalf("revoke of a deny-only identity: %v", err)
	}
	// Extending an API rule's until replaces it.
	r := mustSpec(t, RuleSpec{From: bob.String(), Until: now.Add(time.Hour).Format(time.RFC3339)})
	s2.Allow(r, now)
	r.Until = now.Add(3 * time.Hour)
	if added, err := s2.Allow(r, now); err != nil || !added {
		t.Fatal(added, err)
	}
	n := 0
	for _, e := range s2.Rules() {
		if e.Source == SourceAPI && e.From.Covers(bob) {
			n++
			if !e.Until.Equal(now.Add(3 * time.Hour)) {
				t.Fatalf("until not extended: %v", e)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d api rules for bob", n)
	}
	s2.SetOrgRules("acme", 4, nil)
	if s2.Matcher().Allows(alice, tcp, 22, true) {
		t.Fatal("org rules removed but still applied")
	}
}

func TestStoreLoadsVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.json")
	v1 := `{"version":1,"rules":[{"from":"fc00::c","proto":"tcp","ports":"22","added":"2025-01-01T00:00:00Z"}],"revoked":[{"from":"fc00::d","at":"2025-01-01T00:00:00Z"}]}`
	if err := os.WriteFile(path, []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _, err := OpenStore(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Matcher().Allows(netip.MustParseAddr("fc00::c"), packet.ProtoTCP, 22, true) || !s.Revoked(netip.MustParseAddr("fc00::d")) {
		t.Fatal("version 1 file not loaded")
	}
	// Saving rules without deny/to/until keeps version 1, for older nodes.
	if _, err := s.Allow(mustSpec(t, RuleSpec{From: "fc00::e"}), time.Now()); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); !strings.Contains(string(b), `"version": 1`) {
		t.Fatalf("state file:\n%s", b)
	}
	if err := os.WriteFile(path, []byte(`{"version":3,"rules":[],"revoked":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenStore(path, nil); err == nil {
		t.Fatal("version 3 accepted")
	}
}

func TestFilterDenyKeepsOwnFlows(t *testing.T) {
	me, bob := mustKey(t), mustKey(t)
	m := CompileAt(append(entries(t, SourceConfig, RuleSpec{From: "*"}), entries(t, SourceAPI, RuleSpec{Deny: true, From: bob.Address().String()})...), nil, Self{Addr: me.Address()}, time.Now())
	f := NewFilter(Local{Addr: me.Address(), Site: me.SitePrefix()}, m, NewConntrack(0), nil)
	now := time.Now().UnixNano()
	if v := f.Inbound(tcpPkt(bob.Address(), me.Address(), 40000, 22, packet.TCPSyn), now); v != DropDenied {
		t.Fatalf("denied peer's SYN: %v", v)
	}
	if v := f.Outbound(tcpPkt(me.Address(), bob.Address(), 40001, 80, packet.TCPSyn), now); v != Accept {
		t.Fatal(v)
	}
	if v := f.Inbound(tcpPkt(bob.Address(), me.Address(), 80, 40001, packet.TCPSyn|packet.TCPAck), now); v != Accept {
		t.Fatalf("reply on this node's own flow to a denied peer: %v", v)
	}
}
