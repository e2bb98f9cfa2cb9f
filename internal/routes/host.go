//go:build linux

package routes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// The host's own networks. A route in Table is consulted before the main
// table (rule 4610), so a tunnelled 192.168.0.0/16 would otherwise take
// the host's own LAN 192.168.1.0/24, its router and whatever it reaches
// through it. For every network of the host that lies inside a route in
// Table, Table holds a throw route: the kernel's lookup in Table stops
// there and goes on with the next rules, down to the main table, exactly
// as if tomoe were not there. The Interface follows the host's routes and
// addresses (netlink notifications), so a host that moves to another LAN
// keeps it, and gets back the part of the tunnelled route its old LAN
// took.

// Host returns the host's networks and addresses as last seen (at
// Configure, then at each change WatchHost saw).
func (i *Interface) Host() Host {
	i.mu.Lock()
	defer i.mu.Unlock()
	return Host{Networks: slices.Clone(i.host.Networks), Addrs: slices.Clone(i.host.Addrs)}
}

// listHost reads the host's networks and addresses from the kernel.
func (i *Interface) listHost() (Host, error) {
	var h Host
	tun := i.link.Attrs().Index
	routes, err := i.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return Host{}, fmt.Errorf("list the main table's routes: %w", err)
	}
	gateway := func(gw net.IP, link int) {
		if a, ok := netip.AddrFromSlice(gw); ok && link != tun && hostUnicast(a.Unmap()) {
			a = a.Unmap()
			h.Networks = append(h.Networks, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	for _, r := range routes {
		if r.Type != unix.RTN_UNICAST {
			continue
		}
		gateway(r.Gw, r.LinkIndex)
		for _, nh := range r.MultiPath {
			gateway(nh.Gw, nh.LinkIndex)
		}
		if r.Gw != nil || len(r.MultiPath) > 0 || r.LinkIndex == tun || r.Dst == nil {
			continue
		}
		p, ok := prefixOf(r.Dst)
		if ok && p.Bits() > 0 && hostUnicast(p.Addr()) {
			h.Networks = append(h.Networks, p)
		}
	}
	addrs, err := i.h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return Host{}, fmt.Errorf("list the host's addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && a.LinkIndex != tun && hostUnicast(ip.Unmap()) && !ip.IsLoopback() {
			h.Addrs = append(h.Addrs, ip.Unmap())
		}
	}
	slices.SortFunc(h.Networks, comparePrefix)
	h.Networks = slices.Compact(h.Networks)
	slices.SortFunc(h.Addrs, netip.Addr.Compare)
	h.Addrs = slices.Compact(h.Addrs)
	return h, nil
}

// hostUnicast reports whether a can be part of a network tomoe might
// tunnel (see offers.Routable).
func hostUnicast(a netip.Addr) bool {
	return a.IsValid() && !a.IsUnspecified() && !a.IsMulticast() && !a.IsLinkLocalUnicast()
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, bits := n.Mask.Size()
	if bits != a.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones).Masked(), true
}

// throwsFor are the host networks (nets) that lie inside one of routes:
// each gets a throw route in Table. A network that overlaps the overlay's
// spaces gets none (node addresses and site prefixes route by key, and
// win), and a route that lies inside a host network, or is one, is the
// caller's to refuse: a throw route cannot take all of it.
func throwsFor(routes, nets []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, h := range nets {
		if h.Overlaps(identity.OverlayPrefix) || h.Overlaps(identity.SitePrefixSpace) || slices.Contains(routes, h) {
			continue
		}
		if slices.ContainsFunc(routes, func(p netip.Prefix) bool {
			return p.Addr().BitLen() == h.Addr().BitLen() && p.Bits() < h.Bits() && p.Contains(h.Addr())
		}) {
			out = append(out, h)
		}
	}
	return out
}

func throwRoute(p netip.Prefix) *netlink.Route {
	return &netlink.Route{Dst: ipNet(p), Table: Table, Type: unix.RTN_THROW}
}

