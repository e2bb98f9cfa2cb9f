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
	"sync"

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
	cfg     Config // what the access listeners dial and resolve with

	exposer *services.Exposer // safe for concurrent use

	mu     sync.Mutex // guards access (Reload replaces it; status reads it)
	access *access
}

// access is one generation of local access listeners: the config's port
// forwards and proxies, started together and stopped together.
type access struct {
	cancel  context.CancelFunc
	locals  []io.Closer
	connect []adminapi.LocalListener
	proxies []adminapi.LocalListener
	done    chan struct{}
	running int
}

// Start starts the services. On error, what started is stopped again.
func Start(cfg Config) (s *Set, err error) {
	s = &Set{log: cfg.Log, addr: cfg.Addr, changes: cfg.Changes, cfg: cfg}
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
	a, err := s.startAccess(cfg)
	s.access = a
	return s, err
}

// startAccess starts the access listeners cfg names. On error, what
// started is stopped again.
func (s *Set) startAccess(cfg Config) (a *access, err error) {
	a = &access{}
	if len(cfg.Connect) == 0 && cfg.SOCKS5 == "" && cfg.HTTP == "" {
		return a, nil
	}
	defer func() {
		if err != nil {
			a.stop()
			a = &access{}
		}
	}()
	allow, err := services.ParseUsers(cfg.Users)
	if err != nil {
		return a, fmt.Errorf("proxy.users: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.done = make(chan struct{}, 8+len(cfg.Connect))
	log := cfg.Log.With("component", "access")
	dial, resolve := s.cfg.Dial, s.cfg.Resolve
	serve := func(key, spec string, f func(net.Listener) error) error {
		ln, err := services.ListenLocal(spec, allow, log)
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		a.locals = append(a.locals, ln)
		a.running++
		go func() {
			defer func() { a.done <- struct{}{} }()
			if err := f(ln); err != nil && ctx.Err() == nil {
				log.Warn("local listener stopped", "listener", spec, "err", err)
			}
		}()
		return nil
	}
	for i, c := range cfg.Connect {
		local, remote := c.Local.String(), c.Remote.String()
		if err := serve(fmt.Sprintf("connect[%d].local", i), local, func(ln net.Listener) error {
			return services.ServeForward(ctx, ln, dial, resolve, remote, log)
		}); err != nil {
			return a, err
		}
		a.connect = append(a.connect, adminapi.LocalListener{Kind: "connect", Listen: local, Remote: remote})
	}
	if p := cfg.SOCKS5; p != "" {
		if err := serve("proxy.socks5", p, func(ln net.Listener) error {
			return services.ServeSOCKS5(ctx, ln, dial, resolve, log)
		}); err != nil {
			return a, err
		}
		a.proxies = append(a.proxies, adminapi.LocalListener{Kind: "socks5", Listen: p})
	}
	if p := cfg.HTTP; p != "" {
		if err := serve("proxy.http", p, func(ln net.Listener) error {
			return services.ServeHTTPConnect(ctx, ln, dial, resolve, log)
		}); err != nil {
			return a, err
		}
		a.proxies = append(a.proxies, adminapi.LocalListener{Kind: "http", Listen: p})
	}
	for _, l := range append(slices.Clone(a.connect), a.proxies...) {
		cfg.Log.Info("local access listening", "kind", l.Kind, "listen", l.Listen, "remote", l.Remote)
	}
	return a, nil
}

// stop stops the access listeners and waits for their loops.
func (a *access) stop() {
	if a == nil {
		return
	}
	if a.cancel != nil {
		a.cancel()
	}
	for _, c := range a.locals {
		c.Close()
	}
	for range a.running {
		<-a.done
	}
	a.running = 0
}

// Close stops the access listeners, waits for their loops, and closes the
// exposed services.
func (s *Set) Close() {
	s.mu.Lock()
	a := s.access
	s.access = nil
	s.mu.Unlock()
	a.stop()
	if s.exposer != nil {
		s.exposer.Close()
	}
}

// ReloadExpose makes the exposed services those of the config file's new
// list with the admin API's persisted changes over it: services gone or
// whose target changed close first (their connections end), then the new
// ones listen. It returns what failed to listen, having done the rest.
func (s *Set) ReloadExpose(list []services.Service) error {
	want, err := s.changes.Exposed(slices.Clone(list))
	if err != nil {
		return err
	}
	type key struct {
		proto string
		port  uint16
	}
	wanted := map[key]services.Service{}
	for _, w := range want {
		wanted[key{w.Proto, w.Port}] = w
	}
	have := map[key]bool{}
	for _, e := range s.exposer.List() {
		k := key{e.Proto, e.Port}
		if w, ok := wanted[k]; ok && w.Target == e.Target {
			have[k] = true
			continue
		}
		if err := s.exposer.Remove(e.Proto, e.Port); err == nil {
			s.log.Info("service unexposed (config reloaded)", "proto", e.Proto, "port", e.Port)
		}
	}
	var errs []error
	for _, w := range want {
		if have[key{w.Proto, w.Port}] {
			continue
		}
		if err := s.exposer.Add(w); err != nil {
			errs = append(errs, fmt.Errorf("expose %s/%d: %w", w.Proto, w.Port, err))
			continue
		}
		s.log.Info("service exposed (config reloaded)", "proto", w.Proto, "port", w.Port, "target", w.Target)
	}
	return errors.Join(errs...)
}

// ReloadAccess starts the access listeners anew from cfg's Connect,
// SOCKS5, HTTP and Users: the old ones close first (their connections
// end), so that the new ones can take the same addresses.
func (s *Set) ReloadAccess(cfg Config) error {
	s.mu.Lock()
	old := s.access
	s.access = nil
	s.mu.Unlock()
	old.stop()
	a, err := s.startAccess(cfg)
	s.mu.Lock()
	s.access = a
	s.mu.Unlock()
	return err
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
	out := adminapi.Services{Expose: []adminapi.ExposedService{}}
	s.mu.Lock()
	if a := s.access; a != nil {
		out.Connect, out.Proxies = slices.Clone(a.connect), slices.Clone(a.proxies)
	}
	s.mu.Unlock()
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
