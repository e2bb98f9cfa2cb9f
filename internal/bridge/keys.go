package bridge

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// keyCache holds the shared keys of one private key with the keys it
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
// XSalsa20-Poly1305, no X25519): see cached. Caching a key before any
// frame of its opens is safe: the secret depends only on the two keys.
type keyCache struct {
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

	x25519 *atomic.Uint64 // shared keys computed; the owner's counter
	// onX25519, if set (tests), is called before each X25519, on the
	// goroutine that does it.
	onX25519 atomic.Pointer[func()]
}

func newKeyCache(priv identity.PrivateKey, max int) *keyCache {
	return &keyCache{priv: priv, pub: priv.Public(), max: max, keepOpened: true, x25519: new(atomic.Uint64),
		pinned: make(map[identity.PublicKey]*wire.SharedKey), pending: make(map[identity.PublicKey]bool),
		learned: make(map[identity.PublicKey]*wire.SharedKey)}
}

// newAdmittedKeyCache is a bridge's cache: it keeps the keys of the nodes
// it answers, not of every sender whose frame opens.
func newAdmittedKeyCache(priv identity.PrivateKey, max int) *keyCache {
	c := newKeyCache(priv, max)
	c.keepOpened = false
	return c
}

// compute derives the shared key with peer: one X25519, counted. Never on
// a receive goroutine.
func (c *keyCache) compute(peer identity.PublicKey) *wire.SharedKey {
	if f := c.onX25519.Load(); f != nil {
		(*f)()
	}
	c.x25519.Add(1)
	s := wire.Precompute(c.priv, peer)
	return &s
}

// cached returns the shared key with peer if it is pinned or learned, else
// nil. It never computes: receive goroutines call it.
func (c *keyCache) cached(peer identity.PublicKey) *wire.SharedKey {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if k := c.pinned[peer]; k != nil {
		return k
	}
	return c.learned[peer]
}

// keep learns peer's shared key.
func (c *keyCache) keep(peer identity.PublicKey, s *wire.SharedKey) {
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

// pinNow computes and pins peer's shared key on the caller's goroutine
// (a constructor's: a node's bridges).
func (c *keyCache) pinNow(peer identity.PublicKey) {
	s := c.cached(peer)
	if s == nil {
		s = c.compute(peer)
	}
	c.pinShared(peer, s)
}

// pinShared pins peer's shared key s, computed already.
func (c *keyCache) pinShared(peer identity.PublicKey, s *wire.SharedKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pinned[peer] = s
	delete(c.pending, peer)
	delete(c.learned, peer)
}

// pin marks keys to be pinned: those not cached yet wait for nextPending.
func (c *keyCache) pin(keys []identity.PublicKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		c.pinLocked(k)
	}
}

func (c *keyCache) pinLocked(k identity.PublicKey) {
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

// setPinned makes exactly keys and keep pinned (or pending): the others
// are unpinned and may be learned again.
func (c *keyCache) setPinned(keys, keep []identity.PublicKey) {
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
func (c *keyCache) nextPending() (identity.PublicKey, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.pendingQ) > 0 {
		k := c.pendingQ[0]
		c.pendingQ = c.pendingQ[1:]
		if c.pending[k] { // else unpinned meanwhile
			return k, true // pending until pinComputed
		}
	}
	c.pendingQ = nil // let go of the array
	return identity.PublicKey{}, false
}

// pinComputed pins s for peer if peer is still waiting for it.
func (c *keyCache) pinComputed(peer identity.PublicKey, s *wire.SharedKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending[peer] {
		delete(c.pending, peer)
		c.pinned[peer] = s
	}
}

// forget drops peer's shared key, pinned or learned.
func (c *keyCache) forget(peer identity.PublicKey) {
	c.mu.Lock()
	delete(c.pinned, peer)
	delete(c.pending, peer)
	delete(c.learned, peer)
	c.mu.Unlock()
}

// seal builds a control frame carrying m to the key to, with the shared
// key given, or the cached one, or else one it computes (an X25519: only
// goroutines that may spend one call seal with a key not cached) and
// learns (unless keepOpened is off and m is a refusal: a bridge keeps only
// the keys it admits).
func (c *keyCache) seal(to identity.PublicKey, shared *wire.SharedKey, m wire.Message) ([]byte, error) {
	if m.Time == 0 {
		m.Time = time.Now().UnixNano()
	}
	k := shared
	if k == nil {
		k = c.cached(to)
	}
	if k == nil {
		k = c.compute(to)
		if c.keepOpened || m.Kind != wire.KindRefused {
			c.keep(to, k)
		}
	}
	return wire.Seal(make([]byte, 0, 160), c.pub, k, &m)
}
