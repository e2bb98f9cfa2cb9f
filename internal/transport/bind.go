// Package transport owns the node's UDP sockets: a conn.Bind for the
// WireGuard device that gives every peer one stable Endpoint object, picks
// the path its packets take, and screens what arrives before WireGuard sees
// it.
//
// Why a custom Bind (DESIGN.md "What a measured spike taught"):
//   - wireguard-go re-points a peer at whatever Endpoint object its last
//     authenticated packet came with. If that object were "the address it
//     came from", paths (direct, later relayed) would flip per packet. Here
//     every peer has one *PeerEndpoint; the Bind decides where it sends.
//   - wireguard-go silently drops handshake initiations from unknown keys.
//     The Bind opens each initiation far enough to learn the initiator's key
//     (initiation.go) and asks an Admitter whether to add that peer first,
//     on a goroutine of its own behind cheap checks and budgets
//     (handshake.go), and refuses initiations older than the newest it
//     answered for that key (replay.go).
//   - Packets are matched to peers by the session index WireGuard put in
//     them (learned from the handshakes this node sends) and by the
//     initiator's key, never by source address alone: an address can pass
//     from one peer to another behind a NAT.
//
// Packets from a source address a peer has not used before are handed to
// WireGuard with a per-address candidate endpoint. Only when WireGuard has
// authenticated such a packet does it send through the candidate, and only
// if that packet was a transport message or a handshake response (which
// completes a handshake this node started, so cannot be replayed) does the
// Bind move the peer's direct path there. A handshake initiation never
// moves it: its answer goes back to where it came from, nothing else does.
// That is WireGuard's roaming, with the decision kept in the Bind.
//
// The UDP work itself (batching, UDP GSO/GRO, sticky source addresses) is
// wireguard-go's conn.StdNetBind, which this Bind wraps.
package transport

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/ratelimit"
)

// Admitter decides whether a node whose key is not a configured peer may
// start a session. If it returns true, it must have called Bind.SetPeer for
// key before returning: the initiation is then handed to WireGuard at once.
// src is where the initiation came from (it must not become the peer's
// path: only an authenticated transport message moves that); it is invalid
// when the initiation came through a bridge's relay. source is what
// per-source quotas should count it under: an IPv6 /64 or IPv4 address,
// or for a relayed initiation an address in the discard prefix 100::/64
// that stands for the bridge and relay id.
// It runs on the Bind's handshake goroutine, one call at a time, after the
// initiation was authenticated and found fresh; calls are rate-limited per
// source and by a node-wide budget (handshake.go). While it runs, other
// initiations wait, data does not.
type Admitter interface {
	Admit(key identity.PublicKey, src netip.AddrPort, source netip.Addr) bool
}

// Limits on what the Bind remembers.
const (
	addrsPerPeer   = 4    // recent direct addresses of a peer
	indicesPerPeer = 8    // recent session indices of a peer
	maxCandidates  = 4096 // source addresses awaiting authentication
)

var errNoPath = errors.New("no path to peer")

// Bind is the node's conn.Bind.
type Bind struct {
	inner  conn.Bind
	log    *slog.Logger
	admit  atomic.Pointer[Admitter]
	keys   atomic.Pointer[handshakeKeys]
	limits *handshakeLimits
	replay atomic.Pointer[ReplayStore]
	// hs is the initiation pipeline of the current Open (nil when closed).
	hs atomic.Pointer[handshakes]

	unknown atomic.Pointer[func(netip.AddrPort)]
	frames  atomic.Pointer[FrameHandler]

	relaysMu sync.RWMutex
	relays   map[netip.AddrPort]Relay // UDP bridges: relay frames from these are for us

	// inject carries messages that arrived outside the UDP sockets (relay
	// frames over a bridge's TCP connection) to WireGuard; see relay.go.
	injectMu sync.Mutex
	inject   *injectQueue

	// unknownReports limits reportUnknownSession per source and in all;
	// newCandidates limits how often a source may make the Bind create a
	// candidate endpoint (which takes mu for writing).
	unknownReports *ratelimit.KeyedOf[netip.AddrPort]
	unknownTotal   *rate.Limiter
	newCandidates  *ratelimit.Keyed
	candidateTotal *rate.Limiter

	mu         sync.RWMutex // guards peers, byIndex, byAddr, candidates and PeerEndpoint.addrs/indices
	peers      map[identity.PublicKey]*PeerEndpoint
	byIndex    map[uint32]*PeerEndpoint
	byAddr     map[netip.AddrPort]*PeerEndpoint // every peer's recent direct addresses
	byRelay    map[relayPath]*PeerEndpoint      // every peer's current relay path
	candidates map[candidateKey]*sourceEndpoint

	sent sentWaiters // WaitSent's (sent.go)

	stats Stats
}

