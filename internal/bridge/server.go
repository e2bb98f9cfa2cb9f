// Package bridge is the bridge role of tomoe's bridge protocol (DESIGN.md
// "Bridges"): a Server admits nodes (the config's allow list, join tokens,
// revocations: package admission), registers them (server_register.go,
// register_times.go), answers their lookups, introduces them to each
// other to punch through NAT, and relays their WireGuard ciphertext over
// the node's UDP socket and over TCP (server_tcp.go).
//
// Its subpackages hold the rest of the protocol: wire, the frame format;
// keycache, the shared keys and the worker that keeps X25519 off the
// receive goroutines; admission; client, a node's side (registration,
// lookups, connections to bridges). Probing for direct paths is
// internal/nat's.
package bridge

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/admission"
	"github.com/tomoe-net/tomoe/internal/bridge/keycache"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/clock"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/ratelimit"
	"github.com/tomoe-net/tomoe/internal/transport"
)

// FrameSender sends frames over the node's UDP socket (transport.Bind).
// Consecutive frames of one call go to dst together (one GSO send where
// the platform has it), so callers batch them. It must not keep frames
// after it returns.
type FrameSender interface {
	SendFrames(frames [][]byte, dst netip.AddrPort) error
}

// ServerConfig configures a bridge.
type ServerConfig struct {
	Key       identity.PrivateKey
	Allow     []identity.PublicKey // keys allowed to register (config [[bridge.allow]])
	StateFile string               // JSON: hashed join tokens, enrolled and revoked keys; "" = in memory only
	TCP       string               // TCP listen address, e.g. "0.0.0.0:4610"; "" = no TCP
	Sender    FrameSender          // the node's Bind
	RelayMbit int                  // per-node relay rate limit in Mbit/s (burst: a quarter second); 0 = unlimited
	Mark      uint32               // fwmark of the TCP listener's sockets (see client.Config.Mark); 0 = none
	Log       *slog.Logger
	// Clock decides registration expiry (the janitor's ticks), the
	// freshness of nodes' stamps, token expiry, relay and lookup rates
	// and the times written to the state; nil: real time. Socket
	// deadlines stay on real time (they are the kernel's), and so do the
	// budgets of CPU for strangers' frames and of log lines.
	Clock clock.Clock
	// ListenTCP opens the TCP listener (in tests, an in-memory network's); nil: the host's, with Mark.
	ListenTCP func(network, addr string) (net.Listener, error)
}

// NodeInfo describes a registered node (the JSON is a contract: `tomoe
// bridge nodes --json`).
type NodeInfo struct {
	PublicKey      identity.PublicKey `json:"public_key"`
	Address        netip.Addr         `json:"address"`
	Endpoint       netip.AddrPort     `json:"endpoint"`  // observed: UDP source or TCP remote address
	Transport      string             `json:"transport"` // "udp" or "tcp"
	LocalEndpoints []netip.AddrPort   `json:"local_endpoints"`
	LastSeen       time.Time          `json:"last_seen"`
	RelayedBytes   uint64             `json:"relayed_bytes"` // relay frame bytes forwarded from this node
	RelayID        uint32             `json:"relay_id"`
}

