// Package routes owns what tomoe changes in the host's network
// configuration in kernel mode: the overlay address and MTU of the TUN
// interface and the routes that point at it. Only the overlay prefix
// fc00::/8 and the site prefixes of peers are routed into the TUN (DESIGN.md
// principle 6); Close removes everything it added.
package routes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// Interface is a configured TUN interface.
type Interface struct {
	name string
	link netlink.Link
	addr netip.Addr

	mu     sync.Mutex // guards routes
	routes map[netip.Prefix]bool
}

// Configure gives the interface name its node address, MTU and the route
// for fc00::/8, and brings it up.
func Configure(name string, addr netip.Addr, mtu int) (*Interface, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", name, err)
	}
	// A host that disables IPv6 by default disables it on new interfaces too.
	sysctl := filepath.Join("/proc/sys/net/ipv6/conf", name, "disable_ipv6")
	if b, err := os.ReadFile(sysctl); err == nil && len(b) > 0 && b[0] == '1' {
		if err := os.WriteFile(sysctl, []byte("0"), 0o644); err != nil {
			return nil, fmt.Errorf("interface %s: enable IPv6: %w", name, err)
		}
	}
	// No link-local address: the overlay needs none, and without one the
	// kernel does not chatter (router solicitations, MLD) into the TUN.
	if err := os.WriteFile(filepath.Join("/proc/sys/net/ipv6/conf", name, "addr_gen_mode"), []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("interface %s: addr_gen_mode: %w", name, err)
	}
	if err := netlink.LinkSetMTU(link, mtu); err != nil {
		return nil, fmt.Errorf("interface %s: set MTU %d: %w", name, mtu, err)
	}
	na := &netlink.Addr{
		IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(128, 128)},
		// A TUN has no neighbours to conflict with; skip duplicate address
		// detection so the address is usable at once.
		Flags: unix.IFA_F_NODAD,
	}
	if err := netlink.AddrAdd(link, na); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("interface %s: add address %s: %w", name, addr, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("interface %s: up: %w", name, err)
	}
	i := &Interface{name: name, link: link, addr: addr, routes: make(map[netip.Prefix]bool)}
	if err := i.AddRoute(identity.OverlayPrefix); err != nil {
		i.Close()
		return nil, err
	}
	return i, nil
}

// AddRoute points p at the interface.
func (i *Interface) AddRoute(p netip.Prefix) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.routes[p] {
		return nil
	}
	r := i.route(p)
	if err := netlink.RouteAdd(r); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("route %s: the host already routes it elsewhere (another overlay network?): %w", p, err)
		}
		return fmt.Errorf("route %s dev %s: %w", p, i.name, err)
	}
	i.routes[p] = true
	return nil
}

// DelRoute removes a route AddRoute added.
func (i *Interface) DelRoute(p netip.Prefix) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if !i.routes[p] {
		return nil
	}
	delete(i.routes, p)
	if err := netlink.RouteDel(i.route(p)); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("delete route %s: %w", p, err)
	}
	return nil
}

// Routes returns the prefixes routed into the interface.
func (i *Interface) Routes() []netip.Prefix {
	i.mu.Lock()
	defer i.mu.Unlock()
	out := make([]netip.Prefix, 0, len(i.routes))
	for p := range i.routes {
		out = append(out, p)
	}
	return out
}

func (i *Interface) route(p netip.Prefix) *netlink.Route {
	return &netlink.Route{
		LinkIndex: i.link.Attrs().Index,
		Dst:       &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
		Scope:     netlink.SCOPE_UNIVERSE,
	}
}

// Close removes the routes and the address. (Closing the TUN device
// removes the interface itself; this also leaves nothing behind when the
// device outlives us, e.g. a persistent TUN.)
func (i *Interface) Close() error {
	i.mu.Lock()
	routes := make([]netip.Prefix, 0, len(i.routes))
	for p := range i.routes {
		routes = append(routes, p)
	}
	i.mu.Unlock()
	var errs []error
	for _, p := range routes {
		if err := i.DelRoute(p); err != nil {
			errs = append(errs, err)
		}
	}
	na := &netlink.Addr{IPNet: &net.IPNet{IP: i.addr.AsSlice(), Mask: net.CIDRMask(128, 128)}}
	if err := netlink.AddrDel(i.link, na); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENODEV) {
		errs = append(errs, fmt.Errorf("delete address: %w", err))
	}
	return errors.Join(errs...)
}