// Stats counts what the Bind dropped or decided. All fields are read with Load.
type Stats struct {
	ControlDropped      atomic.Uint64 // non-WireGuard frames nobody handles
	RelayedIn           atomic.Uint64 // WireGuard messages that came through a bridge
	RelayedOut          atomic.Uint64 // WireGuard messages sent through a bridge
	UnknownSession      atomic.Uint64 // messages for a session index this node never made
	InitiationsLimited  atomic.Uint64 // over the per-source rate or the node-wide budget for strangers, or without mac2 under load
	InitiationsInvalid  atomic.Uint64 // bad mac1, or not encrypted to our key
	InitiationsDenied   atomic.Uint64 // unknown key, refused by the Admitter
	InitiationsAdmitted atomic.Uint64 // unknown key, admitted and added
	InitiationsReplayed atomic.Uint64 // not newer than the newest answered for that key
	InitiationsDropped  atomic.Uint64 // the handshake queue was full
	CookiesSent         atomic.Uint64 // cookie replies sent under load
	X25519              atomic.Uint64 // X25519 operations spent opening initiations
	Roamed              atomic.Uint64 // direct path moved to a new address
}

// NewBind returns a Bind over UDP sockets on every address.
func NewBind(log *slog.Logger) *Bind {
	return newBind(newStdBind(), log)
}

// NewBindOn returns a Bind over inner instead of the host's sockets (an
// in-memory network, in tests). inner's ReceiveFuncs must return
// *conn.StdNetEndpoint endpoints, as StdNetBind's do, and its Send take
// them.
func NewBindOn(inner conn.Bind, log *slog.Logger) *Bind {
	return newBind(inner, log)
}

func newBind(inner conn.Bind, log *slog.Logger) *Bind {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Bind{
		inner:      inner,
		log:        log,
		limits:     newHandshakeLimits(),
		peers:      make(map[identity.PublicKey]*PeerEndpoint),
		byIndex:    make(map[uint32]*PeerEndpoint),
		byAddr:     make(map[netip.AddrPort]*PeerEndpoint),
		byRelay:    make(map[relayPath]*PeerEndpoint),
		candidates: make(map[candidateKey]*sourceEndpoint),
		relays:     make(map[netip.AddrPort]Relay),

		unknownReports: ratelimit.NewKeyedOf[netip.AddrPort](1/unknownSessionInterval.Seconds(), 1, 4096),
		unknownTotal:   rate.NewLimiter(unknownReportRate, unknownReportRate),
		newCandidates:  ratelimit.NewKeyed(candidateRate, candidateBurst, sourceKeys),
		candidateTotal: rate.NewLimiter(candidateTotalRate, candidateTotalRate),
	}
	mem, _ := OpenReplayStore("", DefaultReplayKeys)
	b.replay.Store(mem)
	return b
}

// SetPrivateKey tells the Bind the node's key, which it needs to open
// handshake initiations. Until it is set, every initiation is dropped.
func (b *Bind) SetPrivateKey(k identity.PrivateKey) {
	b.keys.Store(newHandshakeKeys(k))
}

// SetReplayStore replaces the in-memory replay store with s (a persisted
// one), before the Bind opens.
func (b *Bind) SetReplayStore(s *ReplayStore) { b.replay.Store(s) }

// SetUnknownSessionHandler installs f, called with the source of a message
// for a session this node does not know, at most once per source every
// unknownSessionInterval. That is what a peer sends after this node
// restarted; if the source is a peer we know, starting a handshake with it
// restores the session at once instead of after the peer's 15 s timeout.
// f must not block.
func (b *Bind) SetUnknownSessionHandler(f func(src netip.AddrPort)) { b.unknown.Store(&f) }

// Reports of unknown sessions: once per source every
// unknownSessionInterval, unknownReportRate a second in all (anyone can
// send messages with made-up session indices).
const (
	unknownSessionInterval = 5 * time.Second
	unknownReportRate      = 100
)

