package nat

import (
	"net/netip"
	"testing"

	"github.com/tomoe-net/tomoe/internal/identity"
)

func TestPlausible(t *testing.T) {
	node := identity.PublicKey{7}.Address()
	for _, c := range []struct {
		ep             string
		want, loopback bool // plausible from a remote bridge; from one on this host
	}{
		{"198.51.100.7:4610", true, true},
		{"10.0.0.5:4610", true, true},
		{"[2001:db8::5]:4610", true, true},
		{"[::ffff:198.51.100.7]:4610", true, true},
		{"127.0.0.1:22", false, true},
		{"127.9.9.9:4610", false, true},
		{"[::1]:4610", false, true},
		{"[::ffff:127.0.0.1]:4610", false, true},
		{"10.0.0.5:0", false, false},
		{"0.0.0.0:4610", false, false},
		{"0.1.2.3:4610", false, false},
		{"[::]:4610", false, false},
		{"224.0.0.251:5353", false, false},
		{"239.255.255.250:1900", false, false},
		{"[ff02::1]:4610", false, false},
		{"255.255.255.255:4610", false, false},
		{"169.254.169.254:80", false, false},
		{"[fe80::1]:4610", false, false},
		{netip.AddrPortFrom(node, 4610).String(), false, false},
		{"[300:1:2:3::1]:4610", false, false},
	} {
		ep := netip.MustParseAddrPort(c.ep)
		if got := Plausible(ep, false); got != c.want {
			t.Errorf("Plausible(%s) = %v, want %v", ep, got, c.want)
		}
		if got := Plausible(ep, true); got != c.loopback {
			t.Errorf("Plausible(%s, from a bridge on this host) = %v, want %v", ep, got, c.loopback)
		}
	}
	if got := Plausible(netip.AddrPort{}, true); got {
		t.Error("the zero endpoint is plausible")
	}
}
