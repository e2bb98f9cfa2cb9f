package services

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ListenFunc opens the overlay-side listener for one exposed port (the node
// supplies it: netstack or a kernel socket bound to the overlay address). It
// returns a net.Listener for "tcp" and a net.PacketConn for "udp"; closing
// it must unblock Accept or ReadFrom.
type ListenFunc func(proto string, port uint16) (io.Closer, error)

// Service is one exposed port: overlay clients reaching Proto/Port on the
// node are carried to Target on this host.
type Service struct {
	Proto  string // "tcp" or "udp"
	Port   uint16 // overlay port, 1..65535
	Target string // local "IP:port", see ParseTarget
	// Stats is filled in by Exposer.List; Add ignores it.
	Stats ServiceStats
}

// ServiceStats counts one exposed service's traffic since it was added.
type ServiceStats struct {
	// Total is the number of TCP connections accepted or UDP sessions
	// (distinct client addresses) started; Active those still open.
	Total, Active uint64
	// BytesIn counts payload from overlay clients to the target, BytesOut
	// from the target back to the clients.
	BytesIn, BytesOut uint64
	// Dropped counts UDP datagrams that found no session: the table was
	// full of sessions active within the last udpEvictIdle, or the target
	// socket could not be opened.
	Dropped uint64
	// Evicted counts UDP sessions ended to make room for a new one (see
	// expose_udp.go).
	Evicted uint64
}

// Limits of exposed services.
const (
	exposeDialTimeout = 5 * time.Second
	// udpIdleTimeout ends a UDP session without traffic either way.
	udpIdleTimeout = 60 * time.Second
	// maxUDPSessions bounds one UDP service's sessions, each a socket and
	// a goroutine.
	maxUDPSessions = 1024
	// maxUDPSessionsPerClient is one client address's share: a client
	// opening more sessions than this recycles its own oldest, so one
	// client can hold at most a quarter of the table.
	maxUDPSessionsPerClient = maxUDPSessions / 4
	// udpEvictIdle: a full table evicts another client's session only if
	// it has been quiet this long. A request-response exchange (DNS, NTP)
	// is over well within it; a stream or game sends many times a second.
	udpEvictIdle = 10 * time.Second
	maxDatagram  = 64 << 10
)

// Exposer carries overlay clients to local services: for each Service it
// listens on the overlay (through its ListenFunc) and connects every TCP
// connection, or every UDP client address, to the service's local target
// with the OS's sockets. All methods are safe for concurrent use.
type Exposer struct {
	listen ListenFunc
	log    *slog.Logger
	// Tests change these; NewExposer sets them from the constants above.
	udpIdle      time.Duration
	udpEvictIdle time.Duration
	maxSessions  int
	maxPerClient int

	mu       sync.Mutex // guards services and closed
	services map[serviceKey]*exposed
	closed   bool
}

type serviceKey struct {
	proto string
	port  uint16
}

func (k serviceKey) String() string { return fmt.Sprintf("%s/%d", k.proto, k.port) }

// NewExposer returns an Exposer that opens overlay listeners with listen.
func NewExposer(listen ListenFunc, log *slog.Logger) *Exposer {
	return &Exposer{
		listen:       listen,
		log:          orDiscard(log),
		udpIdle:      udpIdleTimeout,
		udpEvictIdle: udpEvictIdle,
		maxSessions:  maxUDPSessions,
		maxPerClient: maxUDPSessionsPerClient,
		services:     make(map[serviceKey]*exposed),
	}
}

// exposed is one running Service.
type exposed struct {
	svc    Service // Stats unused; see stats
	target netip.AddrPort
	log    *slog.Logger
	limit  *rateLimiter
	stats  struct{ total, active, in, out, dropped, evicted atomic.Uint64 }
	cancel context.CancelFunc
	done   chan struct{} // closed when the service's goroutines have all exited

	// UDP only.
	udp *udpTable
}

// Add starts exposing s. It fails if s is malformed, s's protocol and port
// are already exposed, or the overlay listener cannot be opened.
func (e *Exposer) Add(s Service) error {
	key := serviceKey{s.Proto, s.Port}
	if s.Proto != "tcp" && s.Proto != "udp" {
		return fmt.Errorf("expose %s: protocol %q: use tcp or udp", key, s.Proto)
	}
	if s.Port == 0 {
		return fmt.Errorf("expose %s: port 0: use a port 1..65535", key)
	}
	target, err := ParseTarget(s.Target)
	if err != nil {
		return fmt.Errorf("expose %s: %w", key, err)
	}
	s.Target, s.Stats = target.String(), ServiceStats{}

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("expose %s: exposer is closed", key)
	}
	if _, ok := e.services[key]; ok {
		return fmt.Errorf("expose %s: already exposed; remove it first", key)
	}
	l, err := e.listen(s.Proto, s.Port)
	if err != nil {
		return fmt.Errorf("expose %s: listen: %w", key, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	x := &exposed{
		svc: s, target: target, cancel: cancel, done: make(chan struct{}),
		log:   e.log.With("service", key.String(), "target", s.Target),
		limit: newRateLimiter(10 * time.Second),
	}
	switch s.Proto {
	case "tcp":
		ln, ok := l.(net.Listener)
		if !ok {
			l.Close()
			cancel()
			return fmt.Errorf("expose %s: ListenFunc returned %T, not a net.Listener", key, l)
		}
		go func() {
			defer close(x.done)
			if err := serve(ctx, ln, x.log, x.handleTCP); err != nil {
				x.log.Warn("exposed service stopped accepting", "err", err)
			}
		}()
	case "udp":
		pc, ok := l.(net.PacketConn)
		if !ok {
			l.Close()
			cancel()
			return fmt.Errorf("expose %s: ListenFunc returned %T, not a net.PacketConn", key, l)
		}
		x.udp = newUDPTable(e.maxSessions, e.maxPerClient, e.udpIdle, e.udpEvictIdle)
		go func() {
			defer close(x.done)
			x.serveUDP(ctx, pc)
		}()
	}
	e.services[key] = x
	e.log.Info("exposed service", "service", key.String(), "target", s.Target)
	return nil
}

// Remove stops exposing proto/port: it closes the overlay listener and cuts
// the service's live connections and sessions, returning once they are gone.
func (e *Exposer) Remove(proto string, port uint16) error {
	key := serviceKey{proto, port}
	e.mu.Lock()
	x, ok := e.services[key]
	delete(e.services, key)
	e.mu.Unlock()
	if !ok {
		return fmt.Errorf("expose %s: not exposed", key)
	}
	x.stop()
	e.log.Info("removed exposed service", "service", key.String())
	return nil
}

// List returns the exposed services with their counters, sorted by protocol
// then port.
func (e *Exposer) List() []Service {
	e.mu.Lock()
	out := make([]Service, 0, len(e.services))
	for _, x := range e.services {
		s := x.svc
		s.Stats = ServiceStats{
			Total:    x.stats.total.Load(),
			Active:   x.stats.active.Load(),
			BytesIn:  x.stats.in.Load(),
			BytesOut: x.stats.out.Load(),
			Dropped:  x.stats.dropped.Load(),
			Evicted:  x.stats.evicted.Load(),
		}
		out = append(out, s)
	}
	e.mu.Unlock()
	slices.SortFunc(out, func(a, b Service) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Port, b.Port))
	})
	return out
}

