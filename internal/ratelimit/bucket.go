package ratelimit

import "sync"

// Bucket is one token bucket whose owner supplies the rate and burst at
// each call, so that it holds only its level and time: a bridge keeps two
// per registered node (its relay bytes and lookups), and they must stay
// small. The zero Bucket is empty; Init fills it. Time is Unix
// nanoseconds, passed in.
type Bucket struct {
	mu     sync.Mutex // guards tokens, last
	tokens float64
	last   int64
}

// Init fills b to burst at now.
func (b *Bucket) Init(now int64, burst float64) {
	b.mu.Lock()
	b.tokens, b.last = burst, now
	b.mu.Unlock()
}

// Allow spends cost at now if b holds it, after refilling rate a second
// up to burst since the last call.
func (b *Bucket) Allow(now int64, cost, rate, burst float64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if el := now - b.last; el > 0 {
		b.tokens = min(burst, b.tokens+float64(el)*rate/1e9)
		b.last = now
	}
	if b.tokens < cost {
		return false
	}
	b.tokens -= cost
	return true
}