// Candidate endpoints (a known session from an address its peer has not
// used: roaming, or a replayed or forged packet) per source /64 and in
// all; a message over budget is dropped (WireGuard's next one retries).
const (
	candidateRate      = 20
	candidateBurst     = 10
	candidateTotalRate = 2000
)

func (b *Bind) reportUnknownSession(src netip.AddrPort) {
	f := b.unknown.Load()
	if f == nil {
		return
	}
	now := time.Now()
	if !b.unknownReports.Allow(src, now) || !b.unknownTotal.AllowN(now, 1) {
		return
	}
	(*f)(src)
}

// SetAdmitter installs the admission decision for unknown keys.
func (b *Bind) SetAdmitter(a Admitter) { b.admit.Store(&a) }

// Stats returns the Bind's counters.
func (b *Bind) Stats() *Stats { return &b.stats }

// SetPeer registers key as a peer reachable directly at addr (an invalid
// addr: no direct address known yet) and returns its stable endpoint. An
// existing peer keeps the path it has: only authenticated traffic (and
// DirectWorks) moves a path, so re-applying a peer's configuration never
// sends it back to a stale address; addr is used if it has none.
func (b *Bind) SetPeer(key identity.PublicKey, addr netip.AddrPort) *PeerEndpoint {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.peers[key]
	if p == nil {
		p = &PeerEndpoint{key: key, handshakeMsgs: rate.NewLimiter(handshakeMsgRate, handshakeMsgRate)}
		b.peers[key] = p
	}
	if addr.IsValid() && p.direct.Load() == nil {
		addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
		p.direct.Store(&conn.StdNetEndpoint{AddrPort: addr})
		b.addAddrLocked(p, addr)
	}
	return p
}

// RemovePeer forgets key: its endpoint, addresses and session indices.
func (b *Bind) RemovePeer(key identity.PublicKey) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.peers[key]
	if p == nil {
		return
	}
	delete(b.peers, key)
	for _, idx := range p.indices {
		if b.byIndex[idx] == p {
			delete(b.byIndex, idx)
		}
	}
	for _, a := range p.addrs {
		if b.byAddr[a] == p {
			delete(b.byAddr, a)
		}
	}
	if r := p.relay.Load(); r != nil && b.byRelay[*r] == p {
		delete(b.byRelay, *r)
	}
	for a, c := range b.candidates {
		if c.peer == p {
			delete(b.candidates, a)
		}
	}
}

// Answered reports whether key's peer has sent a transport message for a
// session this node made: it received this node's handshake answer, so it
// is really there (the node's unanswered-peer eviction uses it).
func (b *Bind) Answered(key identity.PublicKey) bool {
	p := b.Peer(key)
	return p != nil && p.answered.Load()
}

// PeerAddrs returns the addresses peers use now (their recent direct
// addresses), each once: the node lets their handshakes past the kernel's
// flood limit.
func (b *Bind) PeerAddrs() []netip.Addr {
	b.mu.RLock()
	defer b.mu.RUnlock()
	seen := make(map[netip.Addr]bool, len(b.byAddr))
	out := make([]netip.Addr, 0, len(b.byAddr))
	for ap := range b.byAddr {
		if a := ap.Addr(); !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}

// owner returns the peer whose recent direct address or current relay
// path o is, or nil: initiations from there are most likely that peer
// rekeying.
func (b *Bind) owner(o hsOrigin) *PeerEndpoint {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if o.relayed {
		return b.byRelay[o.path]
	}
	return b.byAddr[o.std.AddrPort]
}

// setRelay makes rp p's relay path, in the index too.
func (b *Bind) setRelay(p *PeerEndpoint, rp relayPath) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.setRelayLocked(p, rp)
}

func (b *Bind) setRelayLocked(p *PeerEndpoint, rp relayPath) {
	if old := p.relay.Load(); old != nil {
		if *old == rp {
			return
		}
		if b.byRelay[*old] == p {
			delete(b.byRelay, *old)
		}
	}
	p.relay.Store(&rp)
	if b.peers[p.key] == p {
		b.byRelay[rp] = p
	}
}

// Peer returns the endpoint of key, or nil.
func (b *Bind) Peer(key identity.PublicKey) *PeerEndpoint {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.peers[key]
}

