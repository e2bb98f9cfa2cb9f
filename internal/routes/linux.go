//go:build linux

package routes

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/tomoe-net/tomoe/internal/identity"
)

const (
	// Table is the routing table that holds every route tomoe adds.
	// Configure empties it first: it is tomoe's alone.
	Table = 4610
	// Mark is the fwmark tomoe puts on its own underlay sockets
	// (WireGuard's UDP socket, bridge TCP connections) with SetSocketMark.
	// Marked packets bypass tomoe's rules and are routed as if tomoe were
	// not there, so the tunnel's own packets never enter the tunnel.
	Mark = 0x4610
)

// Interface is a configured TUN interface. Its methods are safe for
// concurrent use.
type Interface struct {
	name    string
	addr    netip.Addr
	ipv4    netip.Addr
	service netip.Addr
	uids    []uint32

	// mu guards everything below and the use of the sockets, once
	// Configure has returned the Interface.
	mu       sync.Mutex
	h        *netlink.Handle
	ruleSock map[int]*nl.SocketHandle // for rules, which h cannot encode
	link     netlink.Link
	routes   map[netip.Prefix]bool // routes in Table
	rules    []rule                // installed rules, in the order added
	host     Host                  // the host's own networks and addresses
	throws   map[netip.Prefix]bool // throw routes in Table (host.go)
	closed   bool

	// events carries the kernel's notices of route and address changes;
	// WatchHost reads it until watchDone is closed (by Close).
	events    *nl.NetlinkSocket
	watchDone chan struct{}
	watchers  sync.WaitGroup
}

// Configure gives the interface name its addresses and MTU, brings it up,
// routes fc00::/8 into it and installs tomoe's ip rules, replacing any
// that a tomoe which crashed left behind. It works in the network
// namespace of the calling thread, and the Interface keeps to that
// namespace whatever thread later calls it.
func Configure(name string, addr netip.Addr, mtu int, opts Options) (*Interface, error) {
	if !addr.Is6() || addr.Is4In6() || addr.Zone() != "" {
		return nil, fmt.Errorf("interface %s: node address %v is not an IPv6 address", name, addr)
	}
	if opts.IPv4.IsValid() && (!opts.IPv4.Is4() || opts.IPv4.IsUnspecified()) {
		return nil, fmt.Errorf("interface %s: overlay IPv4 address %v is not a unicast IPv4 address", name, opts.IPv4)
	}
	if opts.Service.IsValid() && (!opts.Service.Is6() || opts.Service.Is4In6() || opts.Service.Zone() != "" || opts.Service == addr) {
		return nil, fmt.Errorf("interface %s: service address %v is not an IPv6 address apart from the node address", name, opts.Service)
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("interface %s: netlink: %w", name, err)
	}
	sock, err := nl.GetNetlinkSocketAt(netns.None(), netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("interface %s: netlink: %w", name, err)
	}
	i := &Interface{
		name:     name,
		addr:     addr,
		ipv4:     opts.IPv4,
		service:  opts.Service,
		uids:     slices.Clone(opts.UIDs),
		h:        h,
		ruleSock: map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: sock}},
		routes:   make(map[netip.Prefix]bool),
		throws:   make(map[netip.Prefix]bool),
	}
	// Subscribed before the host is first read, so that no change
	// between the two goes unseen.
	if i.events, err = subscribeHost(); err != nil {
		i.Close()
		return nil, fmt.Errorf("interface %s: %w", name, err)
	}
	if err := i.configure(mtu); err != nil {
		i.Close()
		return nil, err
	}
	return i, nil
}

func (i *Interface) configure(mtu int) error {
	name := i.name
	link, err := i.h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("interface %s: %w", name, err)
	}
	i.link = link
	// A host that disables IPv6 by default disables it on new interfaces too.
	sysctl := filepath.Join("/proc/sys/net/ipv6/conf", name, "disable_ipv6")
	if b, err := os.ReadFile(sysctl); err == nil && len(b) > 0 && b[0] == '1' {
		if err := os.WriteFile(sysctl, []byte("0"), 0o644); err != nil {
			return fmt.Errorf("interface %s: enable IPv6: %w", name, err)
		}
	}
	// No link-local address: the overlay needs none, and without one the
	// kernel does not chatter (router solicitations, MLD) into the TUN.
	if err := os.WriteFile(filepath.Join("/proc/sys/net/ipv6/conf", name, "addr_gen_mode"), []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("interface %s: addr_gen_mode: %w", name, err)
	}
	if err := i.h.LinkSetMTU(link, mtu); err != nil {
		return fmt.Errorf("interface %s: set MTU %d: %w", name, mtu, err)
	}
	for _, a := range i.addrs() {
		if err := i.h.AddrAdd(link, a); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("interface %s: add address %s: %w", name, a.IPNet, err)
		}
	}
	if err := i.h.LinkSetUp(link); err != nil {
		return fmt.Errorf("interface %s: up: %w", name, err)
	}
	if err := i.deleteStaleRules(); err != nil {
		return err
	}
	if err := i.flushTable(); err != nil {
		return err
	}
	if i.host, err = i.listHost(); err != nil {
		return fmt.Errorf("interface %s: %w", name, err)
	}
	i.mu.Lock()
	err = i.syncRulesLocked(nil)
	i.mu.Unlock()
	if err != nil {
		return err
	}
	return i.AddRoute(identity.OverlayPrefix)
}

