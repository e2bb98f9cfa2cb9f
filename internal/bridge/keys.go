package bridge

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/ratelimit"
)

// keyCache opens and seals control frames for one private key, keeping the
// shared key of each sender it has verified. A sender it has not seen
// costs an X25519, so those are rate-limited per source address.
type keyCache struct {
	priv identity.PrivateKey
	pub  identity.PublicKey

	mu     sync.RWMutex
	shared map[identity.PublicKey]*SharedKey
	max    int

	limiter *ratelimit.Keyed // per source (an IPv6 /64), for unknown senders
	// keepOpened: cache the key of every sender whose frame opens. A
	// bridge turns it off and keeps only the keys it admits, so that
	// throwaway keys cannot flush the cache.
	keepOpened bool

	x25519 *atomic.Uint64 // shared keys computed; the owner's counter
	// onX25519, if set (tests), is called before each X25519, on the
	// goroutine that does it.
	onX25519 func()
}

var errLimited = errors.New("too many control frames from unknown keys at this address")

func newKeyCache(priv identity.PrivateKey, max int) *keyCache {
	return &keyCache{priv: priv, pub: priv.Public(), shared: make(map[identity.PublicKey]*SharedKey), max: max, keepOpened: true, x25519: new(atomic.Uint64),
		limiter: ratelimit.NewKeyed(unknownRate, unknownBurst, unknownSources)}
}

// Control frames from unknown keys, per source address (an IPv6 /64):
// wireguard-go's handshake budget (20/s, bursts of 5), in a table of at
// most unknownSources sources.
const (
	unknownRate    = 20
	unknownBurst   = 5
	unknownSources = 4096
)

// compute derives the shared key with peer: one X25519, counted.
func (c *keyCache) compute(peer identity.PublicKey) SharedKey {
	if c.onX25519 != nil {
		c.onX25519()
	}
	c.x25519.Add(1)
	return Precompute(c.priv, peer)
}

// keep caches peer's shared key.
func (c *keyCache) keep(peer identity.PublicKey, s *SharedKey) {
	c.mu.Lock()
	if len(c.shared) >= c.max {
		clear(c.shared) // rare: more senders than the bound; start over
	}
	c.shared[peer] = s
	c.mu.Unlock()
}

// forget drops peer's shared key.
func (c *keyCache) forget(peer identity.PublicKey) {
	c.mu.Lock()
	delete(c.shared, peer)
	c.mu.Unlock()
}

// open verifies and decodes a control frame from src. A sender whose key
// is not cached is rate-limited by src's address; its key is cached if
// the frame opens (and keepOpened).
func (c *keyCache) open(frame []byte, src netip.Addr) (identity.PublicKey, Message, error) {
	from, err := Sender(frame)
	if err != nil {
		return from, Message{}, err
	}
	c.mu.RLock()
	k := c.shared[from]
	c.mu.RUnlock()
	if k == nil {
		if src.IsValid() && !c.limiter.Allow(ratelimit.Source(src), time.Now()) {
			return from, Message{}, errLimited
		}
		s := c.compute(from)
		m, err := Open(frame, &s)
		if err != nil {
			return from, m, err
		}
		if c.keepOpened {
			c.keep(from, &s)
		}
		return from, m, nil
	}
	m, err := Open(frame, k)
	return from, m, err
}

// seal builds a control frame carrying m to the key to, caching the
// shared key (unless keepOpened is off and m is a refusal: a bridge keeps
// only the keys it admits).
func (c *keyCache) seal(to identity.PublicKey, m Message) ([]byte, error) {
	if m.Time == 0 {
		m.Time = time.Now().UnixNano()
	}
	c.mu.RLock()
	k := c.shared[to]
	c.mu.RUnlock()
	if k == nil {
		s := c.compute(to)
		k = &s
		if c.keepOpened || m.Kind != KindRefused {
			c.keep(to, k)
		}
	}
	return Seal(make([]byte, 0, 160), c.pub, k, &m)
}

// newAdmittedKeyCache is a bridge's cache: it keeps the keys of the nodes
// it answers, not of every sender whose frame opens.
func newAdmittedKeyCache(priv identity.PrivateKey, max int) *keyCache {
	c := newKeyCache(priv, max)
	c.keepOpened = false
	return c
}