// ServerStats are a bridge's counters since it started.
type ServerStats struct {
	Registered    int    `json:"registered"`    // registrations now
	Registrations uint64 `json:"registrations"` // accepted Register messages, keepalives included
	Enrolments    uint64 `json:"enrolments"`    // keys enrolled with a join token
	Refused       uint64 `json:"refused"`
	Replays       uint64 `json:"replays"`     // Register/Unregister not newer than the last accepted one
	Stale         uint64 `json:"stale"`       // node messages stamped more than wire.MaxClockSkew from the bridge's clock
	BadControl    uint64 `json:"bad_control"` // control frames that did not open
	Expired       uint64 `json:"expired"`     // registrations dropped for lack of keepalives
	X25519        uint64 `json:"x25519"`      // shared keys computed: admitted keys ahead, or strangers' on a budget
	// StrangersQueued: control frames over UDP from keys whose shared key
	// was not cached, handed to the worker; StrangersLimited: such frames
	// (over UDP or first on a TCP connection) dropped over a budget.
	StrangersQueued  uint64 `json:"strangers_queued"`
	StrangersLimited uint64 `json:"strangers_limited"`
	// Challenges: Registers over UDP from an address another node's
	// registration holds, answered with a Challenge rather than taken.
	Challenges uint64 `json:"challenges"`

	Lookups        uint64 `json:"lookups"`
	LookupsLimited uint64 `json:"lookups_limited"`
	Introductions  uint64 `json:"introductions"`

	RelayedFrames            uint64 `json:"relayed_frames"`
	RelayedBytes             uint64 `json:"relayed_bytes"`
	RelayDroppedUnregistered uint64 `json:"relay_dropped_unregistered"` // sender not registered there
	RelayDroppedUnknownID    uint64 `json:"relay_dropped_unknown_id"`
	RelayDroppedRate         uint64 `json:"relay_dropped_rate"`
	RelayDroppedQueue        uint64 `json:"relay_dropped_queue"` // a TCP destination's queue was full
	RelayDroppedMalformed    uint64 `json:"relay_dropped_malformed"`
	SendErrors               uint64 `json:"send_errors"`

	TCPConns     uint64 `json:"tcp_conns"` // accepted
	TCPConnsOpen int    `json:"tcp_conns_open"`

	// Organisations (server_org.go): certificates members presented and
	// the bridge holds, documents held, certificates refused (not their
	// own, forged, expired, revoked, over the limits), hellos pushed to
	// members, and organisation messages dropped over a member's budget.
	OrgCerts        int    `json:"org_certs"`
	OrgDocs         int    `json:"org_docs"`
	OrgCertsRefused uint64 `json:"org_certs_refused"`
	OrgPushed       uint64 `json:"org_pushed"`
	OrgLimited      uint64 `json:"org_limited"`
	// Join requests (server_join.go): held now, refused (limits, bad
	// fields, stale or replayed queries, approvals that do not verify),
	// signed queries taken, approvals passed on, rejections.
	OrgJoins         int    `json:"org_joins"`
	OrgJoinsRefused  uint64 `json:"org_joins_refused"`
	OrgJoinQueries   uint64 `json:"org_join_queries"`
	OrgJoinsApproved uint64 `json:"org_joins_approved"`
	OrgJoinsRejected uint64 `json:"org_joins_rejected"`
}

type serverCounters struct {
	registrations, enrolments, refused, replays, stale, badControl, expired atomic.Uint64
	strangersQueued, strangersLimited, challenges                           atomic.Uint64
	lookups, lookupsLimited, introductions                                  atomic.Uint64
	relayedFrames, relayedBytes                                             atomic.Uint64
	dropUnregistered, dropUnknownID, dropRate, dropQueue, dropMalformed     atomic.Uint64
	sendErrors, tcpConns, x25519                                            atomic.Uint64
}

const (
	keepaliveInterval   = 15 // seconds, told to nodes in Registered
	registrationTTL     = 60 * time.Second
	janitorInterval     = 5 * time.Second
	firstFrameTimeout   = 10 * time.Second
	tcpIdleTimeout      = 2 * registrationTTL
	tcpWriteTimeout     = 10 * time.Second
	tcpQueueLen         = 1024
	maxTCPConns         = 8192
	maxPendingPerSource = 8   // TCP connections from one source (ratelimit.Source) not yet registered
	maxFirstFrame       = 512 // a Register is smaller; the first frame of a connection

	// maxRelayOut bounds the frames of one SendFrames call: a TCP read
	// can hold more frames than the Bind's send batch (wireguard-go's
	// StdNetBind sends at most conn.IdealBatchSize, 128, per call). The
	// Bind's receive batches are no larger, so it never splits a batch
	// relayed from UDP.
	maxRelayOut        = 128
	lookupRate         = 100 // per second and node
	lookupBurst        = 200
	maxCachedKeys      = 1 << 16
	pooledFrameMaxSize = 4096
)

