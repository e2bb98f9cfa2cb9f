// Package routes owns what tomoe changes in the host's network
// configuration in kernel mode: the addresses and MTU of the TUN
// interface, the routes that point at it, and the ip rules that select
// those routes. Only the overlay prefix fc00::/8, the site prefixes of
// peers and the tunnelled routes this node accepts are routed into the TUN
// (DESIGN.md principle 6), all in table Table, which tomoe's ip rules
// (rules.go) consult ahead of the main table, except where the host's own
// networks lie (host.go). Close removes everything it added.
//
// That is Linux (netlink, linux.go and the files built with it). On macOS
// and Windows (other.go) an Interface gives the TUN its addresses and routes
// with the system's own tools (ifconfig and route, netsh), with none of
// Linux's policy routing: no table of tomoe's own, no throw routes for the
// host's networks, no fwmark on the underlay, no per-user rules. So the
// config refuses what depends on those there (config/platform.go), and
// only fc00::/8, site prefixes and the overlay's own IPv4 addresses are
// routed, which no underlay path can take. Elsewhere Configure says that
// kernel mode is not supported.
package routes

import (
	"net/netip"
	"slices"
)

// Options are the optional parts of the interface's configuration.
type Options struct {
	// IPv4 is this node's IPv4 address on the overlay, if it has one. It
	// is added to the interface as a /32, and the kernel sources IPv4
	// traffic through the interface from it. Without it, IPv4 routes
	// still work, but the kernel picks a source address of another
	// interface, which peers will not accept.
	IPv4 netip.Addr
	// UIDs, if not empty, are the only users (besides uid 0) whose
	// sockets use tomoe's routes; everyone else gets "network
	// unreachable" for them. See the rule block in rules.go.
	UIDs []uint32
	// Service, if valid, is an IPv6 address of a service of this host
	// on the interface (the node's DNS server): added deprecated, so
	// that the kernel never picks it as the source of the host's
	// traffic (RFC 6724 rule 3, before longest match), only sockets
	// bound to it use it. Its local route makes it reachable from the
	// host itself; nothing routes it anywhere else.
	Service netip.Addr
}

// Host is what the host reaches without tomoe.
type Host struct {
	// Networks are the host's own networks: the destinations of the main
	// table's routes without a gateway (its connected networks and other
	// links' routes), and the gateways of the main table's routes as /32
	// or /128, on interfaces other than tomoe's. Default routes,
	// link-local and multicast prefixes are left out. Sorted.
	Networks []netip.Prefix
	// Addrs are the host's own addresses on interfaces other than
	// tomoe's, without loopback, link-local and multicast ones. Sorted.
	Addrs []netip.Addr
}

func (h Host) equal(o Host) bool {
	return slices.Equal(h.Networks, o.Networks) && slices.Equal(h.Addrs, o.Addrs)
}
