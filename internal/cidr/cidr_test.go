package cidr

import (
	"net/netip"
	"slices"
	"testing"
)

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func TestSubtract(t *testing.T) {
	for _, tc := range []struct {
		p     string
		holes []netip.Prefix
		want  []netip.Prefix
	}{
		{"192.168.0.0/16", nil, pfx("192.168.0.0/16")},
		{"192.168.0.0/16", pfx("10.0.0.0/8", "fd00::/8"), pfx("192.168.0.0/16")},
		{"192.168.0.0/16", pfx("192.168.0.0/16"), nil},
		{"192.168.1.0/24", pfx("192.168.0.0/16"), nil},
		{"192.168.0.0/22", pfx("192.168.1.0/24"), pfx("192.168.0.0/24", "192.168.2.0/23")},
		{"192.168.0.0/22", pfx("192.168.1.0/24", "192.168.3.7/32"), pfx("192.168.0.0/24", "192.168.2.0/24", "192.168.3.0/30", "192.168.3.4/31", "192.168.3.6/32", "192.168.3.8/29", "192.168.3.16/28", "192.168.3.32/27", "192.168.3.64/26", "192.168.3.128/25")},
		{"::/0", pfx("8000::/1"), pfx("::/1")},
	} {
		p := netip.MustParsePrefix(tc.p)
		got := Subtract(p, tc.holes)
		if !slices.Equal(got, tc.want) {
			t.Errorf("Subtract(%s, %v) = %v, want %v", p, tc.holes, got, tc.want)
		}
	}
}

// What Subtract returns covers exactly p without the holes.
func TestSubtractCoversTheRest(t *testing.T) {
	p := netip.MustParsePrefix("10.0.0.0/20")
	holes := pfx("10.0.1.0/24", "10.0.7.128/25", "10.0.15.255/32", "10.0.9.0/28")
	got := Subtract(p, holes)
	for a := p.Addr(); p.Contains(a); a = a.Next() {
		inHole := slices.ContainsFunc(holes, func(h netip.Prefix) bool { return h.Contains(a) })
		in := slices.ContainsFunc(got, func(g netip.Prefix) bool { return g.Contains(a) })
		if in == inHole {
			t.Fatalf("%s: in the result %v, in a hole %v", a, in, inHole)
		}
	}
}