// Server is the bridge role: it registers nodes its admission allows,
// answers their lookups, introduces them to each other and relays their
// WireGuard messages, over the node's UDP socket (HandleFrames) and over
// TCP. A registered UDP node costs a few hundred bytes: no goroutine and no
// buffer of its own.
type Server struct {
	pub       identity.PublicKey
	self      netip.Addr // the bridge's own node address
	keys      *keycache.Cache
	strangers *keycache.Strangers // opens UDP frames from keys not cached
	tcpBudget *keycache.Budget    // for first frames on TCP connections from keys not cached
	adm       *admission.Admission
	sender    FrameSender
	log       *slog.Logger
	logs      logLimiter

	tcpAddr               string
	mark                  uint32           // fwmark of the TCP listener's sockets
	relayRate, relayBurst float64          // bytes per second and bytes; 0: unlimited
	refusals              *ratelimit.Keyed // "refused" answers over UDP, per source
	challenges            *ratelimit.Keyed // challenges sent, per source
	challengeKey          [32]byte         // makes challenges (challengeFor)

	clock     clock.Clock                                      // ServerConfig.Clock, or real time
	listenTCP func(network, addr string) (net.Listener, error) // ServerConfig.ListenTCP; nil: the host's sockets

	// Hooks for tests.
	newID        func() uint32
	deriveIDs    bool // ids from keys (tests turn it off to choose ids)
	firstTimeout time.Duration

	mu       sync.RWMutex // guards the maps below and the fields of registrations marked so
	regs     map[identity.PublicKey]*registration
	byID     map[uint32]*registration
	byAddr   map[netip.Addr]*registration
	byUDP    map[netip.AddrPort]*registration
	lastTime map[identity.PublicKey]int64 // newest accepted Register/Unregister time per admitted key
	// timesDirty: lastTime changed since it was last written to timesPath.
	timesDirty bool

	timesPath  string        // where lastTime persists (register_times.go); "": nowhere
	timesMu    sync.Mutex    // serializes saveTimesDue; guards timesSaved
	timesSaved time.Time     // when lastTime was last pruned and written
	timesSaves atomic.Uint64 // writes, for tests

	handleMu sync.RWMutex // HandleFrames holds it shared; Close exclusively
	closed   bool         // guarded by handleMu

	connMu  sync.Mutex // guards ln, conns, started, closing
	ln      net.Listener
	conns   map[*serverConn]struct{}
	pending map[netip.Addr]int // connections per source (ratelimit.Source) still awaiting their first frame
	started bool
	closing bool

	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once

	outs chan *relayOut // free list for HandleFrames and TCP readers

	org   *orgState  // members' certificates and organisation documents (server_org.go)
	joins *joinTable // join requests (server_join.go)

	stats serverCounters
}

// registration is one registered node.
type registration struct {
	key  identity.PublicKey
	addr netip.Addr
	id   uint32

	// Guarded by Server.mu.
	endpoint netip.AddrPort // observed: UDP source, or TCP remote address
	tcp      *serverConn    // the connection it registered over; nil: UDP
	local    []netip.AddrPort
	lastSeen int64 // Unix nanoseconds

	relayed atomic.Uint64
	relay   ratelimit.Bucket
	lookup  ratelimit.Bucket
}

