package clock

import (
	"container/heap"
	"sync"
	"time"
)

// Manual is a clock that moves only when a test calls Advance. Its
// contract:
//
//   - Now stands still between Advances. Advance(d) moves it to now+d,
//     firing on the way every timer and ticker that comes due, in the
//     order of their due times (timers due at the same time fire in the
//     order they were armed), with Now at each one's due time while it
//     fires. A ticker whose period fits several times into d fires
//     several times.
//   - AfterFunc's f runs on Advance's goroutine, before Advance goes on:
//     when Advance returns, every f that came due has returned. f may use
//     the clock (Now, arm, Stop or Reset timers, its own too) but must not
//     call Advance.
//   - NewTimer and NewTicker send on a channel that holds one value, as
//     the time package's do: Advance never blocks on a receiver, and a
//     tick the receiver has not taken when the next one comes is dropped.
//     The receiver runs on its own goroutine, so what it does with a
//     value happens after Advance sent it, not before Advance returns:
//     tests wait for its effects, or for Unread to reach 0 (the receiver
//     has taken every value; for a loop that receives from one channel,
//     once it took tick N+1 it has finished with tick N).
//   - Stop and Reset behave as *time.Timer's since Go 1.23: once they
//     return, no value sent before them is received.
//   - A timer armed with d <= 0 is due now: it fires at the next Advance,
//     Advance(0) included.
//   - Advances are serialized; every method is safe for concurrent use.
//
// A test that advances must know that the code under test has armed its
// timer first (else the timer is armed later, and due later): wait for
// Pending to count it.
type Manual struct {
	advancing sync.Mutex // held through an Advance: timers fire in one order

	mu   sync.Mutex // guards now, due, seq, sent
	now  time.Time
	due  timerHeap
	seq  uint64                // orders timers due at the same time by arming
	sent map[*manualTimer]bool // channel timers that sent a value maybe not received yet
}

// NewManual returns a Manual clock standing at start.
func NewManual(start time.Time) *Manual {
	return &Manual{now: start, sent: make(map[*manualTimer]bool)}
}

// Now implements Clock.
func (m *Manual) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}

// AfterFunc implements Clock.
func (m *Manual) AfterFunc(d time.Duration, f func()) Timer {
	t := &manualTimer{m: m, f: f, idx: -1}
	t.Reset(d)
	return t
}

// NewTimer implements Clock.
func (m *Manual) NewTimer(d time.Duration) Timer {
	t := &manualTimer{m: m, c: make(chan time.Time, 1), idx: -1}
	t.Reset(d)
	return t
}

// NewTicker implements Clock. It panics if d <= 0, as time.NewTicker
// does.
func (m *Manual) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive interval for NewTicker")
	}
	t := &manualTimer{m: m, c: make(chan time.Time, 1), period: d, idx: -1}
	t.Reset(d)
	return manualTicker{t}
}

// Advance moves the clock forward by d (d < 0 counts as 0), firing every
// timer and ticker that comes due on the way.
func (m *Manual) Advance(d time.Duration) {
	m.advancing.Lock()
	defer m.advancing.Unlock()
	m.mu.Lock()
	end := m.now.Add(max(d, 0))
	for len(m.due) > 0 && !m.due[0].when.After(end) {
		t := m.due[0]
		if t.when.After(m.now) {
			m.now = t.when
		}
		if t.period > 0 {
			t.when = t.when.Add(t.period) // the next tick: armed again
			m.seq++
			t.seq = m.seq
			heap.Fix(&m.due, 0)
		} else {
			heap.Pop(&m.due)
		}
		if t.c != nil {
			select {
			case t.c <- m.now:
				m.sent[t] = true
			default: // the last value is still unread: this one is dropped
			}
			continue
		}
		f := t.f
		m.mu.Unlock()
		f()
		m.mu.Lock()
	}
	m.now = end
	m.mu.Unlock()
}

// AdvanceTo moves the clock forward to t, as Advance(t - Now()) does; a
// t before Now leaves it where it is.
func (m *Manual) AdvanceTo(t time.Time) { m.Advance(t.Sub(m.Now())) }

// Pending is how many timers and tickers are armed.
func (m *Manual) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.due)
}

// Unread is how many timers and tickers hold a value their receiver has
// not taken yet.
func (m *Manual) Unread() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	for t := range m.sent {
		if len(t.c) == 0 {
			delete(m.sent, t)
		}
	}
	return len(m.sent)
}

// manualTimer is a Manual clock's timer: f's (AfterFunc), or c's
// (NewTimer; NewTicker with a period).
type manualTimer struct {
	m *Manual
	f func()
	c chan time.Time

	// Guarded by m.mu.
	period time.Duration // a ticker's; 0 for a timer
	when   time.Time
	seq    uint64
	idx    int // in m.due; -1 when not armed
}

func (t *manualTimer) C() <-chan time.Time { return t.c }

func (t *manualTimer) Stop() bool {
	t.m.mu.Lock()
	defer t.m.mu.Unlock()
	return t.stopLocked()
}

// stopLocked disarms t and drops a value it sent that was not received;
// it reports whether either was there.
func (t *manualTimer) stopLocked() bool {
	active := t.idx >= 0
	if active {
		heap.Remove(&t.m.due, t.idx)
	}
	if t.c != nil {
		select {
		case <-t.c:
			active = true
		default:
		}
		delete(t.m.sent, t)
	}
	return active
}

func (t *manualTimer) Reset(d time.Duration) bool {
	m := t.m
	m.mu.Lock()
	defer m.mu.Unlock()
	active := t.stopLocked()
	t.when = m.now.Add(d)
	m.seq++
	t.seq = m.seq
	heap.Push(&m.due, t)
	return active
}

type manualTicker struct{ t *manualTimer }

func (k manualTicker) C() <-chan time.Time { return k.t.c }
func (k manualTicker) Stop()               { k.t.Stop() }

func (k manualTicker) Reset(d time.Duration) {
	if d <= 0 {
		panic("clock: non-positive interval for Ticker.Reset")
	}
	k.t.m.mu.Lock()
	k.t.period = d
	k.t.m.mu.Unlock()
	k.t.Reset(d)
}

// timerHeap orders armed timers by due time, then by arming.
type timerHeap []*manualTimer

func (h timerHeap) Len() int { return len(h) }
func (h timerHeap) Less(i, j int) bool {
	if h[i].when.Equal(h[j].when) {
		return h[i].seq < h[j].seq
	}
	return h[i].when.Before(h[j].when)
}
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *timerHeap) Push(x any) {
	t := x.(*manualTimer)
	t.idx = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.idx = -1
	return t
}
