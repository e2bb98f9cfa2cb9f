package vnet

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tomoe-net/tomoe/internal/clock"
)

// Config is a World's configuration; the zero value is usable.
type Config struct {
	// Seed seeds the generators behind link loss and random NAT ports.
	Seed uint64
	// Clock is where time comes from: link delays, shaping and NAT
	// timeouts; nil means real time. With a clock.Manual, timers fire on
	// the goroutine that advances it. Deadlines set on sockets and streams
	// (SetDeadline) and ConnectTimeout stay in real time: they are the
	// caller's timeouts, not the network's behaviour.
	Clock clock.Clock
	// SocketQueue is how many datagrams a UDP socket or Bind holds
	// unread before it drops more, as a kernel socket's receive buffer
	// does; 0 means 1024 (about 1.5 MB of full-size packets, near Linux's
	// default rmem_max).
	SocketQueue int
	// BindBatchSize is what a Bind's BatchSize reports; 0 means 16.
	// wireguard-go keeps BatchSize buffers of 64 KiB per receive
	// goroutine, so 128 (its ideal) costs 8 MiB a device: too much for
	// thousands of devices in one process. 16 keeps most of the batching.
	BindBatchSize int
	// ConnectTimeout bounds a Dial whose context has no deadline and
	// whose connection request is dropped on the way (a real connect
	// retries its SYN for about two minutes); 0 means 20 s.
	ConnectTimeout time.Duration
}

// World is one simulated internet: its networks, hosts, links and NATs.
// Building it (NewNetwork, AddHost, NewNAT) and running traffic may
// happen concurrently.
type World struct {
	cfg   Config
	clock clock.Clock
	epoch time.Time
	real  bool // clock is clock.Real(): now reads only the monotonic clock

	mu       sync.Mutex // guards the fields below
	closed   bool
	networks map[string]*Network
	hosts    map[string]*Host
	nats     map[string]*NAT
	links    []*Link
	nextID   uint64 // for links and NATs: seeds their generators

	stats counters
}

// Errors returned when building a World.
var (
	ErrClosed      = errors.New("vnet: world closed")
	ErrNameUsed    = errors.New("vnet: name already used")
	ErrAddrUsed    = errors.New("vnet: address already used")
	ErrOutOfPrefix = errors.New("vnet: address outside the network's prefix")
	ErrFull        = errors.New("vnet: no free address left in the network's prefix")
)

// New returns an empty World.
func New(cfg Config) *World {
	cfg.Clock = clock.Or(cfg.Clock)
	if cfg.SocketQueue <= 0 {
		cfg.SocketQueue = 1024
	}
	if cfg.BindBatchSize <= 0 {
		cfg.BindBatchSize = 16
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 20 * time.Second
	}
	real := cfg.Clock == clock.Real()
	return &World{
		cfg:      cfg,
		clock:    cfg.Clock,
		epoch:    cfg.Clock.Now(),
		real:     real,
		networks: make(map[string]*Network),
		hosts:    make(map[string]*Host),
		nats:     make(map[string]*NAT),
	}
}

// now is the world's time: nanoseconds since New. With real time it
// is time.Since, which reads only the monotonic clock: time.Now reads the
// wall clock too, and was a seventh of a NAT hop's cost.
func (w *World) now() int64 {
	if w.real {
		return int64(time.Since(w.epoch))
	}
	return int64(w.clock.Now().Sub(w.epoch))
}

// NewNetwork adds a network whose addresses are in prefix (IPv4 or IPv6).
func (w *World) NewNetwork(name string, prefix netip.Prefix) (*Network, error) {
	if !prefix.IsValid() {
		return nil, fmt.Errorf("vnet: network %s: invalid prefix", name)
	}
	n := &Network{
		w:      w,
		name:   name,
		prefix: prefix.Masked(),
		links:  make(map[netip.Addr]*Link),
	}
	n.next = n.prefix.Addr().Next()
	n.table.Store(&map[netip.Addr]*Link{})
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, ErrClosed
	}
	if err := w.nameFreeLocked(name); err != nil {
		return nil, err
	}
	w.networks[name] = n
	return n, nil
}

// nameFreeLocked fails if name is taken by a network, host or NAT: one
// namespace makes test output unambiguous.
func (w *World) nameFreeLocked(name string) error {
	_, a := w.networks[name]
	_, b := w.hosts[name]
	_, c := w.nats[name]
	if a || b || c {
		return fmt.Errorf("%w: %q", ErrNameUsed, name)
	}
	return nil
}

func (w *World) newIDLocked() uint64 {
	w.nextID++
	return w.nextID
}

// Host returns the host called name, or nil.
func (w *World) Host(name string) *Host {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.hosts[name]
}

// NAT returns the NAT called name, or nil.
func (w *World) NAT(name string) *NAT {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nats[name]
}

// Close closes every socket, Bind, stream and listener of every host and
// stops every link's timer; packets in flight are dropped. Building
// anything afterwards fails with ErrClosed.
func (w *World) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	hosts := make([]*Host, 0, len(w.hosts))
	for _, h := range w.hosts {
		hosts = append(hosts, h)
	}
	links := w.links
	w.mu.Unlock()
	for _, l := range links {
		l.close()
	}
	for _, h := range hosts {
		h.close()
	}
	return nil
}

func (w *World) isClosed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed
}

// Stats counts what happened to datagrams and connection requests in the
// whole world. Every drop has one reason.
type Stats struct {
	NoRoute     uint64 // no link holds the destination and no gateway
	LinkDown    uint64 // a link on the way was down
	Blocked     uint64 // a link or NAT blocks the protocol or the remote
	Lost        uint64 // a link's Loss
	QueueFull   uint64 // a shaped link's queue was full
	NATFiltered uint64 // no mapping for it, or the NAT's filtering refused it
	NoSocket    uint64 // nothing bound to the destination port
	SocketFull  uint64 // the socket's queue was full
	TTLExpired  uint64 // a router on the way would have taken its last hop
}

type counters struct {
	noRoute, linkDown, blocked, lost, queueFull, natFiltered, noSocket, socketFull, ttlExpired atomic.Uint64
}

// Stats returns the world's counters.
func (w *World) Stats() Stats {
	c := &w.stats
	return Stats{
		NoRoute:     c.noRoute.Load(),
		LinkDown:    c.linkDown.Load(),
		Blocked:     c.blocked.Load(),
		Lost:        c.lost.Load(),
		QueueFull:   c.queueFull.Load(),
		NATFiltered: c.natFiltered.Load(),
		NoSocket:    c.noSocket.Load(),
		SocketFull:  c.socketFull.Load(),
		TTLExpired:  c.ttlExpired.Load(),
	}
}

// drop releases p, counting it under reason. A dropped connection request
// leaves its dialer waiting, as a real SYN lost would.
func (w *World) drop(p *packet, reason *atomic.Uint64) {
	reason.Add(1)
	p.release()
}