// NewServer builds a bridge and loads its state file. Start starts the TCP
// listener and the expiry of idle registrations; Close releases it.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Key.IsZero() {
		return nil, errors.New("bridge: no private key")
	}
	if cfg.Sender == nil {
		return nil, errors.New("bridge: no frame sender")
	}
	if cfg.RelayMbit < 0 {
		return nil, fmt.Errorf("bridge: relay rate %d Mbit/s is negative", cfg.RelayMbit)
	}
	adm, err := admission.Open(cfg.StateFile, cfg.Allow)
	if err != nil {
		return nil, err
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pub := cfg.Key.Public()
	s := &Server{
		pub:          pub,
		self:         pub.Address(),
		adm:          adm,
		sender:       cfg.Sender,
		log:          log,
		tcpAddr:      cfg.TCP,
		mark:         cfg.Mark,
		clock:        clock.Or(cfg.Clock),
		listenTCP:    cfg.ListenTCP,
		newID:        rand.Uint32,
		deriveIDs:    true,
		firstTimeout: firstFrameTimeout,
		regs:         make(map[identity.PublicKey]*registration),
		byID:         make(map[uint32]*registration),
		byAddr:       make(map[netip.Addr]*registration),
		byUDP:        make(map[netip.AddrPort]*registration),
		lastTime:     make(map[identity.PublicKey]int64),
		conns:        make(map[*serverConn]struct{}),
		pending:      make(map[netip.Addr]int),
		done:         make(chan struct{}),
		outs:         make(chan *relayOut, 4),
		refusals:     ratelimit.NewKeyed(keycache.SourceRate, keycache.SourceBurst, keycache.MaxSources),
		challenges:   ratelimit.NewKeyed(keycache.SourceRate, keycache.SourceBurst, keycache.MaxSources),
		tcpBudget:    keycache.NewBudget(),
	}
	if _, err := cryptorand.Read(s.challengeKey[:]); err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	if cfg.RelayMbit > 0 {
		s.relayRate = float64(cfg.RelayMbit) * 1e6 / 8
		s.relayBurst = max(s.relayRate/4, wire.MaxFrame)
	}
	s.timesPath = registerTimesPath(cfg.StateFile)
	if err := s.loadTimes(); err != nil {
		return nil, err
	}
	s.org = newOrgState(s)
	s.joins = newJoinTable()
	s.keys = keycache.NewAdmitted(cfg.Key, maxCachedKeys, &s.stats.x25519)
	s.keys.SetClock(s.clock)
	// The admitted keys' shared keys are computed ahead by the worker, so
	// that their frames open on the receive goroutine from the start.
	s.keys.Pin(adm.AdmittedKeys())
	s.strangers = keycache.StartStrangers(s.keys, s.handleStranger, keycache.Counters{Queued: &s.stats.strangersQueued, Limited: &s.stats.strangersLimited, Failed: &s.stats.badControl})
	s.strangers.PinSoon()
	return s, nil
}

// Start starts the TCP listener, if configured, and the expiry of idle
// registrations.
func (s *Server) Start() error {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.closing {
		return net.ErrClosed
	}
	if s.started {
		return errors.New("bridge: already started")
	}
	if s.tcpAddr != "" {
		listen := s.listenTCP
		if listen == nil {
			listen = transport.MarkedListen(s.mark)
		}
		ln, err := listen("tcp", s.tcpAddr)
		if err != nil {
			return fmt.Errorf("bridge tcp listen %s: %w", s.tcpAddr, err)
		}
		s.ln = ln
		s.wg.Add(1)
		go s.acceptLoop(ln)
		s.log.Info("bridge: listening", "addr", ln.Addr().String(), "transport", "tcp")
	}
	s.started = true
	s.wg.Add(2)
	go s.janitor()
	go s.orgLoop()
	return nil
}

// TCPAddr is the bound TCP address, or nil if the bridge has no TCP
// listener.
func (s *Server) TCPAddr() net.Addr {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Close stops the listener, closes the TCP connections, waits for the
// bridge's goroutines and writes the newest Register times. Frames handed
// to HandleFrames afterwards are dropped. The worker stops once no
// HandleFrames runs any more, and before Close returns (so before the
// node closes the Bind it sends with).
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.handleMu.Lock()
		s.closed = true
		s.handleMu.Unlock()
		s.strangers.Stop()
		close(s.done)
		s.connMu.Lock()
		s.closing = true
		ln := s.ln
		conns := make([]*serverConn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.connMu.Unlock()
		if ln != nil {
			ln.Close()
		}
		for _, c := range conns {
			c.close()
		}
		s.wg.Wait()
		s.saveTimesDue(s.now(), true)
	})
	return nil
}

// HandleFrames handles bridge frames received on the node's UDP socket
// (transport.FrameHandler). Relay frames are rewritten in place and
// forwarded without allocating.
func (s *Server) HandleFrames(frames [][]byte, srcs []netip.AddrPort) {
	s.handleMu.RLock()
	defer s.handleMu.RUnlock()
	if s.closed {
		return
	}
	now := s.now()
	out := s.getOut()
	for i, f := range frames {
		if len(f) == 0 || i >= len(srcs) {
			continue
		}
		src := netip.AddrPortFrom(srcs[i].Addr().Unmap(), srcs[i].Port())
		switch f[0] {
		case wire.FrameRelay:
			s.relay(f, src, nil, now, out)
		case wire.FrameControl:
			s.control(f, src, nil, now)
		}
	}
	s.flush(out)
	s.putOut(out)
}

