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
//     (which needs only our public key), under load mac2 (WireGuard's
//     cookie: it proves the source address), and a token bucket per
//     source (an IPv6 /64 or an IPv4 address, ratelimit.Source). Garbage
//     costs one BLAKE2s and no state.
//   - Initiations that pass are queued for one worker goroutine, which
//     opens them, checks the timestamp against replay (ReplayStore), asks
//     the Admitter about keys that are not peers, and hands the message to
//     WireGuard. Authenticated data of existing peers never waits behind
//     that work.
//   - Two queues: "known" for sources that are a current address of a
//     peer (its rekeying), "other" for everything else, which also spends
//     a node-wide budget (strangerRate). When that budget runs out, or a
//     queue fills, the node is under load for underLoadFor: then an
//     initiation without a valid mac2 gets a cookie reply instead, as
//     WireGuard does, so a flood from spoofed sources stops costing X25519
//     and only sources that can receive at their address go on. Cookie
//     replies to sources that are not a peer's are budgeted too.
//
// Bounds (per node): X25519 operations for strangers at most 2 *
// strangerRate per second; peers' own addresses at most 2 * sourceRate
// per second per source.
const (
	sourceRate    = 20 // initiations per second per source (WireGuard's)
	sourceBurst   = 5  //
	sourceKeys    = 1 << 14
	strangerRate  = 500  // initiations per second from sources that are no peer's
	strangerBurst = 500  //
	cookieRate    = 2000 // cookie replies per second to sources that are no peer's
	cookieBurst   = 500  //
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

// handshakes is one Open's worth of the initiation pipeline: its queues
// and goroutines end with the Bind's Close.
type handshakes struct {
	b       *Bind
	known   chan *hsItem
	other   chan *hsItem
	cookies chan *hsItem
	done    chan struct{}
	wg      sync.WaitGroup
}

// handshakeLimits are the budgets; they outlive Close/Open cycles.
type handshakeLimits struct {
	perSource      *ratelimit.Keyed
	peerCookies    *ratelimit.Keyed // cookie replies to peers' own addresses
	strangers      *rate.Limiter
	cookies        *rate.Limiter // cookie replies to everyone else
	underLoadUntil atomic.Int64  // unix ns
}

func newHandshakeLimits() *handshakeLimits {
	return &handshakeLimits{
		perSource:   ratelimit.NewKeyed(sourceRate, sourceBurst, sourceKeys),
		peerCookies: ratelimit.NewKeyed(sourceRate, sourceBurst, sourceKeys),
		strangers:   rate.NewLimiter(strangerRate, strangerBurst),
		cookies:     rate.NewLimiter(cookieRate, cookieBurst),
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
	if !keys.opener.CheckMAC1(msg) {
		b.stats.InitiationsInvalid.Add(1)
		return
	}
	lim := b.limits
	now := time.Now()
	known := !o.relayed && b.knownSource(o.std.AddrPort)
	if lim.underLoad(now) {
		var buf [64]byte
		if !keys.cookies.CheckMAC2(msg, o.cookieSource(buf[:0])) {
			// A peer rekeying from its own address gets its cookie (per
			// source); strangers share a budget, so a spoofed flood cannot
			// make the node a reflector at line rate.
			if (known && lim.peerCookies.Allow(o.limitKey(), now)) || (!known && lim.cookies.AllowN(now, 1)) {
				h.queueCookie(msg, o)
			}
			b.stats.InitiationsLimited.Add(1)
			return
		}
	}
	if !lim.perSource.Allow(o.limitKey(), now) {
		b.stats.InitiationsLimited.Add(1)
		return
	}
	q := h.known
	if !known {
		if !lim.strangers.AllowN(now, 1) {
			b.stats.InitiationsLimited.Add(1)
			lim.setUnderLoad(now)
			return
		}
		q = h.other
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
	if !b.replay.Load().Fresh(key, ts) {
		// A recording, or a peer whose clock went back: WireGuard would
		// refuse it too, but only while the peer is in the device.
		b.stats.InitiationsReplayed.Add(1)
		return
	}
	p := b.Peer(key)
	if p == nil {
		a := b.admit.Load()
		if a == nil || !(*a).Admit(key, it.origin.src()) {
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
	if !b.deliverInitiation(it.msg[:], ep) {
		b.stats.InitiationsDropped.Add(1)
	}
}
