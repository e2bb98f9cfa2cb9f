//go:build linux

package routes

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// The rule set follows the documented block, for each combination of
// users and routes that changes it.
func TestWantRules(t *testing.T) {
	tests := []struct {
		name   string
		uids   []uint32
		routes []netip.Prefix
		want   []string
	}{
		{
			name:   "overlay only",
			routes: prefixes("fc00::/8", "312::/64", "192.168.10.0/24"),
			want: []string{
				"ipv4 4610: not fwmark 0x4610 lookup 4610 suppress_prefixlength 0",
				"ipv6 4610: not fwmark 0x4610 lookup 4610 suppress_prefixlength 0",
			},
		},
		{
			name:   "IPv4 exit",
			routes: prefixes("fc00::/8", "0.0.0.0/0"),
			want: []string{
				"ipv4 4610: not fwmark 0x4610 lookup 4610 suppress_prefixlength 0",
				"ipv6 4610: not fwmark 0x4610 lookup 4610 suppress_prefixlength 0",
				"ipv4 4630: lookup 254 suppress_prefixlength 0",
				"ipv4 4640: not fwmark 0x4610 lookup 4610",
			},
		},
		{
			name:   "users, no routes yet",
			uids:   []uint32{65534},
			routes: nil,
			want: []string{
				"ipv4 4699: nop",
				"ipv6 4699: nop",
				"ipv4 4600: fwmark 0x4610 goto 4699",
				"ipv6 4600: fwmark 0x4610 goto 4699",
				"ipv4 4610: uidrange 0-0 lookup 4610 suppress_prefixlength 0",
				"ipv4 4610: uidrange 65534-65534 lookup 4610 suppress_prefixlength 0",
				"ipv6 4610: uidrange 0-0 lookup 4610 suppress_prefixlength 0",
				"ipv6 4610: uidrange 65534-65534 lookup 4610 suppress_prefixlength 0",
				"ipv6 4620: to 300::/8 unreachable",
				"ipv6 4620: to fc00::/8 unreachable",
			},
		},
		{
			name:   "users, routes and an IPv6 exit",
			uids:   []uint32{1000, 0, 65534, 1000},
			routes: prefixes("fc00::/8", "312::/64", "192.168.10.0/24", "192.168.10.7/32", "10.99.0.7/32", "::/0", "2001:db8::/32"),
			want: []string{
				"ipv4 4699: nop",
				"ipv6 4699: nop",
				"ipv4 4600: fwmark 0x4610 goto 4699",
				"ipv6 4600: fwmark 0x4610 goto 4699",
				"ipv4 4610: uidrange 0-0 lookup 4610 suppress_prefixlength 0",
				"ipv4 4610: uidrange 1000-1000 lookup 4610 suppress_prefixlength 0",
				"ipv4 4610: uidrange 65534-65534 lookup 4610 suppress_prefixlength 0",
				"ipv6 4610: uidrange 0-0 lookup 4610 suppress_prefixlength 0",
				"ipv6 4610: uidrange 1000-1000 lookup 4610 suppress_prefixlength 0",
				"ipv6 4610: uidrange 65534-65534 lookup 4610 suppress_prefixlength 0",
				"ipv4 4620: to 10.99.0.7/32 unreachable",
				"ipv4 4620: to 192.168.10.0/24 unreachable",
				"ipv6 4620: to 300::/8 unreachable",
				"ipv6 4620: to 2001:db8::/32 unreachable",
				"ipv6 4620: to fc00::/8 unreachable",
				"ipv6 4630: lookup 254 suppress_prefixlength 0",
				"ipv6 4640: uidrange 0-0 lookup 4610",
				"ipv6 4640: uidrange 1000-1000 lookup 4610",
				"ipv6 4640: uidrange 65534-65534 lookup 4610",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, r := range wantRules(tt.uids, tt.routes, nil) {
				got = append(got, r.String())
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// A host network gets a throw route when it lies strictly inside a route
// in Table, never in the overlay's spaces; other users' unreachable rules
// leave it out.
func TestThrowsFor(t *testing.T) {
	routes := prefixes("fc00::/8", "312::/64", "192.168.0.0/16", "10.1.0.0/16", "0.0.0.0/0", "2001:db8::/32")
	nets := prefixes("192.168.1.0/24", "192.168.1.1/32", "10.1.0.0/16", "10.0.0.0/8", "203.0.113.0/24", "fc00:1::/64", "312::/64", "2001:db8:1::/64", "fd00::/64")
	got := throwsFor(routes, nets)
	want := prefixes("192.168.1.0/24", "192.168.1.1/32", "10.0.0.0/8", "203.0.113.0/24", "2001:db8:1::/64")
	if !slices.Equal(got, want) {
		t.Errorf("throwsFor = %v, want %v", got, want)
	}
	var rules []string
	for _, r := range wantRules([]uint32{1000}, prefixes("192.168.0.0/22"), prefixes("192.168.1.0/24")) {
		if r.action == unreachable && r.family == unix.AF_INET {
			rules = append(rules, r.String())
		}
	}
	if got, want := strings.Join(rules, "\n"), "ipv4 4620: to 192.168.0.0/24 unreachable\nipv4 4620: to 192.168.2.0/23 unreachable"; got != want {
		t.Errorf("unreachable rules with a host network inside a route:\n%s\nwant:\n%s", got, want)
	}
}
