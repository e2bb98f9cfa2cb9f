// Package clock is where tomoe's behaviour-deciding time comes from:
// registration expiry, keepalives, lookup retries, probe rounds, NAT
// timeouts in the in-memory internet. Code that decides by time takes a
// Clock; production passes Real (or nil, which its owner turns into Real),
// and a test passes a Manual clock it advances by hand, so a timeout of a
// minute is tested in no real time and the same way on every run.
//
// What stays on real time, whatever the Clock: deadlines on sockets and
// connections (SetDeadline and friends, dial and DNS timeouts), which are
// the kernel's and the net package's; and budgets of CPU (the rate of
// X25519 for strangers, rate-limited logging), which protect the machine,
// not the protocol.
//
// The package imports only the standard library: every other package may
// use it.
package clock

import "time"

// Clock tells the time and makes timers. A Clock is safe for concurrent
// use.
type Clock interface {
	// Now is the current time.
	Now() time.Time
	// AfterFunc calls f once d has passed: on a goroutine of its own
	// (Real), or on the goroutine that advances the clock (Manual), so f
	// must not wait for that goroutine. The Timer's C is nil.
	AfterFunc(d time.Duration, f func()) Timer
	// NewTimer sends the time on the Timer's C once d has passed.
	NewTimer(d time.Duration) Timer
	// NewTicker sends the time on the Ticker's C every d (d > 0), dropping
	// ticks a slow receiver has not taken, as time.Ticker does.
	NewTicker(d time.Duration) Ticker
}

// Timer is a Clock's one-shot timer, with the semantics of *time.Timer
// since Go 1.23: after Stop or Reset returns, no value from before the
// call is received from C.
type Timer interface {
	// C is the channel the time is sent on; nil for AfterFunc timers.
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it did
	// (false: it had fired, and for a NewTimer its value was received,
	// or it was stopped already).
	Stop() bool
	// Reset makes the timer fire once d has passed from now, whether or
	// not it had fired; it reports whether the timer was armed.
	Reset(d time.Duration) bool
}

// Ticker is a Clock's periodic timer, with the semantics of *time.Ticker.
type Ticker interface {
	C() <-chan time.Time
	// Stop turns the ticker off; C is not closed.
	Stop()
	// Reset stops the ticker and restarts it with period d (d > 0).
	Reset(d time.Duration)
}

// Real is the wall clock and the runtime's timers. It returns the same
// value every time, so c == Real() tells whether c is real time.
func Real() Clock { return realClock{} }

// Or is c, or Real if c is nil: what a config's "nil means real time"
// becomes.
func Or(c Clock) Clock {
	if c == nil {
		return Real()
	}
	return c
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) AfterFunc(d time.Duration, f func()) Timer {
	return realTimer{t: time.AfterFunc(d, f)}
}

func (realClock) NewTimer(d time.Duration) Timer { return realTimer{t: time.NewTimer(d)} }

func (realClock) NewTicker(d time.Duration) Ticker { return realTicker{t: time.NewTicker(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time   { return r.t.C }
func (r realTicker) Stop()                 { r.t.Stop() }
func (r realTicker) Reset(d time.Duration) { r.t.Reset(d) }