// Open implements conn.Bind.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := b.inner.Open(port)
	if err != nil {
		return nil, 0, err
	}
	b.hs.Store(startHandshakes(b))
	wrapped := make([]conn.ReceiveFunc, len(fns), len(fns)+1)
	for i, fn := range fns {
		wrapped[i] = b.wrapReceive(fn)
	}
	q := newInjectQueue()
	b.injectMu.Lock()
	b.inject = q
	b.injectMu.Unlock()
	wrapped = append(wrapped, b.receiveInjected(q))
	return wrapped, actual, nil
}

// Close implements conn.Bind. Receiving stops first (the sockets), then
// the handshake goroutines that receiving feeds, then the injection queue
// they feed: nothing is closed while something before it still runs.
func (b *Bind) Close() error {
	err := b.inner.Close()
	if h := b.hs.Swap(nil); h != nil {
		h.stop()
	}
	b.injectMu.Lock()
	if b.inject != nil {
		b.inject.close()
		b.inject = nil
	}
	b.injectMu.Unlock()
	return err
}

// SetMark implements conn.Bind.
func (b *Bind) SetMark(mark uint32) error { return b.inner.SetMark(mark) }

// BatchSize implements conn.Bind.
func (b *Bind) BatchSize() int { return b.inner.BatchSize() }

// ParseEndpoint implements conn.Bind. The engine names a peer's endpoint by
// the hex form of its public key (the peer must be registered with SetPeer);
// a plain "ip:port" gives an endpoint outside any peer.
func (b *Bind) ParseEndpoint(s string) (conn.Endpoint, error) {
	if len(s) == 64 {
		if raw, err := hex.DecodeString(s); err == nil {
			var key identity.PublicKey
			copy(key[:], raw)
			if p := b.Peer(key); p != nil {
				return p, nil
			}
			return nil, fmt.Errorf("endpoint for unregistered peer %s", key.ShortString())
		}
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return &conn.StdNetEndpoint{AddrPort: ap}, nil
}

// EndpointName is what ParseEndpoint accepts for a registered peer.
func EndpointName(key identity.PublicKey) string { return hex.EncodeToString(key[:]) }

// Send implements conn.Bind.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	p, err := b.send(bufs, ep)
	if err == nil && p != nil {
		b.noteSent(p, bufs)
	}
	return err
}

// send sends bufs to ep, and returns the peer they went to (nil: none).
func (b *Bind) send(bufs [][]byte, ep conn.Endpoint) (*PeerEndpoint, error) {
	var p *PeerEndpoint
	switch e := ep.(type) {
	case *PeerEndpoint:
		p = e
	case *sourceEndpoint:
		if e.peer == nil {
			return nil, b.inner.Send(bufs, e.std)
		}
		p = e.peer
		if e.promotes {
			// WireGuard sends through a candidate only after it
			// authenticated a packet that came with it: a transport
			// message or a handshake response, so the peer is there now.
			b.promote(e)
			break
		}
		// The candidate of an initiation: the handshake's answer goes
		// back there, the peer's path stays where it is (a recorded or
		// relayed initiation must not steer this node's traffic).
		if handshakeOnly(bufs) || !p.hasPath() {
			b.learnIndices(bufs, p)
			return p, b.inner.Send(bufs, e.std)
		}
	case *relayCandidate:
		// Likewise for a relay path.
		p = e.peer
		if e.promotes {
			if cur := p.relay.Load(); cur == nil || *cur != e.path {
				b.setRelay(p, e.path)
			}
			break
		}
		if handshakeOnly(bufs) || !p.hasPath() {
			b.learnIndices(bufs, p)
			return p, b.sendRelay(bufs, &e.path)
		}
	default:
		return nil, b.inner.Send(bufs, ep)
	}
	b.learnIndices(bufs, p)
	d := p.direct.Load()
	if r := p.relay.Load(); r != nil && (d == nil || !p.directAlive()) {
		return p, b.sendRelay(bufs, r)
	}
	if d == nil {
		return p, fmt.Errorf("send to %s: %w", p.key.ShortString(), errNoPath)
	}
	return p, b.inner.Send(bufs, d)
}

// handshakeOnly reports whether bufs hold only handshake messages
// (initiations, responses, cookie replies): no transport data.
func handshakeOnly(bufs [][]byte) bool {
	for _, buf := range bufs {
		if len(buf) == 0 || buf[0] == msgTransport {
			return false
		}
	}
	return true
}

