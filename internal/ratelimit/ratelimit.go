// Package ratelimit limits events per source with token buckets in a
// bounded table. It replaces wireguard-go's ratelimiter where tomoe counts
// unauthenticated input, for three reasons:
//
//   - It keys IPv6 sources by their /64 (Source), as the Linux WireGuard
//     module does: one host is routinely given a whole /64, so counting
//     full addresses would give it 2^64 fresh budgets.
//   - Its table is bounded: a flood from many sources cannot grow it past
//     max entries (wireguard-go's grows with every source seen in a
//     second).
//   - It has no goroutine and no Close. wireguard-go's limiter panics
//     ("send on closed channel") when Allow runs after Close, which a
//     receive goroutine still draining at shutdown can do.
//
// Time is passed in, so tests need no clock.
package ratelimit

import (
	"net/netip"
	"sync"
	"time"
)

// Source is the key a source address is limited by: an IPv4 address
// itself, an IPv6 address's /64. IPv4-mapped IPv6 addresses count as IPv4.
func Source(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if !a.Is6() {
		return a
	}
	p, _ := a.Prefix(64)
	return p.Addr()
}

// Keyed limits events per source address (see Source).
type Keyed = KeyedOf[netip.Addr]

// KeyedOf holds one token bucket per key: each key may spend Burst events
// at once and regains Rate per second. It is safe for concurrent use.
type KeyedOf[K comparable] struct {
	cost  int64 // nanoseconds of refill one event costs
	depth int64 // the bucket's size in nanoseconds: cost * burst
	max   int
	// openWhenFull: a new key that finds the table full of busy keys is
	// let through untracked, instead of refused (see NewKeyedOpen).
	openWhenFull bool

	mu        sync.Mutex // guards table and lastSweep
	table     map[K]*bucket
	lastSweep time.Time
}

type bucket struct {
	last   time.Time
	tokens int64 // nanoseconds of refill banked, at most depth
}

// sweepInterval bounds how often a full table is swept for idle buckets:
// a flood of new keys against a full table costs one sweep per interval,
// not one per event.
const sweepInterval = 100 * time.Millisecond

// NewKeyed allows rate events per second per key, bursts of burst, and
// keeps at most max keys. When the table is full and no bucket in it is
// idle (full again), events from new keys are refused: under a flood from
// more sources than max, new sources wait rather than memory growing.
func NewKeyed(rate float64, burst, max int) *Keyed { return NewKeyedOf[netip.Addr](rate, burst, max) }

// NewKeyedOf is NewKeyed for any kind of key.
func NewKeyedOf[K comparable](rate float64, burst, max int) *KeyedOf[K] {
	if rate <= 0 || burst < 1 || max < 1 {
		panic("ratelimit: rate, burst and max must be positive")
	}
	cost := int64(float64(time.Second) / rate)
	return &KeyedOf[K]{cost: cost, depth: cost * int64(burst), max: max, table: make(map[K]*bucket)}
}

// NewKeyedOpen is NewKeyedOf for a limit that is only about fairness, with
// another bound behind it: when the table is full of busy keys, events of
// new keys are allowed (untracked) rather than refused, so that a flood
// from more sources than max does not shut out every newcomer.
func NewKeyedOpen[K comparable](rate float64, burst, max int) *KeyedOf[K] {
	k := NewKeyedOf[K](rate, burst, max)
	k.openWhenFull = true
	return k
}

// Allow spends one event of key's budget at now, reporting false if the
// budget is spent (or the table is full of busy keys).
func (k *KeyedOf[K]) Allow(key K, now time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	b := k.table[key]
	if b == nil {
		if len(k.table) >= k.max && !k.sweepLocked(now) {
			return k.openWhenFull
		}
		k.table[key] = &bucket{last: now, tokens: k.depth - k.cost}
		return true
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.tokens+int64(d), k.depth)
		b.last = now
	}
	if b.tokens < k.cost {
		return false
	}
	b.tokens -= k.cost
	return true
}

// sweepLocked drops the buckets that are full again (their keys have been
// quiet long enough that forgetting them changes nothing) and reports
// whether that made room.
func (k *KeyedOf[K]) sweepLocked(now time.Time) bool {
	if now.Sub(k.lastSweep) < sweepInterval {
		return false
	}
	k.lastSweep = now
	for key, b := range k.table {
		if int64(now.Sub(b.last))+b.tokens >= k.depth {
			delete(k.table, key)
		}
	}
	return len(k.table) < k.max
}

// Len returns the number of keys held.
func (k *KeyedOf[K]) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.table)
}
