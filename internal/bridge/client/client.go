// Package client is a node's side of the bridge protocol: it registers
// with the bridges the config names and keeps those registrations alive
// (over UDP, or TCP when UDP gets no answer: register.go, tcp.go), looks
// addresses up through them and checks every answer against the address
// it asked for (lookup.go), and hands the peers they introduce to a
// nat.Prober, whose rounds it times (probe.go). Frames reach it from the
// node's Bind (HandleFrames), and it opens them without an X25519 on the
// receive goroutine (keycache).
package client

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/keycache"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/clock"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/nat"
	"github.com/tomoe-net/tomoe/internal/transport"
)

// Client timing.
const (
	registerRetry     = time.Second      // resend an unanswered Register
	udpAttempts       = 3                // unanswered Registers over UDP before trying TCP
	defaultKeepalive  = 15 * time.Second // re-register this often unless the bridge says otherwise
	registrationLapse = 3                // keepalives without an answer: registration lost
	lookupTimeout     = 2 * time.Second
	lookupRetry       = 400 * time.Millisecond
	probeInterval     = time.Second            // the prober's slow rounds
	probeBurst        = 100 * time.Millisecond // its fast rounds, right after an introduction
	refreshInterval   = 20 * time.Second       // look relayed peers up again this often
	maxRefresh        = 64                     // peers looked up again per round
	maxAltSources     = 4                      // other addresses a bridge may answer from
	tcpDialTimeout    = 3 * time.Second
)

// BridgeConfig is one bridge a node joins.
type BridgeConfig struct {
	Endpoint string // host:port, UDP and TCP
	Key      identity.PublicKey
	Token    string // join credential for the first registration, or ""
}

// Config configures a node's side of its bridges.
type Config struct {
	Key     identity.PrivateKey
	Bridges []BridgeConfig
	Bind    *transport.Bind
	Log     *slog.Logger
	// Wants reports whether this node would talk to key: it answers probes
	// and probes back only for those (its policy allows the key, or it is a
	// peer already). It runs on the UDP receive goroutine, for every control
	// frame from a sender that is not a bridge: it must be cheap and must
	// not wait for a lock that is held across other work.
	Wants func(identity.PublicKey) bool
	// LocalEndpoints lists this node's own addresses and port to tell the
	// bridge (for peers on the same LAN); nil: none.
	LocalEndpoints func() []netip.AddrPort
	// Mark, if not zero, is the fwmark of the TCP connections to bridges,
	// so that the node's own routes (an exit node's default route) never
	// capture them.
	Mark uint32
	// Resolver looks up the bridges' endpoint names; nil is
	// net.DefaultResolver. Where Mark is set, it should mark its queries
	// too (the node passes routes.Resolver).
	Resolver *net.Resolver
	// Clock decides the client's timing: Register retries, keepalives and
	// the lapse of a registration, lookup retries and timeouts, probe
	// rounds and refreshes, the stamps on its messages and the freshness
	// of introductions; nil: real time. Socket deadlines, dial and DNS
	// timeouts stay on real time (they are the kernel's and the net
	// package's), and so does the CPU budget for strangers' frames.
	Clock clock.Clock
	// DialTCP, if not nil, connects to a bridge over TCP instead of the
	// host's sockets (an in-memory network, in tests); Mark does not
	// apply to it. The context carries the dial timeout.
	DialTCP func(ctx context.Context, network, addr string) (net.Conn, error)
	// InterfaceAddrs, if not nil, lists this host's addresses with their
	// networks, in net.InterfaceAddrs's form, instead of the host's own:
	// the prober never probes their broadcast addresses.
	InterfaceAddrs func() ([]net.Addr, error)
	// OrgMessage, if not nil, is given the payload of each Org message
	// from a bridge (one encoded orgsync message, unchecked) and the
	// bridge's key. It runs on a receive goroutine: it must not block (the
	// node queues) and must not keep payload after it returns.
	OrgMessage func(bridge identity.PublicKey, payload []byte)
	// OnRegistered, if not nil, is called each time a registration with a
	// bridge is confirmed after the client was not registered there (the
	// first time, and after a lapse or a refusal), so the node can present
	// its certificates and its hello (SendOrg). It is called without the
	// client's locks held, on a receive goroutine: it must not block.
	OnRegistered func(bridge identity.PublicKey)
}