// relayOut collects consecutive relay frames for one UDP destination.
type relayOut struct {
	dst    netip.AddrPort
	frames [][]byte
}

// getOut takes a relayOut from the server's free list. (A sync.Pool
// would do, but under the race detector it drops items at random.)
func (s *Server) getOut() *relayOut {
	select {
	case o := <-s.outs:
		return o
	default:
		return &relayOut{frames: make([][]byte, 0, 128)}
	}
}

func (s *Server) putOut(o *relayOut) {
	select {
	case s.outs <- o:
	default:
	}
}

func (s *Server) flush(o *relayOut) {
	if len(o.frames) == 0 {
		return
	}
	if err := s.sender.SendFrames(o.frames, o.dst); err != nil {
		s.stats.sendErrors.Add(1)
		s.logLimited(slog.LevelWarn, "bridge: relay send failed", "addr", o.dst, "err", err)
	}
	clear(o.frames)
	o.frames = o.frames[:0]
}

// relay forwards one relay frame that came from src over UDP (c == nil) or
// over the TCP connection c.
func (s *Server) relay(f []byte, src netip.AddrPort, c *serverConn, now time.Time, out *relayOut) {
	id, _, ok := wire.ParseRelay(f)
	if !ok {
		s.stats.dropMalformed.Add(1)
		return
	}
	s.mu.RLock()
	var from *registration
	if c != nil {
		if r := c.reg; r != nil && r.tcp == c {
			from = r
		}
	} else {
		from = s.byUDP[src]
	}
	to := s.byID[id]
	var toUDP netip.AddrPort
	var toTCP *serverConn
	if to != nil {
		toUDP, toTCP = to.endpoint, to.tcp
	}
	s.mu.RUnlock()
	switch {
	case from == nil:
		s.stats.dropUnregistered.Add(1)
		return
	case to == nil || (toTCP == nil && !toUDP.IsValid()):
		s.stats.dropUnknownID.Add(1)
		return
	case s.relayRate > 0 && !from.relay.Allow(now.UnixNano(), float64(len(f)), s.relayRate, s.relayBurst):
		s.stats.dropRate.Add(1)
		return
	}
	binary.BigEndian.PutUint32(f[4:8], from.id)
	if toTCP != nil {
		if !toTCP.enqueue(f) {
			s.stats.dropQueue.Add(1)
			return
		}
	} else {
		if len(out.frames) > 0 && (out.dst != toUDP || len(out.frames) >= maxRelayOut) {
			s.flush(out)
		}
		out.dst = toUDP
		out.frames = append(out.frames, f)
	}
	from.relayed.Add(uint64(len(f)))
	s.stats.relayedFrames.Add(1)
	s.stats.relayedBytes.Add(uint64(len(f)))
}

// control opens and acts on a control frame from src (over TCP: c's
// remote address). It opens here only with a cached shared key (an
// admitted node's): no X25519 on a receive goroutine. A frame over UDP
// from another key goes to the worker (keycache); over TCP, where it
// can only be a connection's first frame, the connection's own goroutine
// opens it within the TCP budget.
func (s *Server) control(f []byte, src netip.AddrPort, c *serverConn, now time.Time) {
	from, err := wire.Sender(f)
	if err != nil {
		s.stats.badControl.Add(1)
		return
	}
	if from == s.pub {
		return
	}
	if c != nil {
		s.mu.RLock()
		bound := c.key
		s.mu.RUnlock()
		if !bound.IsZero() && bound != from {
			s.stats.badControl.Add(1) // a connection carries one node
			return
		}
	}
	shared := s.keys.Cached(from)
	if shared == nil {
		// The budgets for strangers' frames spend CPU (X25519): real
		// time, not the bridge's clock.
		if c == nil {
			s.strangers.Submit(f, src, time.Now())
			return
		}
		if len(f) > keycache.MaxStrangerFrame || !s.tcpBudget.Allow(src, time.Now()) {
			s.stats.strangersLimited.Add(1)
			return
		}
		shared = s.keys.Compute(from)
		s.keys.PinComputed(from, shared)
	}
	m, err := wire.Open(f, shared)
	if err != nil {
		s.stats.badControl.Add(1)
		return
	}
	s.act(from, shared, m, src, c, now)
}

