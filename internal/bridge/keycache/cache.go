// Package keycache owns the shared keys a node or a bridge opens and seals
// control frames with (wire.SharedKey: one X25519 each), and the rule that
// keeps that cost off the receive goroutines: a receive goroutine opens a
// frame only with a key already here (Cache.Cached), and hands frames from
// other senders to one worker (Strangers) within budgets per source and in
// all. The bridge role and the node's client of its bridges each own one
// Cache and one Strangers.
package keycache

import (
	"sync"
	"sync/atomic"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/clock"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// Cache holds the shared keys of one private key with the keys it
// talks to, of two kinds:
//
//   - pinned: the keys its owner knows in advance (a node's bridges, static
//     peers and the keys its rules name; a bridge's admitted keys). They
//     are computed ahead, off any receive goroutine (the strangers worker
//     computes the pending ones between frames), and only unpin or forget
//     removes them: no sender can flush them.
//   - learned: keys of senders whose frames opened on the worker (unless
//     keepOpened is off) and of keys sealed to. At most max; cleared when
//     full.
//
// A receive goroutine only opens frames whose sender's key is here (one
// XSalsa20-Poly1305, no X25519): see Cached. Caching a key before any
// frame of its opens is safe: the secret depends only on the two keys.
type Cache struct {
	priv identity.PrivateKey
	pub  identity.PublicKey

	mu       sync.RWMutex // guards pinned, pending, pendingQ, learned
	pinned   map[identity.PublicKey]*wire.SharedKey
	pending  map[identity.PublicKey]bool // to pin, not computed yet
	pendingQ []identity.PublicKey        // pending's keys in order (and some no longer pending)
	learned  map[identity.PublicKey]*wire.SharedKey
	max      int // bound of learned

	// keepOpened: learn the key of every sender whose frame opens. A
	// bridge turns it off and keeps only the keys it admits, so that
	// throwaway keys cannot flush the cache.
	keepOpened bool

	clock clock.Clock // stamps what Seal seals; set before use (SetClock)

	x25519 *atomic.Uint64 // shared keys computed; the owner's counter
	// onX25519, if set (tests), is called before each X25519, on the
	// goroutine that does it.
	onX25519 atomic.Pointer[func()]
}

// New is a node's cache of the shared keys of priv, learning at most max
// keys besides the pinned ones. It counts the X25519 operations it does
// in x25519 (nil: a counter of its own).
func New(priv identity.PrivateKey, max int, x25519 *atomic.Uint64) *Cache {
	if x25519 == nil {
		x25519 = new(atomic.Uint64)
	}
	return &Cache{priv: priv, pub: priv.Public(), max: max, keepOpened: true, x25519: x25519, clock: clock.Real(),
		pinned: make(map[identity.PublicKey]*wire.SharedKey), pending: make(map[identity.PublicKey]bool),
		learned: make(map[identity.PublicKey]*wire.SharedKey)}
}

// NewAdmitted is a bridge's cache: it keeps the keys of the nodes it
// answers, not of every sender whose frame opens.
func NewAdmitted(priv identity.PrivateKey, max int, x25519 *atomic.Uint64) *Cache {
	c := New(priv, max, x25519)
	c.keepOpened = false
	return c
}

// SetClock makes Seal stamp messages with clk's time (nil: real time),
// the owner's clock, which the bridge checks the stamps against. Call it
// before the cache is used.
func (c *Cache) SetClock(clk clock.Clock) { c.clock = clock.Or(clk) }

// Public is the public key of the cache's private key: the sender of what
// it seals.
func (c *Cache) Public() identity.PublicKey { return c.pub }

// OnX25519 makes f run before each X25519 the cache does, on the
// goroutine that does it (tests: which goroutines spend them).
func (c *Cache) OnX25519(f func()) { c.onX25519.Store(&f) }

// Compute derives the shared key with peer: one X25519, counted. Never on
// a receive goroutine.
func (c *Cache) Compute(peer identity.PublicKey) *wire.SharedKey {
	if f := c.onX25519.Load(); f != nil {
		(*f)()
	}
	c.x25519.Add(1)
	s := wire.Precompute(c.priv, peer)
	return &s
}

// Cached returns the shared key with peer if it is pinned or learned, else
// nil. It never computes: receive goroutines call it.
func (c *Cache) Cached(peer identity.PublicKey) *wire.SharedKey {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if k := c.pinned[peer]; k != nil {
		return k
	}
	return c.learned[peer]
}

// Keep learns peer's shared key.
func (c *Cache) Keep(peer identity.PublicKey, s *wire.SharedKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pinned[peer] != nil {
		return
	}
	if len(c.learned) >= c.max {
		clear(c.learned) // rare: more senders than the bound; start over
	}
	c.learned[peer] = s
}

// PinNow computes and pins peer's shared key on the caller's goroutine
// (a constructor's: a node's bridges).
func (c *Cache) PinNow(peer identity.PublicKey) {
	s := c.Cached(peer)
	if s == nil {
		s = c.Compute(peer)
	}
	c.PinShared(peer, s)
}

// PinShared pins peer's shared key s, computed already.
func (c *Cache) PinShared(peer identity.PublicKey, s *wire.SharedKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pinned[peer] = s
	delete(c.pending, peer)
	delete(c.learned, peer)
}

// Pin marks keys to be pinned: those not cached yet wait for the
// Strangers worker, which computes them between frames.
func (c *Cache) Pin(keys []identity.PublicKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		c.pinLocked(k)
	}
}

