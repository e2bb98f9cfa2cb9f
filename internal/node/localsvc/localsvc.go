// Package localsvc is a node's local services: exposed services (the
// overlay side listens on the node address, in the userspace stack or on
// the kernel TUN only), and the local access listeners (port forwards,
// SOCKS5 and HTTP CONNECT proxies) that dial into the overlay, with their
// admin API area. internal/services does the plumbing; the node supplies
// the overlay's listeners, its dialer and its name resolver.
package localsvc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/node/changes"
	"github.com/tomoe-net/tomoe/internal/services"
)

// Config is what a Set is made from.
type Config struct {
	Log *slog.Logger
	// Addr is the node address the exposed services listen on.
	Addr netip.Addr
	// Expose are the config file's exposed services; Changes has the
	// API's.
	Expose  []services.Service
	Changes *changes.Store
	// Connect, SOCKS5, HTTP and Users are the config's local access
	// listeners and the users allowed on them.
	Connect []config.Connect
	SOCKS5  string
	HTTP    string
	Users   []string
	// Listen opens the overlay side of an exposed service; Dial and
	// Resolve are the access listeners' way into the overlay.
	Listen  func(proto string, port uint16) (io.Closer, error)
	Dial    func(ctx context.Context, network, address string) (net.Conn, error)
	Resolve func(ctx context.Context, host string) (netip.Addr, error)
}

// Set is a node's running local services. It serves GET /v1/services and
// POST /v1/services/expose (adminapi.Area).
type Set struct {
	log     *slog.Logger
	addr    netip.Addr
	changes *changes.Store

	exposer *services.Exposer // safe for concurrent use
	cancel  context.CancelFunc
	locals  []io.Closer
	connect []adminapi.LocalListener
	proxies []adminapi.LocalListener
	done    chan struct{}
	running int
}

// Start starts the services. On error, what started is stopped again.
func Start(cfg Config) (s *Set, err error) {
	s = &Set{log: cfg.Log, addr: cfg.Addr, changes: cfg.Changes}
	defer func() {
		if err != nil {
			s.Close()
			s = nil
		}
	}()
	s.exposer = services.NewExposer(cfg.Listen, cfg.Log.With("component", "expose"))
	list, err := cfg.Changes.Exposed(slices.Clone(cfg.Expose))
	if err != nil {
		return s, err
	}
	for _, e := range list {
		if err := s.exposer.Add(e); err != nil {
			return s, fmt.Errorf("expose %s/%d: %w", e.Proto, e.Port, err)
		}
	}
	if len(cfg.Connect) == 0 && cfg.SOCKS5 == "" && cfg.HTTP == "" {
		return s, nil
	}
	allow, err := services.ParseUsers(cfg.Users)
	if err != nil {
		return s, fmt.Errorf("proxy.users: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.done = make(chan struct{}, 8+len(cfg.Connect))
	log := cfg.Log.With("component", "access")
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
			return services.ServeForward(ctx, ln, cfg.Dial, cfg.Resolve, remote, log)
		}); err != nil {
			return s, err
		}
		s.connect = append(s.connect, adminapi.LocalListener{Kind: "connect", Listen: local, Remote: remote})
	}
	if p := cfg.SOCKS5; p != "" {
		if err := serve("proxy.socks5", p, func(ln net.Listener) error {
			return services.ServeSOCKS5(ctx, ln, cfg.Dial, cfg.Resolve, log)
		}); err != nil {
			return s, err
		}
		s.proxies = append(s.proxies, adminapi.LocalListener{Kind: "socks5", Listen: p})
	}
	if p := cfg.HTTP; p != "" {
		if err := serve("proxy.http", p, func(ln net.Listener) error {
			return services.ServeHTTPConnect(ctx, ln, cfg.Dial, cfg.Resolve, log)
		}); err != nil {
			return s, err
		}
		s.proxies = append(s.proxies, adminapi.LocalListener{Kind: "http", Listen: p})
	}
	for _, l := range append(slices.Clone(s.connect), s.proxies...) {
		cfg.Log.Info("local access listening", "kind", l.Kind, "listen", l.Listen, "remote", l.Remote)
	}
	return s, nil
}

// Close stops the access listeners, waits for their loops, and closes the
// exposed services.
func (s *Set) Close() {
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

// RegisterAPI implements adminapi.Area.
func (s *Set) RegisterAPI(m *adminapi.Mux) {
	m.Get("/v1/services", func(ctx context.Context) (any, error) { return s.Services(ctx) })
	adminapi.Post(m, "/v1/services/expose", func(ctx context.Context, r adminapi.ExposeChange) (any, error) { return s.ChangeExpose(ctx, r) })
}

// Services is GET /v1/services.
func (s *Set) Services(ctx context.Context) (adminapi.Services, error) {
	return s.status(), nil
}

func (s *Set) status() adminapi.Services {
	out := adminapi.Services{Expose: []adminapi.ExposedService{}, Connect: s.connect, Proxies: s.proxies}
	if out.Connect == nil {
		out.Connect = []adminapi.LocalListener{}
	}
	if out.Proxies == nil {
		out.Proxies = []adminapi.LocalListener{}
	}
	for _, e := range s.exposer.List() {
		out.Expose = append(out.Expose, exposedService(s.addr, e))
	}
	return out
}

// ChangeExpose is POST /v1/services/expose.
func (s *Set) ChangeExpose(ctx context.Context, req adminapi.ExposeChange) (adminapi.Services, error) {
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
		if err := s.exposer.Remove(proto, req.Port); err != nil {
			return adminapi.Services{}, adminapi.NotFound(err)
		}
		if err := s.changes.RecordExpose(proto, req.Port, "", true); err != nil {
			return adminapi.Services{}, fmt.Errorf("removed, but not saved: %w", err)
		}
		s.log.Info("service unexposed", "proto", proto, "port", req.Port)
		return s.status(), nil
	}
	if _, err := services.ParseTarget(req.Target); err != nil {
		return adminapi.Services{}, adminapi.BadRequest(fmt.Errorf("target: %v", err))
	}
	if err := s.exposer.Add(services.Service{Proto: proto, Port: req.Port, Target: req.Target}); err != nil {
		return adminapi.Services{}, adminapi.Conflict(err)
	}
	if err := s.changes.RecordExpose(proto, req.Port, req.Target, false); err != nil {
		return adminapi.Services{}, fmt.Errorf("exposed, but not saved: %w", err)
	}
	s.log.Info("service exposed", "proto", proto, "port", req.Port, "target", req.Target)
	return s.status(), nil
}

func exposedService(addr netip.Addr, s services.Service) adminapi.ExposedService {
	return adminapi.ExposedService{
		Proto: s.Proto, Port: s.Port, Target: s.Target,
		Address: netip.AddrPortFrom(addr, s.Port).String(),
		Active:  s.Stats.Active, Total: s.Stats.Total, BytesIn: s.Stats.BytesIn, BytesOut: s.Stats.BytesOut,
	}
}
