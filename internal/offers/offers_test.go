package offers

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/policy"
)

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	full := Message{Type: TypeOffer, Boot: 7, Seq: 9}
	for i := range MaxRoutes {
		full.Routes = append(full.Routes, netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i)}), 48))
	}
	full.Accepted = pfx("10.99.0.2/32")
	for _, m := range []Message{
		{Type: TypeRequest, Boot: 1},
		{Type: TypeOffer, Boot: 1, Seq: 2},
		{Type: TypeOffer, Boot: 1, Seq: 3, Routes: pfx("192.168.10.0/24", "0.0.0.0/0", "::/0", "2001:db8::/32"), Accepted: pfx("10.99.0.2/32")},
		full,
	} {
		b, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > maxMessage || len(b) > 1200 {
			t.Fatalf("message of %d bytes", len(b))
		}
		got, err := Unmarshal(b)
		if err != nil {
			t.Fatalf("%+v: %v", m, err)
		}
		if got.Type != m.Type || got.Boot != m.Boot || got.Seq != m.Seq || !slices.Equal(got.Routes, m.Routes) || !slices.Equal(got.Accepted, m.Accepted) {
			t.Fatalf("round trip: %+v != %+v", got, m)
		}
	}
}

func TestUnmarshalRefuses(t *testing.T) {
	good, _ := (&Message{Type: TypeOffer, Routes: pfx("10.0.0.0/8")}).Marshal()
	bad := map[string][]byte{
		"short":        good[:5],
		"trailing":     append(slices.Clone(good), 0),
		"version":      append([]byte{9}, good[1:]...),
		"type":         append([]byte{1, 9}, good[2:]...),
		"host bits":    append(slices.Clone(good[:11]), 4, 8, 10, 0, 0, 1, 0),
		"overlay":      append(slices.Clone(good[:10]), 1, 6, 16, 0xfc, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
		"site":         append(slices.Clone(good[:10]), 1, 6, 64, 0x03, 1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0),
		"bits > 32":    append(slices.Clone(good[:10]), 1, 4, 33, 10, 0, 0, 0, 0),
		"loopback":     append(slices.Clone(good[:10]), 1, 4, 8, 127, 0, 0, 0, 0),
		"too many":     append(slices.Clone(good[:10]), MaxRoutes+1),
		"request+body": append([]byte{1, TypeRequest, 0, 0, 0, 0, 0, 0, 0, 0}, 0),
	}
	for name, b := range bad {
		if _, err := Unmarshal(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestAccepted(t *testing.T) {
	g := Offerer{Addr: netip.MustParseAddr("fc00::1")}
	other := Offerer{Addr: netip.MustParseAddr("fc00::2")}
	rules := []Rule{
		{From: policy.Identity{Addr: g.Addr}, Prefix: netip.MustParsePrefix("192.168.0.0/16")},
		{From: policy.Identity{Any: true}, Prefix: netip.MustParsePrefix("10.99.0.0/24")},
		{From: policy.Identity{Addr: g.Addr}, Prefix: netip.MustParsePrefix("::/0")},
	}
	offered := pfx("192.168.10.0/24", "192.169.0.0/24", "10.99.0.0/25", "10.99.0.0/16", "0.0.0.0/0", "::/0", "2001:db8::/48")
	if got, want := Accepted(rules, g, offered), pfx("192.168.10.0/24", "10.99.0.0/25", "::/0"); !slices.Equal(got, want) {
		t.Errorf("from g: %v, want %v", got, want)
	}
	if got, want := Accepted(rules, other, offered), pfx("10.99.0.0/25"); !slices.Equal(got, want) {
		t.Errorf("from other: %v, want %v", got, want)
	}
	if !Wants(rules, other.Addr) || Wants(rules[:1], other.Addr) {
		t.Error("Wants")
	}
	// A default-route rule accepts the default route only.
	exit := []Rule{{From: policy.Identity{Addr: g.Addr}, Prefix: netip.MustParsePrefix("0.0.0.0/0")}}
	if got, want := Accepted(exit, g, pfx("192.168.1.0/24", "0.0.0.0/1", "0.0.0.0/0")), pfx("0.0.0.0/0"); !slices.Equal(got, want) {
		t.Errorf("exit rule accepted %v, want %v", got, want)
	}
}

// A "*" rule takes an IPv4 /32, and anything but the default route that
// overlaps the space where addresses are derived, only as the offering
// key's own derived address; a rule naming the node takes what it covers.
func TestWildcardTakesOnlyDerivedIPv4(t *testing.T) {
	k, err := identity.ParsePublicKey("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	if err != nil {
		t.Fatal(err)
	}
	space := identity.DefaultIPv4Prefix
	from := NewOfferer(k, space)
	if from.IPv4.String() != "100.118.50.184" || from.Addr != k.Address() {
		t.Fatalf("NewOfferer: %+v", from)
	}
	anyRule := func(p string) Rule { return Rule{From: policy.Identity{Any: true}, Prefix: netip.MustParsePrefix(p)} }
	named := func(p string) Rule {
		return Rule{From: policy.Identity{Addr: k.Address()}, Prefix: netip.MustParsePrefix(p)}
	}
	for _, tc := range []struct {
		rule   Rule
		offer  string
		want   bool
		notOwn bool // refused only because it is not the key's address
	}{
		{anyRule("100.64.0.0/10"), "100.118.50.184/32", true, false},
		{anyRule("100.64.0.0/10"), "100.118.50.185/32", false, true},
		{anyRule("100.64.0.0/10"), "100.118.50.184/31", false, true},
		{anyRule("100.64.0.0/10"), "100.64.0.0/10", false, true},
		{anyRule("100.118.50.0/24"), "100.118.50.184/32", true, false},
		{anyRule("100.118.51.0/24"), "100.118.50.184/32", false, false}, // outside the rule
		{anyRule("0.0.0.0/0"), "100.118.50.184/32", false, false},       // a default rule takes the default only
		{anyRule("0.0.0.0/0"), "0.0.0.0/0", true, false},
		{anyRule("10.99.0.0/24"), "10.99.0.7/32", false, true}, // an explicit address, outside the space
		{anyRule("10.99.0.0/16"), "10.99.1.0/24", true, false}, // a LAN, outside the space
		{anyRule("100.0.0.0/8"), "100.32.0.0/11", true, false}, // clear of the space
		{anyRule("2001:db8::/32"), "2001:db8::7/128", true, false},
		{named("100.64.0.0/10"), "100.64.0.7/32", true, false},
		{named("100.64.0.0/10"), "100.64.0.0/16", true, false},
		{named("10.99.0.0/24"), "10.99.0.7/32", true, false},
	} {
		p := netip.MustParsePrefix(tc.offer)
		if got := tc.rule.Covers(from, p); got != tc.want {
			t.Errorf("rule %v %v covers %s: %v, want %v", tc.rule.From, tc.rule.Prefix, p, got, tc.want)
		}
		if got := NotOwnAddress([]Rule{tc.rule}, from, p); got != tc.notOwn {
			t.Errorf("rule %v %v, %s: NotOwnAddress %v, want %v", tc.rule.From, tc.rule.Prefix, p, got, tc.notOwn)
		}
	}
	// Another node's space: the key's address there.
	other := NewOfferer(k, netip.MustParsePrefix("10.99.0.0/24"))
	if !anyRule("10.99.0.0/24").Covers(other, netip.MustParsePrefix("10.99.0.246/32")) {
		t.Error("a \"*\" rule refused the key's address in a tun.ipv4_prefix of 10.99.0.0/24")
	}
}

func TestAllowedIPsOfExit(t *testing.T) {
	got := Pieces(netip.MustParsePrefix("::/0"), nil, nil)
	probe := map[string]bool{"fc00::1": false, "fcff::1": false, "300::1": false, "3ff:ffff::1": false,
		"2001:db8::1": true, "::1": true, "fd00::1": true, "fb00::1": true, "200::1": true, "400::1": true, "ff02::1": true}
	for s, want := range probe {
		a := netip.MustParseAddr(s)
		in := slices.ContainsFunc(got, func(p netip.Prefix) bool { return p.Contains(a) })
		if in != want {
			t.Errorf("%s covered = %v, want %v (%v)", s, in, want, got)
		}
	}
	if len(got) > 20 {
		t.Errorf("%d prefixes", len(got))
	}
	if v4 := Pieces(netip.MustParsePrefix("0.0.0.0/0"), nil, nil); !slices.Equal(v4, pfx("0.0.0.0/0")) {
		t.Errorf("IPv4 default: %v", v4)
	}
}

func TestForwardedLeavesOutLocalDestinations(t *testing.T) {
	got := Forwarded(netip.MustParsePrefix("0.0.0.0/0"))
	for s, want := range map[string]bool{"8.8.8.8": true, "10.1.2.3": true, "169.254.169.254": false, "127.0.0.1": false, "224.0.0.1": false, "255.255.255.255": false} {
		a := netip.MustParseAddr(s)
		if in := slices.ContainsFunc(got, func(p netip.Prefix) bool { return p.Contains(a) }); in != want {
			t.Errorf("%s forwarded = %v, want %v", s, in, want)
		}
	}
	if got := Forwarded(netip.MustParsePrefix("192.168.10.0/24")); !slices.Equal(got, pfx("192.168.10.0/24")) {
		t.Errorf("a LAN prefix: %v", got)
	}
	// The IPv6 metadata service of AWS (fd00:ec2::254), beside ordinary
	// unique local and global addresses.
	got6 := Forwarded(netip.MustParsePrefix("::/0"))
	for s, want := range map[string]bool{"2001:db8::1": true, "fd00:ec2::253": true, "fd00:ec2::254": false, "fe80::1": false, "::1": false, "ff02::1": false} {
		a := netip.MustParseAddr(s)
		if in := slices.ContainsFunc(got6, func(p netip.Prefix) bool { return p.Contains(a) }); in != want {
			t.Errorf("%s forwarded = %v, want %v", s, in, want)
		}
		if NeverForwarded(a) == want {
			t.Errorf("NeverForwarded(%s) = %v", s, !want)
		}
	}
	if !NeverForwarded(netip.MustParseAddr("::ffff:169.254.169.254")) || NeverForwarded(netip.MustParseAddr("8.8.8.8")) {
		t.Error("NeverForwarded on IPv4")
	}
}

func FuzzUnmarshal(f *testing.F) {
	for _, m := range []Message{{Type: TypeRequest}, {Type: TypeOffer, Routes: pfx("10.0.0.0/8", "::/0"), Accepted: pfx("10.99.0.2/32")}} {
		b, _ := m.Marshal()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Unmarshal(b)
		if err != nil {
			return
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		m2, err := Unmarshal(out)
		if err != nil || !slices.Equal(m2.Routes, m.Routes) || !slices.Equal(m2.Accepted, m.Accepted) {
			t.Fatalf("re-encode differs: %v", err)
		}
	})
}

func TestPiecesLeaveOthersOut(t *testing.T) {
	others := pfx("2000::/3", "2001:db8::/32")
	got := Pieces(netip.MustParsePrefix("::/0"), others, nil)
	for _, p := range got {
		if slices.Contains(others, p) || p.Overlaps(others[0]) {
			t.Errorf("piece %v overlaps another peer's route", p)
		}
	}
	if !slices.ContainsFunc(got, func(p netip.Prefix) bool { return p.Contains(netip.MustParseAddr("4000::1")) }) {
		t.Errorf("pieces lost the rest: %v", got)
	}
	if got := Pieces(netip.MustParsePrefix("10.0.0.0/8"), others, nil); !slices.Equal(got, pfx("10.0.0.0/8")) {
		t.Errorf("a plain route: %v", got)
	}
}

// The host's own networks inside a route are left out of the peer's
// AllowedIPs, and a route so split leaves out the others exactly.
func TestPiecesLeaveHostNetworksOut(t *testing.T) {
	host := pfx("192.168.1.0/24", "192.168.1.1/32", "10.0.0.0/8", "2001:db8:1::/64")
	got := Pieces(netip.MustParsePrefix("192.168.0.0/16"), pfx("192.168.128.0/17"), host)
	for s, want := range map[string]bool{"192.168.1.7": false, "192.168.1.1": false, "192.168.2.5": true, "192.168.0.1": true, "192.168.200.1": false} {
		a := netip.MustParseAddr(s)
		if in := slices.ContainsFunc(got, func(p netip.Prefix) bool { return p.Contains(a) }); in != want {
			t.Errorf("%s in the pieces of 192.168.0.0/16: %v, want %v (%v)", s, in, want, got)
		}
	}
	if slices.Contains(got, netip.MustParsePrefix("192.168.128.0/17")) {
		t.Errorf("a piece equals another peer's route: %v", got)
	}
	// A route inside a host network, or beside them all, is left whole:
	// the node refuses the first.
	for _, p := range []string{"10.1.0.0/16", "172.16.0.0/12"} {
		if got := Pieces(netip.MustParsePrefix(p), nil, host); !slices.Equal(got, pfx(p)) {
			t.Errorf("Pieces(%s) = %v", p, got)
		}
	}
	v6 := Pieces(netip.MustParsePrefix("::/0"), nil, host)
	for s, want := range map[string]bool{"2001:db8:1::5": false, "2001:db8:2::5": true, "fc00::1": false} {
		a := netip.MustParseAddr(s)
		if in := slices.ContainsFunc(v6, func(p netip.Prefix) bool { return p.Contains(a) }); in != want {
			t.Errorf("%s in the pieces of ::/0: %v, want %v", s, in, want)
		}
	}
}
