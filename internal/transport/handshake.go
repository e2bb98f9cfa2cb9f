package transport

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/noise"
	"github.com/tomoe-net/tomoe/internal/ratelimit"
)

// Handshake initiations are the one message anyone can make this node
// spend real work on: two X25519 operations to learn the sender's key,
// then an admission decision. What it costs an attacker and the node:
//
//   - On the receive goroutine only cheap checks run: the length, mac1
//     (which needs only our public key), a token bucket per source (an
//     IPv6 /64 or an IPv4 address, ratelimit.Source), and when that is
//     spent or the node is under load, mac2 (WireGuard's cookie: it proves
//     that the sender receives at its source address and port). A proven
//     sender is then limited per address and port, which nobody else can
//     drain: a neighbour on a peer's /64 or behind its NAT, or a spoofer of
//     its address, can cost the peer one cookie round trip, never its
//     rekeying. Garbage costs one BLAKE2s and no state.
//   - Initiations that pass are queued for one worker goroutine, which
//     opens them, checks the timestamp against replay (ReplayStore), asks
//     the Admitter about keys that are not peers, and hands the message to
//     WireGuard. Authenticated data of existing peers never waits behind
//     that work.
//   - Two queues: "known" for sources that are a current address or relay
//     path of a peer (its rekeying), "other" for everything else. Each
//     spends a node-wide budget (peerRate, strangerRate); a known source
//     whose initiation turns out to be another key's spends the strangers'
//     too. When a budget runs out, or a queue fills, the node is under load
//     for underLoadFor: then an initiation without a valid mac2 gets a
//     cookie reply instead, as WireGuard does, so a flood from spoofed
//     sources stops costing X25519 and only sources that can receive at
//     their address go on. Cookie replies to sources that are no peer's
//     are budgeted per /64 and in all; peers' own addresses always get
//     theirs.
//
// Bounds (per node): X25519 operations at most 2 * (strangerRate +
// peerRate) per second.
const (
	sourceRate    = 20 // initiations per second per source (WireGuard's)
	sourceBurst   = 5  //
	sourceKeys    = 1 << 14
	strangerRate  = 200  // initiations per second from sources that are no peer's
	strangerBurst = 200  // (a node admits at most 100 new "*" peers a second anyway)
	peerRate      = 1000 // initiations per second from peers' own addresses
	peerBurst     = 1000 //
	cookieRate    = 5000 // cookie replies per second to sources that are no peer's
	cookieBurst   = 1000 //
	cookiePerSrc  = 5    // cookie replies per second per source /64 that is no peer's
	hsQueueLen    = 256  // per queue
	underLoadFor  = time.Second
	cookieQueue   = 256
)

// handshakeKeys is what opening and answering initiations needs of the
// node's key.
type handshakeKeys struct {
	opener  *noise.Opener
	cookies device.CookieChecker
}

func newHandshakeKeys(k identity.PrivateKey) *handshakeKeys {
	hk := &handshakeKeys{opener: noise.NewOpener(k)}
	hk.cookies.Init(device.NoisePublicKey(k.Public()))
	return hk
}

// hsOrigin is where an initiation came from: a direct source (std), or a
// bridge's relay path.
type hsOrigin struct {
	std     *conn.StdNetEndpoint // direct: as received, with its sticky source
	path    relayPath
	relayed bool
}

// src is the direct source address; invalid for a relayed message.
func (o *hsOrigin) src() netip.AddrPort {
	if o.relayed {
		return netip.AddrPort{}
	}
	return o.std.AddrPort
}

// limitKey is what the per-source budget counts: the source's /64 (or
// IPv4 address), or for a relay path the bridge and relay id.
func (o *hsOrigin) limitKey() netip.Addr {
	if o.relayed {
		return relayLimitKey(o.path)
	}
	return ratelimit.Source(o.std.AddrPort.Addr())
}

// provenKey is what the budget of a sender that proved its address counts:
// that very address and port (or relay path).
func (o *hsOrigin) provenKey() netip.AddrPort {
	if o.relayed {
		return netip.AddrPortFrom(relayLimitKey(o.path), 0)
	}
	return o.std.AddrPort
}

// cookieSource is what a cookie is bound to: the source address and
// port, or the relay path.
func (o *hsOrigin) cookieSource(buf []byte) []byte {
	if o.relayed {
		return binary.BigEndian.AppendUint32(append(buf, o.path.via.String()...), o.path.id)
	}
	b, _ := o.std.AddrPort.AppendBinary(buf)
	return b
}

type hsItem struct {
	msg    [initiationSize]byte
	origin hsOrigin
	known  bool
}

var hsItems = sync.Pool{New: func() any { return new(hsItem) }}