// Close removes every service; later Adds fail.
func (e *Exposer) Close() {
	e.mu.Lock()
	e.closed = true
	xs := make([]*exposed, 0, len(e.services))
	for _, x := range e.services {
		xs = append(xs, x)
	}
	clear(e.services)
	e.mu.Unlock()
	for _, x := range xs {
		x.stop()
	}
}

// stop ends the service and waits for its goroutines.
func (x *exposed) stop() {
	x.cancel()
	<-x.done
}

// handleTCP carries one overlay connection to the target.
func (x *exposed) handleTCP(ctx context.Context, c net.Conn, t *tracker) {
	x.stats.total.Add(1)
	x.stats.active.Add(1)
	defer x.stats.active.Add(^uint64(0))
	d := net.Dialer{Timeout: exposeDialTimeout}
	up, err := d.DialContext(ctx, "tcp", x.target.String())
	if err != nil {
		c.Close()
		if ctx.Err() == nil && x.limit.allow("dial") {
			x.log.Info("exposed service: cannot reach target", "client", c.RemoteAddr().String(), "err", err)
		}
		return
	}
	if !t.add(up) {
		c.Close()
		return
	}
	defer t.remove(up)
	splice(c, up, &x.stats.in, &x.stats.out)
}

// ParseTarget parses an exposed service's target: a literal "IP:port" of
// this host ("127.0.0.1:8080", "[::1]:8080", or an address of one of its
// interfaces). Host names are refused: the target must not depend on a
// resolver, and what a name points at can move off the host.
func ParseTarget(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		if host, _, serr := net.SplitHostPort(s); serr == nil && host != "" {
			if _, perr := netip.ParseAddr(host); perr != nil {
				return netip.AddrPort{}, fmt.Errorf("target %q: %q is a host name; use an IP address, e.g. 127.0.0.1:8080", s, host)
			}
		}
		return netip.AddrPort{}, fmt.Errorf("target %q: want IP:port, e.g. 127.0.0.1:8080 or [::1]:8080", s)
	}
	a := ap.Addr()
	switch {
	case a.Zone() != "":
		return netip.AddrPort{}, fmt.Errorf("target %q: drop the %%zone", s)
	case ap.Port() == 0:
		return netip.AddrPort{}, fmt.Errorf("target %q: port 0: use the service's port", s)
	}
	a = a.Unmap()
	switch {
	case a.IsUnspecified():
		return netip.AddrPort{}, fmt.Errorf("target %q: %s is not a destination; use 127.0.0.1 or the address the service listens on", s, a)
	case a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return netip.AddrPort{}, fmt.Errorf("target %q: %s is not a unicast address", s, a)
	case a.IsLoopback():
	default:
		local, err := isLocalAddr(a)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("target %q: %w", s, err)
		}
		if !local {
			return netip.AddrPort{}, fmt.Errorf("target %q: %s is not an address of this host; exposed services forward only to local services", s, a)
		}
	}
	return netip.AddrPortFrom(a, ap.Port()), nil
}

// isLocalAddr reports whether a is assigned to one of the host's interfaces.
func isLocalAddr(a netip.Addr) (bool, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false, fmt.Errorf("list local addresses: %w", err)
	}
	for _, ia := range addrs {
		n, ok := ia.(*net.IPNet)
		if !ok {
			continue
		}
		if b, ok := netip.AddrFromSlice(n.IP); ok && b.Unmap() == a {
			return true, nil
		}
	}
	return false, nil
}

// errIsClosed reports whether err says the socket was closed.
func errIsClosed(err error) bool { return errors.Is(err, net.ErrClosed) }
