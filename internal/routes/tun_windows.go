package routes

import (
	"net/netip"
	"syscall"
)

const goos = "windows"

// configureOS gives the interface its addresses and MTU (netshConfigure).
func configureOS(name string, addr, ipv4 netip.Addr, mtu int) error {
	for _, cmd := range netshConfigure(name, addr, ipv4, mtu) {
		if err := run(cmd[0], cmd[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// routeOS adds or deletes the route of p into the interface (netshRoute).
func routeOS(add bool, name string, p netip.Prefix) error {
	cmd := netshRoute(add, name, p)
	return run(cmd[0], cmd[1:]...)
}

// bindToDevice does nothing on Windows, which receives on the strong host
// model by default (a packet is taken only on the interface that holds its
// destination address; RFC 1122's strong ES model, the default since
// Windows Vista for interfaces that do not forward), so a socket bound to
// the node address already sees only what arrives on the adapter.
func bindToDevice(dev, network string, c syscall.RawConn) error { return nil }
