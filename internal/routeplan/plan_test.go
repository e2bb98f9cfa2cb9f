package routeplan

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/offers"
	"github.com/tomoe-net/tomoe/internal/policy"
)

var space = netip.MustParsePrefix("100.64.0.0/10")

func key(b byte) identity.PublicKey { return identity.PrivateKeyFromBytes([32]byte{8, b}).Public() }

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func derived(k identity.PublicKey) netip.Prefix {
	a, err := k.IPv4Address(space)
	if err != nil {
		panic(err)
	}
	return netip.PrefixFrom(a, 32)
}

func rule(t *testing.T, from string, prefix string) offers.Rule {
	t.Helper()
	id, err := policy.ParseIdentity(from)
	if err != nil {
		t.Fatal(err)
	}
	return offers.Rule{From: id, Prefix: pfx(prefix)}
}

func everyone(netip.Addr) bool { return true }

func verdict(p *Plan, k identity.PublicKey, pr netip.Prefix) Verdict { return p.Verdicts[k][pr] }

func TestWildcardTakesOnlyDerivedAddresses(t *testing.T) {
	a, b := key(1), key(2)
	in := Input{
		Offers:    map[identity.PublicKey][]netip.Prefix{a: {derived(a), derived(b)}, b: {pfx("10.99.0.7/32")}},
		Admitted:  everyone,
		Rules:     []offers.Rule{rule(t, "*", "100.64.0.0/10"), rule(t, "*", "10.99.0.0/24")},
		IPv4Space: space,
	}
	p := Compute(in)
	if v := verdict(p, a, derived(a)); v.State != StateInstalled {
		t.Errorf("a's own derived address: %+v", v)
	}
	if v := verdict(p, a, derived(b)); v.State != StateNotAccepted || v.Reason != ReasonNotOwnAddress {
		t.Errorf("a claiming b's address: %+v", v)
	}
	// Outside tun.ipv4_prefix a "*" rule takes prefixes, but no /32: an
	// explicit address needs a rule naming the node.
	if v := verdict(p, b, pfx("10.99.0.7/32")); v.State != StateNotAccepted {
		t.Errorf("an explicit /32 through \"*\": %+v", v)
	}
	in.Rules = append(in.Rules, rule(t, b.String(), "10.99.0.7/32"))
	if v := verdict(Compute(in), b, pfx("10.99.0.7/32")); v.State != StateInstalled {
		t.Errorf("an explicit /32 a rule names: %+v", v)
	}
}

func TestCollisionsInstallForNobody(t *testing.T) {
	a, b, c := key(1), key(2), key(3)
	self := derived(c)
	in := Input{
		// b offers a's address and the node's own: arrival order must not
		// decide.
		Offers:    map[identity.PublicKey][]netip.Prefix{a: {derived(a)}, b: {derived(a), self}},
		Admitted:  everyone,
		Rules:     []offers.Rule{rule(t, a.String(), "100.64.0.0/10"), rule(t, b.String(), "100.64.0.0/10")},
		Self:      self,
		IPv4Space: space,
		Installed: map[netip.Prefix]identity.PublicKey{derived(a): b}, // b got there first
	}
	p := Compute(in)
	for _, k := range []identity.PublicKey{a, b} {
		if v := verdict(p, k, derived(a)); v.State != StateConflict || v.Reason != ReasonCollision || len(v.With) != 1 {
			t.Errorf("%s's offer of a's address: %+v", k.ShortString(), v)
		}
	}
	if _, ok := p.Installed[derived(a)]; ok {
		t.Error("a colliding address was installed")
	}
	if v := verdict(p, b, self); v.State != StateConflict || v.Reason != ReasonOwnAddress {
		t.Errorf("b's offer of this node's own address: %+v", v)
	}
}

func TestOwnerKeepsAPrefixAndPolicyGatesWildcard(t *testing.T) {
	a, b := key(1), key(2)
	lan := pfx("192.168.10.0/24")
	in := Input{
		Offers:    map[identity.PublicKey][]netip.Prefix{a: {lan}, b: {lan}},
		Admitted:  everyone,
		Rules:     []offers.Rule{rule(t, "*", "192.168.0.0/16")},
		IPv4Space: space,
		Installed: map[netip.Prefix]identity.PublicKey{lan: b},
	}
	p := Compute(in)
	if p.Installed[lan] != b {
		t.Fatalf("the current owner lost %s to %s", lan, p.Installed[lan].ShortString())
	}
	if v := verdict(p, a, lan); v.State != StateConflict || v.Reason != ReasonOtherPeer || v.With[0] != b {
		t.Errorf("the second gateway: %+v", v)
	}
	// Without an owner, the first by key order.
	in.Installed = nil
	first := a
	if string(b[:]) < string(a[:]) {
		first = b
	}
	if got := Compute(in).Installed[lan]; got != first {
		t.Errorf("new prefix went to %s, want the first by key order", got.ShortString())
	}
	// A "*" rule accepts only from peers the policy lets in.
	in.Admitted = func(addr netip.Addr) bool { return addr == a.Address() }
	p = Compute(in)
	if v := verdict(p, b, lan); v.State != StateNotAccepted || v.Reason != ReasonPolicy {
		t.Errorf("a peer the policy does not let in: %+v", v)
	}
	if p.Installed[lan] != a {
		t.Errorf("installed for %s, want a", p.Installed[lan].ShortString())
	}
}