// learnIndices records the session index of each handshake message this
// node sends, so that replies and data for that session can be matched to
// the peer whatever address they come from.
func (b *Bind) learnIndices(bufs [][]byte, p *PeerEndpoint) {
	for _, buf := range bufs {
		if !(len(buf) == initiationSize && buf[0] == msgInitiation) && !(len(buf) == responseSize && buf[0] == msgResponse) {
			continue
		}
		idx := binary.LittleEndian.Uint32(buf[4:8])
		b.mu.Lock()
		old := p.indices[p.nextIndex]
		if b.byIndex[old] == p {
			delete(b.byIndex, old)
		}
		p.indices[p.nextIndex] = idx
		p.nextIndex = (p.nextIndex + 1) % indicesPerPeer
		b.byIndex[idx] = p
		b.mu.Unlock()
	}
}

// wrapReceive screens each received batch: WireGuard messages get their
// peer's endpoint (or a candidate), everything else is dropped by setting
// its size to zero, which WireGuard skips.
func (b *Bind) wrapReceive(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(bufs, sizes, eps)
		if err != nil {
			return n, err
		}
		b.screen(bufs[:n], sizes, eps)
		return n, nil
	}
}

// screen matches each received message to its peer, dropping (size zero)
// what is not for WireGuard or belongs to no peer. Handshake initiations
// leave the batch for the handshake pipeline (handshake.go), which hands
// them to WireGuard later if they pass.
func (b *Bind) screen(bufs [][]byte, sizes []int, eps []conn.Endpoint) {
	var (
		lastIdx  uint32
		lastAddr netip.AddrPort
		lastEp   conn.Endpoint
		frames   *frameBatch
	)
	defer func() {
		if frames != nil {
			frames.deliver(b)
		}
	}()
	for i := range bufs {
		msg := bufs[i][:sizes[i]]
		std, ok := eps[i].(*conn.StdNetEndpoint)
		if !ok || len(msg) < 4 {
			sizes[i] = 0
			continue
		}
		src := std.AddrPort
		if id, inner, ok := wire.ParseRelay(msg); ok {
			if r := b.udpRelay(src); r != nil {
				// From a bridge we registered with: a peer's message.
				path := relayPath{via: r, id: id}
				n := copy(bufs[i], inner) // overwrites msg
				sizes[i] = n
				ep := b.relayed(bufs[i][:n], path)
				if ep == nil {
					sizes[i] = 0
				} else {
					eps[i] = ep
				}
				continue
			}
		}
		if msg[1]|msg[2]|msg[3] != 0 || msg[0] < msgInitiation || msg[0] > msgTransport {
			if frames == nil {
				frames = getFrameBatch()
			}
			frames.add(msg, src)
			sizes[i] = 0
			continue
		}
		var ep conn.Endpoint
		switch msg[0] {
		case msgInitiation:
			if h := b.hs.Load(); h != nil {
				h.submit(msg, hsOrigin{std: std})
			}
		case msgTransport, msgCookie, msgResponse:
			off := 4
			if msg[0] == msgResponse {
				off = 8 // after the sender index
			}
			if len(msg) < off+4 {
				break
			}
			idx := binary.LittleEndian.Uint32(msg[off : off+4])
			if lastEp != nil && idx == lastIdx && src == lastAddr {
				ep = lastEp
				break
			}
			ep = b.bySession(idx, std, msg[0])
			if ep != nil {
				lastIdx, lastAddr, lastEp = idx, src, ep
			}
		}
		if ep == nil {
			sizes[i] = 0
			continue
		}
		eps[i] = ep
	}
}

// bySession maps a message of type typ for session idx to its peer's
// endpoint; from an address the peer has not used, a candidate that moves
// the peer's path if the message, once authenticated, proves the peer is
// there (a transport message or a handshake response, not a cookie).
func (b *Bind) bySession(idx uint32, std *conn.StdNetEndpoint, typ byte) conn.Endpoint {
	b.mu.RLock()
	p := b.byIndex[idx]
	known := p != nil && p.knowsAddrLocked(std.AddrPort)
	b.mu.RUnlock()
	if p == nil {
		b.stats.UnknownSession.Add(1)
		b.reportUnknownSession(std.AddrPort)
		return nil
	}
	if !p.sawMessage(typ) {
		return nil
	}
	if known {
		return p
	}
	return b.candidate(std, p, typ != msgCookie)
}
