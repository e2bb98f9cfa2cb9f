package routes

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

const goos = "darwin"

// configureOS gives the utun interface its addresses and MTU and brings
// it up, as wg-quick does on macOS.
func configureOS(name string, addr, ipv4 netip.Addr, mtu int) error {
	if err := run("ifconfig", name, "inet6", addr.String(), "prefixlen", "128", "alias"); err != nil {
		return err
	}
	if ipv4.IsValid() {
		// A utun is point to point: the destination is the address itself.
		if err := run("ifconfig", name, "inet", ipv4.String()+"/32", ipv4.String(), "alias"); err != nil {
			return err
		}
	}
	if err := run("ifconfig", name, "mtu", fmt.Sprint(mtu)); err != nil {
		return err
	}
	return run("ifconfig", name, "up")
}

// routeOS adds or deletes the route of p into the interface.
func routeOS(add bool, name string, p netip.Prefix) error {
	op := "delete"
	if add {
		op = "add"
	}
	fam := "-inet6"
	if p.Addr().Is4() {
		fam = "-inet"
	}
	return run("route", "-q", "-n", op, fam, p.String(), "-interface", name)
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