// addrs are the interface's addresses: the node address, the IPv4
// address if there is one, and the service address if there is one
// (deprecated: preferred lifetime 0, valid forever), each alone in its
// prefix. The kernel makes no route for them (beyond the local table's),
// as every route tomoe needs is in Table.
func (i *Interface) addrs() []*netlink.Addr {
	flags := unix.IFA_F_NOPREFIXROUTE |
		// A TUN has no neighbours to conflict with; skip duplicate
		// address detection so the address is usable at once.
		unix.IFA_F_NODAD
	out := []*netlink.Addr{{IPNet: ipNet(netip.PrefixFrom(i.addr, 128)), Flags: flags}}
	if i.ipv4.IsValid() {
		out = append(out, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(i.ipv4, 32)), Flags: flags})
	}
	if i.service.IsValid() {
		out = append(out, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(i.service, 128)), Flags: flags, PreferedLft: 0, ValidLft: validForever()})
	}
	return out
}

// flushTable deletes the routes in Table, which only a tomoe that
// crashed while its interface lived on (a persistent TUN) leaves.
func (i *Interface) flushTable() error {
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		routes, err := i.h.RouteListFiltered(fam, &netlink.Route{Table: Table}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("list routes in table %d: %w", Table, err)
		}
		for _, r := range routes {
			if err := i.h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("delete stale route %s from table %d: %w", r.Dst, Table, err)
			}
		}
	}
	return nil
}

// AddRoute points p (IPv4 or IPv6) at the interface, in table Table, and
// updates the ip rules it needs: a default route (0.0.0.0/0, ::/0) makes
// this host use an exit node.
func (i *Interface) AddRoute(p netip.Prefix) error {
	if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
		return fmt.Errorf("route %v: not an IPv4 or IPv6 prefix", p)
	}
	p = p.Masked()
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return fmt.Errorf("route %s: interface %s is closed", p, i.name)
	}
	if i.routes[p] {
		return nil
	}
	// Rules first: with UIDs, the rule that keeps other users off p must
	// be there before the route is; then the throw routes that keep the
	// host's own networks out of it.
	next := append(i.routeListLocked(), p)
	undo := func() {
		cur := i.routeListLocked()
		i.syncThrowsLocked(cur)
		i.syncRulesLocked(cur)
	}
	if err := i.syncRulesLocked(next); err != nil {
		undo()
		return fmt.Errorf("route %s: %w", p, err)
	}
	if err := i.syncThrowsLocked(next); err != nil {
		undo()
		return fmt.Errorf("route %s: %w", p, err)
	}
	if err := i.h.RouteAdd(i.route(p)); err != nil {
		undo()
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("route %s: table %d has it already (another tomoe running?): %w", p, Table, err)
		}
		return fmt.Errorf("route %s dev %s table %d: %w", p, i.name, Table, err)
	}
	i.routes[p] = true
	return nil
}

// DelRoute removes a route AddRoute added, and the rules only it needed.
func (i *Interface) DelRoute(p netip.Prefix) error {
	p = p.Masked()
	i.mu.Lock()
	defer i.mu.Unlock()
	if !i.routes[p] {
		return nil
	}
	delete(i.routes, p)
	var errs []error
	if err := i.h.RouteDel(i.route(p)); err != nil && !errors.Is(err, unix.ESRCH) {
		errs = append(errs, fmt.Errorf("delete route %s: %w", p, err))
	}
	if err := i.syncThrowsLocked(i.routeListLocked()); err != nil {
		errs = append(errs, fmt.Errorf("delete route %s: %w", p, err))
	}
	if err := i.syncRulesLocked(i.routeListLocked()); err != nil {
		errs = append(errs, fmt.Errorf("delete route %s: %w", p, err))
	}
	return errors.Join(errs...)
}