func TestOwnRoutesAndHostNetworks(t *testing.T) {
	a := key(1)
	in := Input{
		Offers: map[identity.PublicKey][]netip.Prefix{a: {
			pfx("192.168.0.0/16"), pfx("192.168.1.5/32"), pfx("10.1.0.0/16"), pfx("0.0.0.0/0"),
		}},
		Admitted:  everyone,
		Rules:     []offers.Rule{rule(t, a.String(), "192.168.0.0/16"), rule(t, a.String(), "10.0.0.0/8"), rule(t, a.String(), "0.0.0.0/0")},
		Own:       []netip.Prefix{pfx("10.1.2.0/24")},
		Host:      []netip.Prefix{pfx("192.168.1.0/24")},
		IPv4Space: space,
	}
	p := Compute(in)
	if v := verdict(p, a, pfx("192.168.1.5/32")); v.State != StateConflict || v.Reason != ReasonHostNetwork {
		t.Errorf("a route inside the host's LAN: %+v", v)
	}
	if v := verdict(p, a, pfx("10.1.0.0/16")); v.State != StateNotAccepted || v.Reason != ReasonOwnRoute {
		t.Errorf("a route over a LAN this node offers: %+v", v)
	}
	pieces := p.Pieces[a]
	for _, pc := range pieces {
		if pc.Overlaps(pfx("192.168.1.0/24")) {
			t.Errorf("AllowedIPs piece %s takes the host's LAN", pc)
		}
	}
	// The exit's default route leaves out the LAN route it also has, so
	// the two pieces sets never overlap; OwnerOf finds both.
	if k, ok := p.OwnerOf(netip.MustParseAddr("192.168.7.7")); !ok || k != a {
		t.Errorf("OwnerOf(192.168.7.7) = %s, %v", k.ShortString(), ok)
	}
	if _, ok := p.OwnerOf(netip.MustParseAddr("192.168.1.9")); ok {
		t.Error("the host's own LAN has an owner")
	}
	owners := p.Owners(func(k identity.PublicKey) (netip.Addr, bool) { return k.Address(), true })
	if !slices.IsSortedFunc(owners, func(x, y policy.RouteOwner) int { return y.Prefix.Bits() - x.Prefix.Bits() }) {
		t.Error("owners are not longest first")
	}
	if len(p.Owners(func(identity.PublicKey) (netip.Addr, bool) { return netip.Addr{}, false })) != 0 {
		t.Error("owners of inactive peers listed")
	}
}

func TestTable(t *testing.T) {
	tb := NewTable()
	a := key(1)
	now := time.Unix(1000, 0)
	r1 := []netip.Prefix{pfx("10.0.0.0/8")}
	if o := tb.Update(a, 7, 2, r1, nil, now); o != Changed {
		t.Fatalf("first offer: %v", o)
	}
	if o := tb.Update(a, 7, 1, nil, nil, now); o != Unchanged || len(tb.Offers()[a]) != 1 {
		t.Fatalf("an older offer of the same run replaced a newer one: %v", o)
	}
	if o := tb.Update(a, 7, 3, r1, []netip.Prefix{pfx("10.99.0.1/32")}, now); o != Unchanged {
		t.Fatalf("a refresh: %v", o)
	}
	if got := tb.AcceptedBy(pfx("10.99.0.1/32")); len(got) != 1 || got[0] != a {
		t.Fatalf("AcceptedBy = %v", got)
	}
	// Churn: at most MaxChanges changes per window.
	throttled := 0
	for i := range 2 * MaxChanges {
		routes := []netip.Prefix{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16)}
		if tb.Update(a, 7, uint32(10+i), routes, nil, now) == Throttled {
			throttled++
		}
	}
	if throttled == 0 {
		t.Fatal("no change was throttled")
	}
	if o := tb.Update(a, 7, 100, r1, nil, now.Add(ChangeWindow+time.Second)); o != Changed {
		t.Fatalf("a change after the window: %v", o)
	}
	// Expiry of live peers that stopped refreshing.
	if got := tb.Expire(now.Add(ChangeWindow+time.Minute), time.Hour, func(identity.PublicKey) bool { return true }); len(got) != 0 {
		t.Fatalf("a fresh offer expired: %v", got)
	}
	if got := tb.Expire(now.Add(2*time.Hour), time.Hour, func(identity.PublicKey) bool { return false }); len(got) != 0 {
		t.Fatal("the offer of a peer that is down expired")
	}
	if got := tb.Expire(now.Add(2*time.Hour), time.Hour, func(identity.PublicKey) bool { return true }); len(got) != 1 || tb.Has(a) {
		t.Fatalf("a stale offer did not expire: %v", got)
	}
}