// logReplay says, at most once per replayLogEvery, that an initiation was
// refused as not newer than the newest answered for its key, and by how
// much: a large gap is a peer whose clock went back, not a recording.
func (h *handshakes) logReplay(key identity.PublicKey, ts noise.Timestamp, s *ReplayStore) {
	now := time.Now().UnixNano()
	last := h.replayLogged.Load()
	if now-last < int64(replayLogEvery) || !h.replayLogged.CompareAndSwap(last, now) {
		return
	}
	newest, _ := s.Newest(key)
	h.b.log.Info("handshake refused: not newer than the newest answered from this key (a replay, or the peer's clock went back)",
		"peer", key.ShortString(), "behind", newest.Sub(ts).String())
}

const replayLogEvery = 10 * time.Second

// handshakes is one Open's worth of the initiation pipeline: its queues
// and goroutines end with the Bind's Close.
type handshakes struct {
	b       *Bind
	known   chan *hsItem
	other   chan *hsItem
	cookies chan *hsItem
	done    chan struct{}
	wg      sync.WaitGroup

	replayLogged atomic.Int64 // unix ns of the last logReplay line
}

// handshakeLimits are the budgets; they outlive Close/Open cycles.
type handshakeLimits struct {
	perSource       *ratelimit.Keyed                   // before any proof: per /64
	proven          *ratelimit.KeyedOf[netip.AddrPort] // after mac2: per address and port
	strangers       *rate.Limiter
	peers           *rate.Limiter
	strangerCookies *ratelimit.Keyed // cookie replies to sources that are no peer's, per /64
	cookies         *rate.Limiter    // and in all
	underLoadUntil  atomic.Int64     // unix ns
}

func newHandshakeLimits() *handshakeLimits {
	return &handshakeLimits{
		perSource:       ratelimit.NewKeyed(sourceRate, sourceBurst, sourceKeys),
		proven:          ratelimit.NewKeyedOf[netip.AddrPort](sourceRate, sourceBurst, sourceKeys),
		strangers:       rate.NewLimiter(strangerRate, strangerBurst),
		peers:           rate.NewLimiter(peerRate, peerBurst),
		strangerCookies: ratelimit.NewKeyedOpen[netip.Addr](cookiePerSrc, cookiePerSrc, sourceKeys),
		cookies:         rate.NewLimiter(cookieRate, cookieBurst),
	}
}

func (l *handshakeLimits) underLoad(now time.Time) bool {
	return now.UnixNano() < l.underLoadUntil.Load()
}

func (l *handshakeLimits) setUnderLoad(now time.Time) {
	l.underLoadUntil.Store(now.Add(underLoadFor).UnixNano())
}

func startHandshakes(b *Bind) *handshakes {
	h := &handshakes{
		b:       b,
		known:   make(chan *hsItem, hsQueueLen),
		other:   make(chan *hsItem, hsQueueLen),
		cookies: make(chan *hsItem, cookieQueue),
		done:    make(chan struct{}),
	}
	h.wg.Add(2)
	go h.work()
	go h.sendCookies()
	return h
}

// stop ends the goroutines. Receive goroutines still running may submit
// afterwards; submit then drops.
func (h *handshakes) stop() {
	close(h.done)
	h.wg.Wait()
}

// submit takes an initiation that arrived on a receive goroutine (msg is
// the receive buffer: it is copied if kept). It never blocks and never
// does X25519.
func (h *handshakes) submit(msg []byte, o hsOrigin) {
	b := h.b
	keys := b.keys.Load()
	if keys == nil || len(msg) != initiationSize {
		b.stats.InitiationsInvalid.Add(1)
		return
	}
	lim := b.limits
	now := time.Now()
	known := b.owner(o) != nil
	if !known && lim.underLoad(now) && lim.strangers.TokensAt(now) < 1 && lim.cookies.TokensAt(now) < 1 {
		// Whatever its MACs say, a stranger's initiation is dropped now
		// (no budget to open it, none to answer it with a cookie): spare
		// the two BLAKE2s, which are most of what a flood costs here.
		b.stats.InitiationsLimited.Add(1)
		return
	}
	if !keys.opener.CheckMAC1(msg) {
		b.stats.InitiationsInvalid.Add(1)
		return
	}
	if lim.underLoad(now) || !lim.perSource.Allow(o.limitKey(), now) {
		// Under load, or this source's /64 has spent its budget (perhaps a
		// neighbour or a spoofer did): the sender must prove that it
		// receives at its address before it gets further.
		var buf [64]byte
		if !keys.cookies.CheckMAC2(msg, o.cookieSource(buf[:0])) {
			// A peer rekeying from its own address always gets its cookie
			// (it costs less than what reaches us, and a spoofer's copy is
			// useless to it); others' are budgeted per /64 and in all, so a
			// spoofed flood cannot make the node a reflector at line rate.
			if known || (lim.strangerCookies.Allow(o.limitKey(), now) && lim.cookies.AllowN(now, 1)) {
				h.queueCookie(msg, o)
			}
			b.stats.InitiationsLimited.Add(1)
			return
		}
		if !lim.proven.Allow(o.provenKey(), now) {
			b.stats.InitiationsLimited.Add(1)
			return
		}
	}
	q, budget := h.known, lim.peers
	if !known {
		q, budget = h.other, lim.strangers
	}
	if !budget.AllowN(now, 1) {
		b.stats.InitiationsLimited.Add(1)
		lim.setUnderLoad(now)
		return
	}
	it := hsItems.Get().(*hsItem)
	copy(it.msg[:], msg)
	it.origin, it.known = o, known
	select {
	case <-h.done:
		hsItems.Put(it)
		return
	default:
	}
	select {
	case q <- it:
	default:
		hsItems.Put(it)
		b.stats.InitiationsDropped.Add(1)
		lim.setUnderLoad(now)
	}
}

