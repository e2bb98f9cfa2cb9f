package routes

import (
	"fmt"
	"net/netip"
)

// The system tools' command lines that configure a TUN off Linux (see
// other.go), apart so that a test on any system can read them.

// darwinConfigure gives a macOS utun its addresses and MTU and brings it
// up, as wg-quick does on macOS: a utun is point to point, so an IPv4
// address needs a destination (itself).
func darwinConfigure(name string, addr, ipv4 netip.Addr, mtu int) [][]string {
	cmds := [][]string{{"ifconfig", name, "inet6", addr.String(), "prefixlen", "128", "alias"}}
	if ipv4.IsValid() {
		cmds = append(cmds, []string{"ifconfig", name, "inet", ipv4.String() + "/32", ipv4.String(), "alias"})
	}
	return append(cmds, []string{"ifconfig", name, "mtu", fmt.Sprint(mtu)}, []string{"ifconfig", name, "up"})
}

// darwinRoute adds or deletes the route of p into the utun.
func darwinRoute(add bool, name string, p netip.Prefix) []string {
	op, fam := "delete", "-inet6"
	if add {
		op = "add"
	}
	if p.Addr().Is4() {
		fam = "-inet"
	}
	return []string{"route", "-q", "-n", op, fam, p.String(), "-interface", name}
}

// netshConfigure gives a Wintun adapter its addresses and MTU (it is up
// once created). store=active: nothing outlives the adapter.
func netshConfigure(name string, addr, ipv4 netip.Addr, mtu int) [][]string {
	cmds := [][]string{
		{"netsh", "interface", "ipv6", "add", "address", "interface=" + name, "address=" + addr.String() + "/128", "store=active"},
		{"netsh", "interface", "ipv6", "set", "subinterface", name, fmt.Sprintf("mtu=%d", mtu), "store=active"},
	}
	if ipv4.IsValid() {
		cmds = append(cmds,
			[]string{"netsh", "interface", "ipv4", "add", "address", "name=" + name, "address=" + ipv4.String(), "mask=255.255.255.255", "store=active"},
			[]string{"netsh", "interface", "ipv4", "set", "subinterface", name, fmt.Sprintf("mtu=%d", mtu), "store=active"})
	}
	return cmds
}

// netshRoute adds or deletes the route of p into the adapter.
func netshRoute(add bool, name string, p netip.Prefix) []string {
	op, fam := "delete", "ipv6"
	if add {
		op = "add"
	}
	if p.Addr().Is4() {
		fam = "ipv4"
	}
	cmd := []string{"netsh", "interface", fam, op, "route", "prefix=" + p.String(), "interface=" + name}
	if add {
		cmd = append(cmd, "store=active")
	}
	return cmd
}
