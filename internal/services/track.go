package services

import (
	"io"
	"strconv"
	"sync"
	"time"
)

// tracker owns the goroutines and connections of one server or exposed
// service, so that shutting it down cuts every live connection and returns
// only once nothing it started is still running.
type tracker struct {
	mu      sync.Mutex // guards closers and closed; Add on wg happens under it
	closers map[io.Closer]struct{}
	closed  bool
	wg      sync.WaitGroup
}

func newTracker() *tracker {
	return &tracker{closers: make(map[io.Closer]struct{})}
}

// enter counts one running goroutine that shutdown waits for; it reports
// false once shutdown has begun. Every successful enter needs one exit.
func (t *tracker) enter() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

func (t *tracker) exit() { t.wg.Done() }

// spawn runs fn in a goroutine that shutdown waits for. It reports false,
// without running fn, once shutdown has begun.
func (t *tracker) spawn(fn func()) bool {
	if !t.enter() {
		return false
	}
	go func() {
		defer t.exit()
		fn()
	}()
	return true
}

// add registers c to be closed by shutdown. Once shutdown has begun it closes
// c itself and reports false.
func (t *tracker) add(c io.Closer) bool {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		c.Close()
		return false
	}
	t.closers[c] = struct{}{}
	t.mu.Unlock()
	return true
}

// remove forgets c; it does not close it.
func (t *tracker) remove(c io.Closer) {
	t.mu.Lock()
	delete(t.closers, c)
	t.mu.Unlock()
}

// shutdown refuses new goroutines and connections, closes every registered
// connection and waits for the running goroutines. It is idempotent.
func (t *tracker) shutdown() {
	t.mu.Lock()
	t.closed = true
	cs := make([]io.Closer, 0, len(t.closers))
	for c := range t.closers {
		cs = append(cs, c)
	}
	clear(t.closers)
	t.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
	t.wg.Wait()
}

// rateLimiter lets one log line per key through every interval; anything
// that a remote or local client can trigger at will is logged through one.
type rateLimiter struct {
	every time.Duration
	mu    sync.Mutex // guards last
	last  map[string]time.Time
}

// maxLimiterKeys bounds a rateLimiter's memory when keys are many (one per
// client-chosen target, say).
const maxLimiterKeys = 1024

func newRateLimiter(every time.Duration) *rateLimiter {
	return &rateLimiter{every: every, last: make(map[string]time.Time)}
}

// allow reports whether a line for key may be logged now.
func (r *rateLimiter) allow(key string) bool {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.last[key]; ok && now.Sub(t) < r.every {
		return false
	}
	if len(r.last) >= maxLimiterKeys {
		for k, t := range r.last {
			if now.Sub(t) >= r.every {
				delete(r.last, k)
			}
		}
		if len(r.last) >= maxLimiterKeys {
			clear(r.last)
		}
	}
	r.last[key] = now
	return true
}

// allowUID is allow keyed by a uid.
func (r *rateLimiter) allowUID(uid uint32) bool {
	return r.allow(strconv.FormatUint(uint64(uid), 10))
}