// Routes returns the prefixes routed into the interface, in order.
func (i *Interface) Routes() []netip.Prefix {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.routeListLocked()
}

func (i *Interface) routeListLocked() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(i.routes))
	for p := range i.routes {
		out = append(out, p)
	}
	slices.SortFunc(out, comparePrefix)
	return out
}

func (i *Interface) route(p netip.Prefix) *netlink.Route {
	r := &netlink.Route{
		LinkIndex: i.link.Attrs().Index,
		Dst:       ipNet(p),
		Scope:     netlink.SCOPE_UNIVERSE,
		Table:     Table,
	}
	if p.Addr().Is4() && i.ipv4.IsValid() {
		r.Src = i.ipv4.AsSlice()
	}
	return r
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Close removes the routes, the rules and the addresses. (Closing the TUN
// device removes the interface itself; this also leaves nothing behind
// when the device outlives us, e.g. a persistent TUN.) It is safe to call
// more than once.
func (i *Interface) Close() error {
	i.mu.Lock()
	if i.closed {
		i.mu.Unlock()
		return nil
	}
	i.closed = true
	if i.watchDone != nil {
		close(i.watchDone)
	}
	i.mu.Unlock()
	// WatchHost's goroutines take mu: stop them first.
	if i.events != nil {
		i.events.Close()
	}
	i.watchers.Wait()
	i.mu.Lock()
	defer i.mu.Unlock()
	var errs []error
	for _, p := range i.routeListLocked() {
		// ENODEV: the interface, and its routes with it, are gone.
		if err := i.h.RouteDel(i.route(p)); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", p, err))
		}
	}
	clear(i.routes)
	for p := range i.throws {
		if err := i.h.RouteDel(throwRoute(p)); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete throw route %s: %w", p, err))
		}
	}
	clear(i.throws)
	slices.SortStableFunc(i.rules, func(a, b rule) int { return rank(b) - rank(a) })
	for _, r := range i.rules {
		if err := i.delRule(r); err != nil {
			errs = append(errs, err)
		}
	}
	i.rules = nil
	if i.link != nil {
		for _, a := range i.addrs() {
			if err := i.h.AddrDel(i.link, a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete address %s: %w", a.IPNet, err))
			}
		}
	}
	i.h.Close()
	for _, s := range i.ruleSock {
		s.Close()
	}
	return errors.Join(errs...)
}

// Resolver returns a resolver whose DNS queries carry Mark (see
// SetSocketMark), for the names of the tunnel's own endpoints (static
// peers', bridges'): like the packets that carry the tunnel, the lookups
// that find where to send them must not enter it, or an exit node's
// default route would send them to the exit node (which may not be up, or
// may be the peer being looked up).
//
// It is Go's own resolver, reading /etc/resolv.conf and /etc/hosts; name
// services that only the C library reaches through nsswitch.conf (mDNS,
// LDAP) are not consulted. A local stub resolver (systemd-resolved on
// 127.0.0.53, dnsmasq) receives the marked query but sends its own queries
// upstream unmarked, so those follow the exit route.
func Resolver() *net.Resolver {
	d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = SetSocketMark(fd) }); err != nil {
			return err
		}
		return serr
	}}
	return &net.Resolver{PreferGo: true, Dial: d.DialContext}
}

// SetSocketMark puts Mark on the socket fd, so that its packets bypass
// tomoe's routes (see Mark). It needs CAP_NET_ADMIN. Call it from a
// syscall.RawConn's Control, as in a net.ListenConfig's or net.Dialer's
// Control function.
func SetSocketMark(fd uintptr) error {
	if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, Mark); err != nil {
		return fmt.Errorf("set SO_MARK %#x: %w", Mark, err)
	}
	return nil
}

// validForever is the valid lifetime "forever" (INFINITY_LIFE_TIME,
// 0xFFFFFFFF) as netlink.Addr's int field holds it. A 32-bit int (armv7)
// cannot, and the library sends no lifetimes for a value that is not
// positive: there it is the longest positive one, 68 years.
func validForever() int {
	var maxInt uint64 = math.MaxInt
	return int(min(maxInt, 0xFFFFFFFF))
}

// BindToDevice returns a socket Control function (net.ListenConfig's)
// that binds the socket to interface dev (SO_BINDTODEVICE): it then sees
// only traffic that arrives on dev, never a LAN neighbour's packets to the
// same address on a physical interface.
func BindToDevice(dev string) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), dev) })
		return errors.Join(err, serr)
	}
}