// Client registers a node with its bridges, looks up addresses through
// them, and probes for direct paths to the peers they introduce.
type Client struct {
	cfg       Config
	log       *slog.Logger
	clock     clock.Clock // cfg.Clock, or real time
	keys      *keycache.Cache
	strangers *keycache.Strangers // opens frames from senders whose key is not cached
	bridges   []*bridgeConn
	prober    *nat.Prober     // direct paths to peers
	bcast     *nat.Broadcasts // this host's broadcast addresses, never probed (the prober's)

	handleMu sync.RWMutex // HandleFrames holds it shared; Close exclusively
	closed   bool         // guarded by handleMu

	mu      sync.Mutex // guards lookups
	lookups map[uint64]chan lookupAnswer

	seq        atomic.Uint64
	refreshNow chan bool
	// probeTick paces probeLoop's rounds: every probeBurst while
	// fastRounds, else every probeInterval (burst, paceRounds).
	probeTick  clock.Ticker
	fastRounds atomic.Bool
	refreshing atomic.Bool
	stop       chan struct{}
	closeOnce  sync.Once
	wg         sync.WaitGroup

	stats Stats
}

// Stats counts what the client saw.
type Stats struct {
	Lookups        atomic.Uint64
	LookupsFound   atomic.Uint64
	WrongAnswers   atomic.Uint64 // lookup answers whose key does not own the address
	ProbesSent     atomic.Uint64
	ProbesLimited  atomic.Uint64 // probes not sent: over the rate per peer or in all
	ProbeAcks      atomic.Uint64 // answers to our probes (and challenges) taken
	ProbesAnswered atomic.Uint64
	ProbesRefused  atomic.Uint64 // probes not answered: stale, answered before, or over the rate
	Dropped        atomic.Uint64 // control frames that did not open or were not expected
	X25519         atomic.Uint64 // shared keys computed: ahead (bridges, known keys), or by the worker
	Strangers      atomic.Uint64 // control frames from senders whose key was not cached, handed to the worker
	// StrangersLimited: such frames dropped on the receive goroutine, over
	// the budget of their source or of the node, or with the queue full.
	StrangersLimited atomic.Uint64
}

// New prepares the client; Start begins registering.
func New(cfg Config) *Client {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Wants == nil {
		cfg.Wants = func(identity.PublicKey) bool { return false }
	}
	c := &Client{
		cfg:        cfg,
		log:        cfg.Log,
		clock:      clock.Or(cfg.Clock),
		bcast:      nat.NewBroadcasts(),
		lookups:    make(map[uint64]chan lookupAnswer),
		refreshNow: make(chan bool, 1),
		stop:       make(chan struct{}),
	}
	if cfg.InterfaceAddrs != nil {
		c.bcast.SetSource(cfg.InterfaceAddrs)
	}
	c.keys = keycache.New(cfg.Key, 65536, &c.stats.X25519)
	c.keys.SetClock(c.clock)
	c.seq.Store(uint64(time.Now().UnixNano())) // a seed, not a time: differs across restarts
	c.prober = nat.NewProber(nat.Config{Paths: cfg.Bind, Sealer: c.keys, Broadcasts: c.bcast, Clock: c.clock, Counters: nat.Counters{
		Sent: &c.stats.ProbesSent, Limited: &c.stats.ProbesLimited, Acks: &c.stats.ProbeAcks,
		Answered: &c.stats.ProbesAnswered, Refused: &c.stats.ProbesRefused, Dropped: &c.stats.Dropped}})
	for _, bc := range cfg.Bridges {
		c.bridges = append(c.bridges, &bridgeConn{c: c, cfg: bc, state: "starting", answered: make(chan struct{}, 1)})
		c.keys.PinNow(bc.Key) // a handful, here: never on a receive goroutine
	}
	c.strangers = keycache.StartStrangers(c.keys, c.handleStranger, keycache.Counters{Queued: &c.stats.Strangers, Limited: &c.stats.StrangersLimited, Failed: &c.stats.Dropped})
	// Here rather than in Start: frames (introductions) may be handled
	// before Start, and burst resets the ticker.
	c.probeTick = c.clock.NewTicker(probeBurst)
	c.fastRounds.Store(true)
	return c
}

// SetKnownKeys tells the client the keys this node knows in advance (its
// static peers, the keys its rules name), replacing the previous ones.
// Their shared keys are computed ahead, on the client's worker: their
// frames then open at once, and a forged frame that claims one of them
// costs no X25519. The bridges' keys are always kept.
func (c *Client) SetKnownKeys(keys []identity.PublicKey) {
	bridges := make([]identity.PublicKey, len(c.bridges))
	for i, b := range c.bridges {
		bridges[i] = b.cfg.Key
	}
	c.keys.SetPinned(keys, bridges)
	c.strangers.PinSoon()
}

// Stats returns the client's counters.
func (c *Client) Stats() *Stats { return &c.stats }

