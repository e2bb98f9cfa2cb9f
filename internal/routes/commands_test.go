package routes

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestCommands: the command lines that configure a utun (macOS) and a
// Wintun adapter (Windows), as wg-quick and netsh's documentation write
// them. They run only there (not here): this pins what they are.
func TestCommands(t *testing.T) {
	addr := netip.MustParseAddr("fc12:3456:789a::1")
	v4 := netip.MustParseAddr("10.99.0.2")
	join := func(cmds [][]string) []string {
		var out []string
		for _, c := range cmds {
			out = append(out, strings.Join(c, " "))
		}
		return out
	}
	for _, tc := range []struct {
		name string
		got  []string
		want []string
	}{
		{"darwin with ipv4", join(darwinConfigure("utun5", addr, v4, 1400)), []string{
			"ifconfig utun5 inet6 fc12:3456:789a::1 prefixlen 128 alias",
			"ifconfig utun5 inet 10.99.0.2/32 10.99.0.2 alias",
			"ifconfig utun5 mtu 1400",
			"ifconfig utun5 up",
		}},
		{"darwin without", join(darwinConfigure("utun5", addr, netip.Addr{}, 1280)), []string{
			"ifconfig utun5 inet6 fc12:3456:789a::1 prefixlen 128 alias",
			"ifconfig utun5 mtu 1280",
			"ifconfig utun5 up",
		}},
		{"darwin routes", join([][]string{
			darwinRoute(true, "utun5", netip.MustParsePrefix("fc00::/8")),
			darwinRoute(false, "utun5", netip.MustParsePrefix("10.99.0.7/32")),
		}), []string{
			"route -q -n add -inet6 fc00::/8 -interface utun5",
			"route -q -n delete -inet 10.99.0.7/32 -interface utun5",
		}},
		{"windows with ipv4", join(netshConfigure("tomoe0", addr, v4, 1400)), []string{
			"netsh interface ipv6 add address interface=tomoe0 address=fc12:3456:789a::1/128 store=active",
			"netsh interface ipv6 set subinterface tomoe0 mtu=1400 store=active",
			"netsh interface ipv4 add address name=tomoe0 address=10.99.0.2 mask=255.255.255.255 store=active",
			"netsh interface ipv4 set subinterface tomoe0 mtu=1400 store=active",
		}},
		{"windows routes", join([][]string{
			netshRoute(true, "tomoe0", netip.MustParsePrefix("0312:3456:789a:bcde::/64")),
			netshRoute(false, "tomoe0", netip.MustParsePrefix("10.99.0.7/32")),
		}), []string{
			"netsh interface ipv6 add route prefix=312:3456:789a:bcde::/64 interface=tomoe0 store=active",
			"netsh interface ipv4 delete route prefix=10.99.0.7/32 interface=tomoe0",
		}},
	} {
		if !slices.Equal(tc.got, tc.want) {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, tc.got, tc.want)
		}
	}
}
