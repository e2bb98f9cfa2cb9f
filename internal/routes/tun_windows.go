package routes

import (
	"fmt"
	"net/netip"
	"syscall"
)

const goos = "windows"

// configureOS gives the Wintun adapter its addresses and MTU with netsh
// (the adapter is up once created).
func configureOS(name string, addr, ipv4 netip.Addr, mtu int) error {
	ifc := "interface=" + name
	if err := run("netsh", "interface", "ipv6", "add", "address", ifc, "address="+addr.String()+"/128", "store=active"); err != nil {
		return err
	}
	if err := run("netsh", "interface", "ipv6", "set", "subinterface", name, fmt.Sprintf("mtu=%d", mtu), "store=active"); err != nil {
		return err
	}
	if ipv4.IsValid() {
		if err := run("netsh", "interface", "ipv4", "add", "address", "name="+name, "address="+ipv4.String(), "mask=255.255.255.255", "store=active"); err != nil {
			return err
		}
		if err := run("netsh", "interface", "ipv4", "set", "subinterface", name, fmt.Sprintf("mtu=%d", mtu), "store=active"); err != nil {
			return err
		}
	}
	return nil
}

// routeOS adds or deletes the route of p into the adapter.
func routeOS(add bool, name string, p netip.Prefix) error {
	op := "delete"
	if add {
		op = "add"
	}
	fam := "ipv6"
	if p.Addr().Is4() {
		fam = "ipv4"
	}
	args := []string{"interface", fam, op, "route", "prefix=" + p.String(), "interface=" + name}
	if add {
		args = append(args, "store=active")
	}
	return run("netsh", args...)
}

// bindToDevice does nothing on Windows, which receives on the strong host
// model by default (a packet is taken only on the interface that holds its
// destination address; RFC 1122's strong ES model, the default since
// Windows Vista for interfaces that do not forward), so a socket bound to
// the node address already sees only what arrives on the adapter.
func bindToDevice(dev, network string, c syscall.RawConn) error { return nil }