// Start registers with every bridge and keeps the registrations alive.
func (c *Client) Start() {
	for _, b := range c.bridges {
		c.wg.Add(1)
		go b.run()
	}
	c.wg.Add(1)
	go c.probeLoop()
}

// Close unregisters (best effort) and stops. Frames handed to
// HandleFrames afterwards are dropped; the worker stops after the frames
// in flight are handled, before Close returns (and so before the node
// closes the Bind it sends with).
func (c *Client) Close() {
	c.closeOnce.Do(c.close)
}

func (c *Client) close() {
	for _, b := range c.bridges {
		b.send(wire.Message{Kind: wire.KindUnregister})
	}
	c.handleMu.Lock()
	c.closed = true
	c.handleMu.Unlock()
	close(c.stop)
	for _, b := range c.bridges {
		b.closeTCP()
	}
	c.wg.Wait()
	c.probeTick.Stop()
	c.strangers.Stop()
}

// BridgeStatus is one bridge's state (the admin API shows it).
type BridgeStatus struct {
	Endpoint     string
	PublicKey    string
	State        string // starting, registering, registered, refused, unreachable
	Transport    string // udp or tcp, once registered
	Observed     string // this node's address as the bridge sees it
	RelayID      uint32
	LastRegister *time.Time
	Error        string
}

// Status reports every bridge's state.
func (c *Client) Status() []BridgeStatus {
	out := make([]BridgeStatus, 0, len(c.bridges))
	for _, b := range c.bridges {
		b.mu.Lock()
		s := BridgeStatus{Endpoint: b.cfg.Endpoint, PublicKey: b.cfg.Key.String(), State: b.state, Transport: b.transport, RelayID: b.id, Error: b.err}
		if b.observed.IsValid() {
			s.Observed = b.observed.String()
		}
		if !b.lastOK.IsZero() {
			t := b.lastOK.UTC()
			s.LastRegister = &t
		}
		b.mu.Unlock()
		out = append(out, s)
	}
	return out
}

// HandleFrames implements transport.FrameHandler: control frames from
// bridges and probes from peers. It runs on a receive goroutine and does
// no X25519 (see keycache).
func (c *Client) HandleFrames(frames [][]byte, srcs []netip.AddrPort) {
	c.handleMu.RLock()
	defer c.handleMu.RUnlock()
	if c.closed {
		return // a receive goroutine still draining
	}
	for i, f := range frames {
		if i < len(srcs) {
			c.handleFrame(f, srcs[i], nil)
		}
	}
}

// handleFrame handles one control frame that came over UDP from src, or
// over a bridge's TCP connection (via set). A frame opens here only with a
// shared key that is cached; a frame from another sender this node would
// talk to goes to the worker, within its budgets.
func (c *Client) handleFrame(frame []byte, src netip.AddrPort, via *bridgeConn) {
	from, err := wire.Sender(frame)
	if err != nil {
		c.stats.Dropped.Add(1)
		return
	}
	// Only our bridges and nodes we would talk to are worth opening.
	b := c.bridgeByKey(from)
	if b == nil && (via != nil || (!c.cfg.Wants(from) && c.cfg.Bind.Peer(from) == nil)) {
		c.stats.Dropped.Add(1)
		return
	}
	k := c.keys.Cached(from)
	if k == nil {
		// Not a bridge (their keys are pinned by New). The budget spends
		// CPU: real time, not the client's clock.
		c.strangers.Submit(frame, src, time.Now())
		return
	}
	m, err := wire.Open(frame, k)
	if err != nil {
		c.stats.Dropped.Add(1)
		return
	}
	if b != nil {
		b.handle(m, src, via != nil)
		return
	}
	c.prober.Handle(from, k, m, src)
}

// handleStranger acts, on the worker, on a frame from a sender whose key
// was not cached when it came: a peer (a bridge's key is always cached).
func (c *Client) handleStranger(from identity.PublicKey, shared *wire.SharedKey, m wire.Message, src netip.AddrPort) {
	if b := c.bridgeByKey(from); b != nil {
		b.handle(m, src, false)
		return
	}
	c.prober.Handle(from, shared, m, src)
}

func (c *Client) bridgeByKey(k identity.PublicKey) *bridgeConn {
	for _, b := range c.bridges {
		if b.cfg.Key == k {
			return b
		}
	}
	return nil
}

func (c *Client) stopped() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

// sleep waits d of the client's clock; false if the client stopped first.
func (c *Client) sleep(d time.Duration) bool {
	t := c.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.stop:
		return false
	case <-t.C():
		return true
	}
}
