package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/tomoe-net/tomoe/internal/node/localsvc"
	"github.com/tomoe-net/tomoe/internal/offers"
	"github.com/tomoe-net/tomoe/internal/routes"
	"github.com/tomoe-net/tomoe/internal/services"
)

// startServices starts the exposed services and the local access
// listeners, on the node's listeners, dialer and resolver below.
func (n *Node) startServices() (*localsvc.Set, error) {
	cfg := n.cfg
	sc := localsvc.Config{Log: n.log, Addr: n.Address(), Changes: n.changes, Connect: cfg.Connect,
		SOCKS5: cfg.Proxy.SOCKS5.String(), HTTP: cfg.Proxy.HTTP.String(), Users: cfg.Proxy.Users,
		Listen: n.listenOverlay, Dial: n.dialOverlay, Resolve: n.resolveName}
	for _, e := range cfg.Expose {
		sc.Expose = append(sc.Expose, services.Service{Proto: e.Proto.String(), Port: uint16(e.Port), Target: e.Target.String()})
	}
	return localsvc.Start(sc)
}

// listenOverlay opens the overlay side of an exposed service on the node
// address: in the userspace stack, or in kernel mode a socket bound to the
// node address and the TUN device, so nothing listens on a physical
// interface.
func (n *Node) listenOverlay(proto string, port uint16) (io.Closer, error) {
	ap := netip.AddrPortFrom(n.Address(), port)
	if n.stack != nil {
		if proto == "udp" {
			return n.stack.ListenUDP(ap)
		}
		return n.stack.ListenTCP(ap)
	}
	dev, err := n.wrapper.Name()
	if err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: routes.BindToDevice(dev)}
	if proto == "udp" {
		return lc.ListenPacket(context.Background(), "udp6", ap.String())
	}
	return lc.Listen(context.Background(), "tcp6", ap.String())
}

// dialOverlay is the access listeners' way into the overlay: through the
// userspace stack (which needs the peer found first), or the OS in kernel
// mode.
func (n *Node) dialOverlay(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err == nil {
		if a := ap.Addr().Unmap(); a.IsLoopback() || a.IsUnspecified() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsLinkLocalMulticast() || offers.NeverForwarded(a) {
			return nil, &net.OpError{Op: "dial", Net: network, Addr: net.TCPAddrFromAddrPort(ap), Err: errors.New("not an overlay destination (loopback, link-local, multicast or a cloud metadata service)")}
		}
		if n.isHostAddr(ap.Addr().Unmap()) {
			// Kernel mode: the OS would deliver it locally, past the overlay.
			return nil, &net.OpError{Op: "dial", Net: network, Addr: net.TCPAddrFromAddrPort(ap), Err: errors.New("not an overlay destination (an address of this host)")}
		}
	}
	if n.stack != nil {
		return n.DialContext(ctx, network, address)
	}
	if err == nil {
		if err := n.ensurePeer(ctx, ap.Addr()); err != nil {
			return nil, &net.OpError{Op: "dial", Net: network, Addr: net.TCPAddrFromAddrPort(ap), Err: err}
		}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, address)
}

// resolveName turns what a client wrote into an address: an address
// literal, a static peer's name or a peer's certificate name (either
// optionally with ".tomoe"), or else a DNS name.
func (n *Node) resolveName(ctx context.Context, host string) (netip.Addr, error) {
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap(), nil
	}
	name := strings.TrimSuffix(strings.ToLower(host), ".tomoe")
	n.peers.Lock()
	for p := range n.peers.All() {
		if p.Name != "" && strings.ToLower(p.Name) == name {
			a := p.Addr
			n.peers.Unlock()
			return a, nil
		}
	}
	n.peers.Unlock()
	// A certificate's name, as written or under .tomoe (web1.acme.tomoe).
	if a, ok := n.orgs.LookupName(name); ok {
		return a, nil
	}
	if strings.HasSuffix(strings.ToLower(host), ".tomoe") {
		return netip.Addr{}, fmt.Errorf("no peer is named %q", name)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return netip.Addr{}, err
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("%s has no address", host)
	}
	// Prefer an address the overlay can carry.
	for _, a := range addrs {
		if n.lookupPeer(a.Unmap()) != nil {
			return a.Unmap(), nil
		}
	}
	return addrs[0].Unmap(), nil
}

// isHostAddr reports whether a is one of the host's own addresses beyond
// the overlay (kernel mode; routes.Host).
func (n *Node) isHostAddr(a netip.Addr) bool {
	return n.routes.HostAddr(a)
}