func (c *Cache) pinLocked(k identity.PublicKey) {
	if c.pinned[k] != nil {
		return
	}
	if s := c.learned[k]; s != nil {
		c.pinned[k] = s
		delete(c.learned, k)
		return
	}
	if !c.pending[k] {
		c.pending[k] = true
		c.pendingQ = append(c.pendingQ, k)
	}
}

// SetPinned makes exactly keys and keep pinned (or pending): the others
// are unpinned and may be learned again.
func (c *Cache) SetPinned(keys, keep []identity.PublicKey) {
	want := make(map[identity.PublicKey]bool, len(keys)+len(keep))
	for _, k := range keys {
		want[k] = true
	}
	for _, k := range keep {
		want[k] = true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.pending {
		if !want[k] {
			delete(c.pending, k)
		}
	}
	for k := range c.pinned {
		if !want[k] {
			delete(c.pinned, k)
		}
	}
	for k := range want {
		c.pinLocked(k)
	}
}

// nextPending returns the next key waiting to be pinned, if any.
func (c *Cache) nextPending() (identity.PublicKey, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.pendingQ) > 0 {
		k := c.pendingQ[0]
		c.pendingQ = c.pendingQ[1:]
		if c.pending[k] { // else unpinned meanwhile
			return k, true // pending until PinComputed
		}
	}
	c.pendingQ = nil // let go of the array
	return identity.PublicKey{}, false
}

// PinComputed pins s for peer if peer is still waiting for it.
func (c *Cache) PinComputed(peer identity.PublicKey, s *wire.SharedKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending[peer] {
		delete(c.pending, peer)
		c.pinned[peer] = s
	}
}

// Forget drops peer's shared key, pinned or learned.
func (c *Cache) Forget(peer identity.PublicKey) {
	c.mu.Lock()
	delete(c.pinned, peer)
	delete(c.pending, peer)
	delete(c.learned, peer)
	c.mu.Unlock()
}

// Seal builds a control frame carrying m to the key to (stamped with the
// cache's clock unless m.Time is set), with the shared key given, or the
// cached one, or else one it computes (an X25519: only goroutines that
// may spend one call seal with a key not cached) and learns (unless the
// cache is a bridge's, NewAdmitted, and m a refusal: a bridge keeps only
// the keys it admits).
func (c *Cache) Seal(to identity.PublicKey, shared *wire.SharedKey, m wire.Message) ([]byte, error) {
	if m.Time == 0 {
		m.Time = c.clock.Now().UnixNano()
	}
	k := shared
	if k == nil {
		k = c.Cached(to)
	}
	if k == nil {
		k = c.Compute(to)
		if c.keepOpened || m.Kind != wire.KindRefused {
			c.Keep(to, k)
		}
	}
	return wire.Seal(make([]byte, 0, 160), c.pub, k, &m)
}
