//go:build !linux

package routes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
)

// Mark is 0 off Linux: there is no fwmark, and nothing to mark for, since
// the routes this package adds there (fc00::/8, site prefixes, overlay
// IPv4 /32s) never cover an underlay endpoint.
const Mark = 0

// Interface is a configured TUN interface (see the package doc for what
// it does off Linux). Its methods are safe for concurrent use.
type Interface struct {
	name string
	addr netip.Addr
	ipv4 netip.Addr

	// mu guards everything below.
	mu     sync.Mutex
	routes map[netip.Prefix]bool
	host   Host
	closed bool
}

// Configure gives the interface name its addresses and MTU, brings it up
// and routes fc00::/8 into it, with the system's tools (ifconfig and
// route on macOS, netsh on Windows). Options.UIDs and Options.Service
// need Linux and are refused.
func Configure(name string, addr netip.Addr, mtu int, opts Options) (*Interface, error) {
	if !addr.Is6() || addr.Is4In6() || addr.Zone() != "" {
		return nil, fmt.Errorf("interface %s: node address %v is not an IPv6 address", name, addr)
	}
	if opts.IPv4.IsValid() && (!opts.IPv4.Is4() || opts.IPv4.IsUnspecified()) {
		return nil, fmt.Errorf("interface %s: overlay IPv4 address %v is not a unicast IPv4 address", name, opts.IPv4)
	}
	if len(opts.UIDs) > 0 {
		return nil, fmt.Errorf("interface %s: restricting the overlay to some local users needs Linux's uid routing rules, not available on %s", name, goos)
	}
	if opts.Service.IsValid() {
		return nil, fmt.Errorf("interface %s: the overlay DNS server's address needs Linux, not available on %s", name, goos)
	}
	i := &Interface{name: name, addr: addr, ipv4: opts.IPv4, routes: make(map[netip.Prefix]bool)}
	if err := configureOS(name, addr, opts.IPv4, mtu); err != nil {
		return nil, fmt.Errorf("interface %s: %w", name, err)
	}
	i.host = listHost(name)
	if err := i.AddRoute(overlay); err != nil {
		i.Close()
		return nil, err
	}
	return i, nil
}

// overlay is the node address space, routed into the TUN.
var overlay = netip.MustParsePrefix("fc00::/8")

// AddRoute routes p into the interface.
func (i *Interface) AddRoute(p netip.Prefix) error {
	p = p.Masked()
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return fmt.Errorf("interface %s is closed", i.name)
	}
	if i.routes[p] {
		return nil
	}
	if err := routeOS(true, i.name, p); err != nil {
		return fmt.Errorf("add route %s: %w", p, err)
	}
	i.routes[p] = true
	return nil
}

// DelRoute removes a route AddRoute added; one it did not add is no error.
func (i *Interface) DelRoute(p netip.Prefix) error {
	p = p.Masked()
	i.mu.Lock()
	defer i.mu.Unlock()
	if !i.routes[p] {
		return nil
	}
	delete(i.routes, p)
	if err := routeOS(false, i.name, p); err != nil {
		return fmt.Errorf("delete route %s: %w", p, err)
	}
	return nil
}

// Routes returns the routes in the interface, sorted.
func (i *Interface) Routes() []netip.Prefix {
	i.mu.Lock()
	defer i.mu.Unlock()
	out := make([]netip.Prefix, 0, len(i.routes))
	for p := range i.routes {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}

// Host returns the host's networks and addresses as read at Configure.
func (i *Interface) Host() Host {
	i.mu.Lock()
	defer i.mu.Unlock()
	return Host{Networks: slices.Clone(i.host.Networks), Addrs: slices.Clone(i.host.Addrs)}
}

// WatchHost does not follow the host off Linux: there are no throw
// routes to keep up to date, and Host stays as Configure read it. f is
// never called.
func (i *Interface) WatchHost(f func(Host, error)) error { return nil }

// Close removes the routes it added. The addresses go with the TUN
// device. It is safe to call more than once.
func (i *Interface) Close() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return nil
	}
	i.closed = true
	var errs []error
	for p := range i.routes {
		if err := routeOS(false, i.name, p); err != nil {
			errs = append(errs, fmt.Errorf("delete route %s: %w", p, err))
		}
	}
	clear(i.routes)
	return errors.Join(errs...)
}

// listHost reads the host's addresses and connected networks from its
// interfaces other than name (no gateways: the portable interface list
// has none). Errors leave it empty.
func listHost(name string) Host {
	var h Host
	ifs, err := net.Interfaces()
	if err != nil {
		return h
	}
	for _, ifc := range ifs {
		if ifc.Name == name {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() || ip.IsUnspecified() {
				continue
			}
			ones, _ := ipn.Mask.Size()
			h.Addrs = append(h.Addrs, ip)
			h.Networks = append(h.Networks, netip.PrefixFrom(ip, ones).Masked())
		}
	}
	slices.SortFunc(h.Addrs, netip.Addr.Compare)
	h.Addrs = slices.Compact(h.Addrs)
	slices.SortFunc(h.Networks, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	h.Networks = slices.Compact(h.Networks)
	return h
}

// run runs a system tool, with its output in the error.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// NetnsLock stands for Linux's one-kernel-mode-node-per-namespace lock.
// Off Linux there are no namespaces to lock and no shared table to wipe: a
// second kernel-mode tomoe gets a TUN of its own, and its route for
// fc00::/8 fails while the first one's exists.
type NetnsLock struct{}

// LockNetns returns a lock that holds nothing (see NetnsLock).
func LockNetns() (*NetnsLock, error) { return &NetnsLock{}, nil }

// Close releases nothing.
func (l *NetnsLock) Close() error { return nil }

// Resolver is Go's resolver: off Linux no mark is needed (see Mark).
func Resolver() *net.Resolver { return &net.Resolver{PreferGo: true} }

// SetSocketMark fails: fwmarks are Linux's.
func SetSocketMark(fd uintptr) error {
	return fmt.Errorf("socket marks (SO_MARK) need Linux, not available on %s", goos)
}

// BindToDevice returns a socket Control function that keeps a listening
// socket to the traffic of interface dev (see bindToDevice).
func BindToDevice(dev string) func(network, address string, c syscall.RawConn) error {
	return func(network, _ string, c syscall.RawConn) error {
		return bindToDevice(dev, network, c)
	}
}
