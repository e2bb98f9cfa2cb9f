package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/offers"
	"github.com/tomoe-net/tomoe/internal/services"
)

// Local services: exposed services (the overlay side listens on the node
// address, in the userspace stack or on the kernel TUN only), and the
// local access listeners (port forwards, SOCKS5 and HTTP CONNECT proxies)
// that dial into the overlay. internal/services does the plumbing; the node
// supplies listeners, the dialer and the name resolver.
type serviceSet struct {
	exposer *services.Exposer
	cancel  context.CancelFunc
	locals  []io.Closer
	connect []adminapi.LocalListener
	proxies []adminapi.LocalListener
	done    chan struct{}
	running int
}

func (n *Node) startServices() error {
	cfg := n.cfg
	s := &n.svc
	s.exposer = services.NewExposer(n.listenOverlay, n.log.With("component", "expose"))
	var list []services.Service
	for _, e := range cfg.Expose {
		list = append(list, services.Service{Proto: e.Proto.String(), Port: uint16(e.Port), Target: e.Target.String()})
	}
	list, err := n.changes.Exposed(list)
	if err != nil {
		return err
	}
	for _, e := range list {
		if err := s.exposer.Add(e); err != nil {
			return fmt.Errorf("expose %s/%d: %w", e.Proto, e.Port, err)
		}
	}
	if len(cfg.Connect) == 0 && !cfg.Proxy.SOCKS5.IsSet() && !cfg.Proxy.HTTP.IsSet() {
		return nil
	}
	allow, err := services.ParseUsers(cfg.Proxy.Users)
	if err != nil {
		return fmt.Errorf("proxy.users: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.done = make(chan struct{}, 8+len(cfg.Connect))
	log := n.log.With("component", "access")
	serve := func(key, spec string, f func(net.Listener) error) error {
		ln, err := services.ListenLocal(spec, allow, log)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		s.locals = append(s.locals, ln)
		s.running++
		go func() {
			defer func() { s.done <- struct{}{} }()
			if err := f(ln); err != nil && ctx.Err() == nil {
				log.Warn("local listener stopped", "listener", spec, "err", err)
			}
		}()
		return nil
	}
	for i, c := range cfg.Connect {
		local, remote := c.Local.String(), c.Remote.String()
		if err := serve(fmt.Sprintf("connect[%d].local", i), local, func(ln net.Listener) error {
			return services.ServeForward(ctx, ln, n.dialOverlay, n.resolveName, remote, log)
		}); err != nil {
			return err
		}
		s.connect = append(s.connect, adminapi.LocalListener{Kind: "connect", Listen: local, Remote: remote})
	}
	if p := cfg.Proxy.SOCKS5.String(); p != "" {
		if err := serve("proxy.socks5", p, func(ln net.Listener) error {
			return services.ServeSOCKS5(ctx, ln, n.dialOverlay, n.resolveName, log)
		}); err != nil {
			return err
		}
		s.proxies = append(s.proxies, adminapi.LocalListener{Kind: "socks5", Listen: p})
	}
	if p := cfg.Proxy.HTTP.String(); p != "" {
		if err := serve("proxy.http", p, func(ln net.Listener) error {
			return services.ServeHTTPConnect(ctx, ln, n.dialOverlay, n.resolveName, log)
		}); err != nil {
			return err
		}
		s.proxies = append(s.proxies, adminapi.LocalListener{Kind: "http", Listen: p})
	}
	for _, l := range append(slices.Clone(s.connect), s.proxies...) {
		n.log.Info("local access listening", "kind", l.Kind, "listen", l.Listen, "remote", l.Remote)
	}
	return nil
}

func (n *Node) stopServices() {
	s := &n.svc
	if s.cancel != nil {
		s.cancel()
	}
	for _, c := range s.locals {
		c.Close()
	}
	for range s.running {
		<-s.done
	}
	s.running = 0
	if s.exposer != nil {
		s.exposer.Close()
	}
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
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), dev) })
		return errors.Join(err, serr)
	}}
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
// literal, a static peer's name (optionally with ".tomoe"), or else a DNS
// name.
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

// Services is GET /v1/services.
func (a ServicesArea) Services(ctx context.Context) (adminapi.Services, error) {
	n := a.Node
	return n.servicesStatus(), nil
}

func (n *Node) servicesStatus() adminapi.Services {
	out := adminapi.Services{Expose: []adminapi.ExposedService{}, Connect: n.svc.connect, Proxies: n.svc.proxies}
	if out.Connect == nil {
		out.Connect = []adminapi.LocalListener{}
	}
	if out.Proxies == nil {
		out.Proxies = []adminapi.LocalListener{}
	}
	if n.svc.exposer == nil {
		return out
	}
	for _, s := range n.svc.exposer.List() {
		out.Expose = append(out.Expose, exposedService(n.Address(), s))
	}
	return out
}

// ChangeExpose is POST /v1/services/expose.
func (a ServicesArea) ChangeExpose(ctx context.Context, req adminapi.ExposeChange) (adminapi.Services, error) {
	n := a.Node
	if n.svc.exposer == nil {
		return adminapi.Services{}, errClosing
	}
	proto := req.Proto
	if proto == "" {
		proto = "tcp"
	}
	if proto != "tcp" && proto != "udp" {
		return adminapi.Services{}, adminapi.BadRequest(fmt.Errorf("proto %q: use tcp or udp", req.Proto))
	}
	if req.Port == 0 {
		return adminapi.Services{}, adminapi.BadRequest(errors.New("port: give the overlay port, 1..65535"))
	}
	if req.Remove {
		if err := n.svc.exposer.Remove(proto, req.Port); err != nil {
			return adminapi.Services{}, adminapi.NotFound(err)
		}
		if err := n.changes.RecordExpose(proto, req.Port, "", true); err != nil {
			return adminapi.Services{}, fmt.Errorf("removed, but not saved: %w", err)
		}
		n.log.Info("service unexposed", "proto", proto, "port", req.Port)
		return n.servicesStatus(), nil
	}
	if _, err := services.ParseTarget(req.Target); err != nil {
		return adminapi.Services{}, adminapi.BadRequest(fmt.Errorf("target: %v", err))
	}
	if err := n.svc.exposer.Add(services.Service{Proto: proto, Port: req.Port, Target: req.Target}); err != nil {
		return adminapi.Services{}, adminapi.Conflict(err)
	}
	if err := n.changes.RecordExpose(proto, req.Port, req.Target, false); err != nil {
		return adminapi.Services{}, fmt.Errorf("exposed, but not saved: %w", err)
	}
	n.log.Info("service exposed", "proto", proto, "port", req.Port, "target", req.Target)
	return n.servicesStatus(), nil
}

func exposedService(addr netip.Addr, s services.Service) adminapi.ExposedService {
	return adminapi.ExposedService{
		Proto: s.Proto, Port: s.Port, Target: s.Target,
		Address: netip.AddrPortFrom(addr, s.Port).String(),
		Active:  s.Stats.Active, Total: s.Stats.Total, BytesIn: s.Stats.BytesIn, BytesOut: s.Stats.BytesOut,
	}
}

// isHostAddr reports whether a is one of the host's own addresses beyond
// the overlay (kernel mode; routes.Host).
func (n *Node) isHostAddr(a netip.Addr) bool {
	return n.routes.HostAddr(a)
}
