package vnet

import (
	"container/heap"
	"sync"
	"time"
)

// Clock is where a World takes its time from: link delays, shaping and
// NAT timeouts. A *time.Timer satisfies Timer.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f on a goroutine of its own (RealClock) or on the
	// goroutine that advances the clock (ManualClock) once d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a timer made by a Clock's AfterFunc.
type Timer interface {
	Stop() bool
	Reset(d time.Duration) bool
}

// RealClock is the wall clock; it is the default.
type RealClock struct{}

func (RealClock) Now() time.Time                            { return time.Now() }
func (RealClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// ManualClock is a clock that moves only when Advance is called; the
// timers that come due run on Advance's goroutine, in the order of their
// due times, each with Now at its due time. With it a test of delay,
// shaping or timeouts is exact and takes no real time. Deadlines set on
// sockets and streams (SetDeadline) stay in real time: they are the
// caller's timeouts, not the network's behaviour.
type ManualClock struct {
	mu     sync.Mutex // guards now, timers, seq
	now    time.Time
	timers manualHeap
	seq    uint64 // orders timers due at the same time by creation
}

// NewManualClock returns a clock standing at start.
func NewManualClock(start time.Time) *ManualClock { return &ManualClock{now: start} }

// Now implements Clock.
func (c *ManualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc implements Clock.
func (c *ManualClock) AfterFunc(d time.Duration, f func()) Timer {
	t := &manualTimer{c: c, f: f, idx: -1}
	t.Reset(d)
	return t
}

// Advance moves the clock forward by d, running every timer that comes due
// on the way.
func (c *ManualClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	for len(c.timers) > 0 && !c.timers[0].when.After(end) {
		t := heap.Pop(&c.timers).(*manualTimer)
		if t.when.After(c.now) {
			c.now = t.when
		}
		c.mu.Unlock()
		t.f() // may Reset timers, its own too
		c.mu.Lock()
	}
	c.now = end
	c.mu.Unlock()
}

// Pending reports how many timers are armed.
func (c *ManualClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

type manualTimer struct {
	c    *ManualClock
	f    func()
	when time.Time
	seq  uint64
	idx  int // in c.timers; -1 when not armed
}

func (t *manualTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.idx < 0 {
		return false
	}
	heap.Remove(&t.c.timers, t.idx)
	return true
}

func (t *manualTimer) Reset(d time.Duration) bool {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	armed := t.idx >= 0
	if armed {
		heap.Remove(&c.timers, t.idx)
	}
	t.when = c.now.Add(d)
	c.seq++
	t.seq = c.seq
	heap.Push(&c.timers, t)
	return armed
}

type manualHeap []*manualTimer

func (h manualHeap) Len() int { return len(h) }
func (h manualHeap) Less(i, j int) bool {
	if h[i].when.Equal(h[j].when) {
		return h[i].seq < h[j].seq
	}
	return h[i].when.Before(h[j].when)
}
func (h manualHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *manualHeap) Push(x any) {
	t := x.(*manualTimer)
	t.idx = len(*h)
	*h = append(*h, t)
}
func (h *manualHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.idx = -1
	return t
}
