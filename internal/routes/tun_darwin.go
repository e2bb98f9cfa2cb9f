package routes

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

const goos = "darwin"

// configureOS gives the interface its addresses and MTU (darwinConfigure).
func configureOS(name string, addr, ipv4 netip.Addr, mtu int) error {
	for _, cmd := range darwinConfigure(name, addr, ipv4, mtu) {
		if err := run(cmd[0], cmd[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// routeOS adds or deletes the route of p into the interface (darwinRoute).
func routeOS(add bool, name string, p netip.Prefix) error {
	cmd := darwinRoute(add, name, p)
	return run(cmd[0], cmd[1:]...)
}

// bindToDevice binds the socket to interface dev with IP_BOUND_IF or
// IPV6_BOUND_IF: it then receives only what arrives on dev (macOS takes
// packets for any of its addresses on any interface otherwise).
func bindToDevice(dev, network string, c syscall.RawConn) error {
	ifc, err := net.InterfaceByName(dev)
	if err != nil {
		return fmt.Errorf("bind to interface %s: %w", dev, err)
	}
	var serr error
	err = c.Control(func(fd uintptr) {
		switch network {
		case "tcp4", "udp4":
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BOUND_IF, ifc.Index)
		default:
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_BOUND_IF, ifc.Index)
		}
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("bind to interface %s: %w", dev, serr)
	}
	return nil
}