// handleStranger acts, on the worker, on a UDP frame from a key whose
// shared key was not cached when it came.
func (s *Server) handleStranger(from identity.PublicKey, shared *wire.SharedKey, m wire.Message, src netip.AddrPort) {
	if from != s.pub {
		s.act(from, shared, m, src, nil, s.now())
	}
}

// act acts on a message from from (proven: it opened with shared).
func (s *Server) act(from identity.PublicKey, shared *wire.SharedKey, m wire.Message, src netip.AddrPort, c *serverConn, now time.Time) {
	switch m.Kind {
	case wire.KindRegister:
		s.register(from, shared, m, src, c, now)
	case wire.KindLookup:
		s.lookup(from, shared, m, src, c, now)
	case wire.KindUnregister:
		s.unregister(from, m, src, c, now)
	case wire.KindOrg:
		s.orgMessage(from, shared, m, src, c, now)
	}
}

// endpointsLocked lists how to reach reg: its observed UDP endpoint (if it
// registered over UDP), then its local endpoints.
func endpointsLocked(reg *registration) []netip.AddrPort {
	eps := make([]netip.AddrPort, 0, 1+len(reg.local))
	if reg.tcp == nil && reg.endpoint.IsValid() {
		eps = append(eps, reg.endpoint)
	}
	return append(eps, reg.local...)
}

// lookup answers a Lookup from from (whose frame opened with shared) and
// introduces it to the node it found.
func (s *Server) lookup(from identity.PublicKey, shared *wire.SharedKey, m wire.Message, src netip.AddrPort, c *serverConn, now time.Time) {
	s.mu.RLock()
	req := s.regs[from]
	if req == nil || !onPathLocked(req, src, c) {
		s.mu.RUnlock()
		return
	}
	s.mu.RUnlock()
	if clockRefusal(m.Time, now) != "" {
		s.stats.stale.Add(1) // a lookup captured long ago must not make the bridge introduce anyone
		return
	}
	if !req.lookup.Allow(now.UnixNano(), 1, lookupRate, lookupBurst) {
		s.stats.lookupsLimited.Add(1)
		return
	}
	s.stats.lookups.Add(1)
	reply := wire.Message{Kind: wire.KindLookupReply, Seq: m.Seq, Address: m.Address}
	if m.Address == s.self {
		reply.Found, reply.Key = true, s.pub
		s.sendControl(from, shared, reply, src, c)
		return
	}
	var intro wire.Message
	var introDst netip.AddrPort
	var introConn *serverConn
	s.mu.RLock()
	if t := s.byAddr[m.Address]; t != nil {
		reply.Found, reply.Key, reply.ID, reply.Endpoints = true, t.key, t.id, endpointsLocked(t)
		if t != req {
			intro = wire.Message{Kind: wire.KindIntroduce, Key: req.key, ID: req.id, Endpoints: endpointsLocked(req)}
			introDst, introConn = t.endpoint, t.tcp
		}
	}
	s.mu.RUnlock()
	s.sendControl(from, shared, reply, src, c)
	if reply.Found {
		s.sendCerts(from, shared, reply.Key, now)
	}
	if intro.Kind == wire.KindIntroduce {
		s.stats.introductions.Add(1)
		s.sendControl(reply.Key, nil, intro, introDst, introConn)
		s.sendCerts(reply.Key, nil, from, now)
	}
}

// sendControl seals m to the key to (with shared, if not nil) and sends
// it over c, or over UDP to dst.
func (s *Server) sendControl(to identity.PublicKey, shared *wire.SharedKey, m wire.Message, dst netip.AddrPort, c *serverConn) {
	frame, err := s.keys.Seal(to, shared, m)
	if err != nil {
		s.logLimited(slog.LevelWarn, "bridge: cannot seal a control message", "peer", to.String(), "err", err)
		return
	}
	if c != nil {
		if !c.enqueue(frame) {
			s.stats.sendErrors.Add(1)
		}
		return
	}
	if err := s.sender.SendFrames([][]byte{frame}, dst); err != nil {
		s.stats.sendErrors.Add(1)
		s.logLimited(slog.LevelWarn, "bridge: send failed", "addr", dst, "err", err)
	}
}