func (h *handshakes) queueCookie(msg []byte, o hsOrigin) {
	it := hsItems.Get().(*hsItem)
	copy(it.msg[:], msg)
	it.origin = o
	select {
	case h.cookies <- it:
	default:
		hsItems.Put(it)
	}
}

// sendCookies answers initiations that came without a valid mac2 while
// under load with a cookie reply (WireGuard's, 64 bytes: no
// amplification), so that their senders can prove their address.
func (h *handshakes) sendCookies() {
	defer h.wg.Done()
	var out [device.MessageCookieReplySize]byte
	for {
		var it *hsItem
		select {
		case <-h.done:
			return
		case it = <-h.cookies:
		}
		keys := h.b.keys.Load()
		var buf [64]byte
		reply, err := keys.cookies.CreateReply(it.msg[:], binary.LittleEndian.Uint32(it.msg[4:8]), it.origin.cookieSource(buf[:0]))
		if err == nil {
			binary.LittleEndian.PutUint32(out[0:4], reply.Type)
			binary.LittleEndian.PutUint32(out[4:8], reply.Receiver)
			copy(out[8:32], reply.Nonce[:])
			copy(out[32:64], reply.Cookie[:])
			if it.origin.relayed {
				h.b.sendRelay([][]byte{out[:]}, &it.origin.path)
			} else {
				h.b.inner.Send([][]byte{out[:]}, it.origin.std)
			}
			h.b.stats.CookiesSent.Add(1)
		}
		hsItems.Put(it)
	}
}

// work opens queued initiations, peers' own first.
func (h *handshakes) work() {
	defer h.wg.Done()
	for {
		var it *hsItem
		select {
		case it = <-h.known:
		default:
			select {
			case <-h.done:
				return
			case it = <-h.known:
			case it = <-h.other:
			}
		}
		h.handle(it)
		hsItems.Put(it)
	}
}

// handle opens one initiation and, if its key is (or is admitted as) a
// peer and its timestamp is new, hands it to WireGuard.
func (h *handshakes) handle(it *hsItem) {
	b := h.b
	keys := b.keys.Load()
	key, ts, x, err := keys.opener.Open(it.msg[:])
	b.stats.X25519.Add(uint64(x))
	if err != nil {
		b.stats.InitiationsInvalid.Add(1)
		return
	}
	if it.known {
		// It came in the peers' queue because its source is a peer's;
		// if it is another key's, it was a stranger's after all.
		if owner := b.owner(it.origin); owner == nil || owner.key != key {
			if now := time.Now(); !b.limits.strangers.AllowN(now, 1) {
				b.stats.InitiationsLimited.Add(1)
				b.limits.setUnderLoad(now)
				return
			}
		}
	}
	replay := b.replay.Load()
	if !replay.Fresh(key, ts) {
		// A recording, or a peer whose clock went back: WireGuard would
		// refuse it too, but only while the peer is in the device.
		b.stats.InitiationsReplayed.Add(1)
		h.logReplay(key, ts, replay)
		return
	}
	p := b.Peer(key)
	if p == nil {
		a := b.admit.Load()
		if a == nil || !(*a).Admit(key, it.origin.src(), it.origin.limitKey()) {
			b.stats.InitiationsDenied.Add(1)
			return
		}
		if p = b.Peer(key); p == nil {
			b.stats.InitiationsDenied.Add(1)
			return
		}
		b.stats.InitiationsAdmitted.Add(1)
	}
	b.replay.Load().Record(key, ts)
	var ep conn.Endpoint
	if it.origin.relayed {
		ep = b.relayEndpoint(p, it.origin.path, false)
	} else {
		ep = b.directEndpoint(p, it.origin.std, false)
	}
	if ep == nil || !b.deliverInitiation(it.msg[:], ep) {
		b.stats.InitiationsDropped.Add(1)
	}
}