// syncThrowsLocked makes the throw routes in Table those that routes and
// the host's networks need.
func (i *Interface) syncThrowsLocked(routes []netip.Prefix) error {
	want := throwsFor(routes, i.host.Networks)
	var errs []error
	for p := range i.throws {
		if slices.Contains(want, p) {
			continue
		}
		if err := i.h.RouteDel(throwRoute(p)); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete throw route %s from table %d: %w", p, Table, err))
			continue
		}
		delete(i.throws, p)
	}
	for _, p := range want {
		if i.throws[p] {
			continue
		}
		if err := i.h.RouteAdd(throwRoute(p)); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("add throw route %s to table %d (the host's own network): %w", p, Table, err))
			continue
		}
		i.throws[p] = true
	}
	return errors.Join(errs...)
}

// refreshHostLocked reads the host's networks and addresses and, if they
// changed, updates the throw routes and the rules. It reports whether
// they changed.
func (i *Interface) refreshHostLocked() (bool, error) {
	h, err := i.listHost()
	if err != nil {
		return false, err
	}
	if h.equal(i.host) {
		return false, nil
	}
	i.host = h
	routes := i.routeListLocked()
	return true, errors.Join(i.syncThrowsLocked(routes), i.syncRulesLocked(routes))
}

// hostGroups are the netlink multicast groups whose messages say the
// host's routes or addresses changed.
var hostGroups = []uint{unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV6_IFADDR, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE}

// WatchHost follows the host's routes and addresses: after each change
// of its networks or addresses it updates the throw routes and the rules,
// then calls f with the new Host (err nil), or with the error that kept it
// from doing so (after a failed read it goes on watching; after the
// notifications themselves fail, nothing more comes). f runs on one
// goroutine, one call at a time; it must not call Close, which stops the
// watching and waits for f to return. WatchHost may be called once.
func (i *Interface) WatchHost(f func(Host, error)) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return fmt.Errorf("interface %s is closed", i.name)
	}
	if i.watchDone != nil {
		return errors.New("WatchHost called twice")
	}
	i.watchDone = make(chan struct{})
	changed := make(chan struct{}, 1)
	failed := make(chan error, 1)
	signal := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	i.watchers.Add(2)
	// The reader only signals; the worker reads the host's state (changes
	// that come while it does so coalesce into one more read) and calls f.
	go func() {
		defer i.watchers.Done()
		for {
			msgs, _, err := i.events.Receive()
			select {
			case <-i.watchDone:
				return
			default:
			}
			switch {
			case errors.Is(err, unix.ENOBUFS):
				signal() // notifications were lost: read it all again
			case err != nil:
				failed <- fmt.Errorf("follow the host's routes: %w", err)
				return
			case len(msgs) > 0:
				signal()
			}
		}
	}()
	go func() {
		defer i.watchers.Done()
		for {
			select {
			case <-i.watchDone:
				return
			case err := <-failed:
				f(Host{}, err)
				continue
			case <-changed:
			}
			i.mu.Lock()
			if i.closed {
				i.mu.Unlock()
				return
			}
			var changedHost bool
			var err error
			for range 3 { // a dump interrupted by a change is tried again
				if changedHost, err = i.refreshHostLocked(); !errors.Is(err, netlink.ErrDumpInterrupted) {
					break
				}
			}
			h := Host{Networks: slices.Clone(i.host.Networks), Addrs: slices.Clone(i.host.Addrs)}
			i.mu.Unlock()
			if err != nil {
				f(Host{}, err)
			} else if changedHost {
				f(h, nil)
			}
		}
	}()
	return nil
}

// subscribeHost opens the socket WatchHost reads, in the namespace of the
// calling thread (Configure's).
func subscribeHost() (*nl.NetlinkSocket, error) {
	s, err := nl.Subscribe(unix.NETLINK_ROUTE, hostGroups...)
	if err != nil {
		return nil, fmt.Errorf("subscribe to route and address changes: %w", err)
	}
	return s, nil
}