// CreateToken makes a join token that enrols up to uses keys within ttl.
// Only its SHA-256 is stored: the token is shown this once.
func (s *Server) CreateToken(uses int, ttl time.Duration) (string, admission.TokenInfo, error) {
	token, info, err := s.adm.CreateToken(uses, ttl, s.now())
	if err != nil {
		return "", admission.TokenInfo{}, err
	}
	s.log.Info("bridge: join token created", "token_id", info.ID, "uses", info.UsesLeft, "expires", info.Expires)
	return token, info, nil
}

// Tokens lists the join tokens (never the tokens themselves), oldest first.
func (s *Server) Tokens() []admission.TokenInfo { return s.adm.Tokens(s.now()) }

// Nodes lists the registered nodes by address.
func (s *Server) Nodes() []NodeInfo {
	s.mu.RLock()
	out := make([]NodeInfo, 0, len(s.regs))
	for _, r := range s.regs {
		out = append(out, NodeInfo{
			PublicKey:      r.key,
			Address:        r.addr,
			Endpoint:       r.endpoint,
			Transport:      transportName(r.tcp),
			LocalEndpoints: append([]netip.AddrPort{}, r.local...),
			LastSeen:       time.Unix(0, r.lastSeen).UTC(),
			RelayedBytes:   r.relayed.Load(),
			RelayID:        r.id,
		})
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b NodeInfo) int { return a.Address.Compare(b.Address) })
	return out
}

func transportName(c *serverConn) string {
	if c != nil {
		return "tcp"
	}
	return "udp"
}

// Stats returns the counters.
func (s *Server) Stats() ServerStats {
	c := &s.stats
	st := ServerStats{
		Registrations: c.registrations.Load(), Enrolments: c.enrolments.Load(), Refused: c.refused.Load(),
		Replays: c.replays.Load(), Stale: c.stale.Load(), BadControl: c.badControl.Load(), Expired: c.expired.Load(),
		X25519: c.x25519.Load(), StrangersQueued: c.strangersQueued.Load(), StrangersLimited: c.strangersLimited.Load(),
		Challenges: c.challenges.Load(),
		Lookups:    c.lookups.Load(), LookupsLimited: c.lookupsLimited.Load(), Introductions: c.introductions.Load(),
		RelayedFrames: c.relayedFrames.Load(), RelayedBytes: c.relayedBytes.Load(),
		RelayDroppedUnregistered: c.dropUnregistered.Load(), RelayDroppedUnknownID: c.dropUnknownID.Load(),
		RelayDroppedRate: c.dropRate.Load(), RelayDroppedQueue: c.dropQueue.Load(),
		RelayDroppedMalformed: c.dropMalformed.Load(), SendErrors: c.sendErrors.Load(),
		TCPConns: c.tcpConns.Load(),
	}
	s.mu.RLock()
	st.Registered = len(s.regs)
	s.mu.RUnlock()
	s.org.orgStats(&st)
	s.joins.joinStats(&st)
	s.connMu.Lock()
	st.TCPConnsOpen = len(s.conns)
	s.connMu.Unlock()
	return st
}

// now is the bridge's time.
func (s *Server) now() time.Time { return s.clock.Now() }

// janitor expires idle registrations and writes the Register times, on
// the bridge's clock.
func (s *Server) janitor() {
	defer s.wg.Done()
	t := s.clock.NewTicker(janitorInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C():
			now := s.now()
			s.expireIdle(now)
			s.saveTimesDue(now, false)
		}
	}
}

// logLimiter lets through a few messages per window and counts the rest.
type logLimiter struct {
	mu         sync.Mutex
	start      time.Time
	n          int
	suppressed int
}

const (
	logWindow    = 10 * time.Second
	logPerWindow = 20
)

func (s *Server) logLimited(level slog.Level, msg string, args ...any) {
	l := &s.logs
	now := time.Now() // a budget of log lines: real time, not the bridge's clock
	l.mu.Lock()
	if now.Sub(l.start) > logWindow {
		l.start, l.n = now, 0
	}
	l.n++
	if l.n > logPerWindow {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	suppressed := l.suppressed
	l.suppressed = 0
	l.mu.Unlock()
	if suppressed > 0 {
		args = append(args, "suppressed", suppressed)
	}
	s.log.Log(context.Background(), level, msg, args...)
}
