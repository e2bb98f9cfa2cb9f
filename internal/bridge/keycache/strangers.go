package keycache

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/ratelimit"
)

// A control frame whose sender's shared key is not cached is the one
// frame anyone can make a node or a bridge spend an X25519 on: the sender's
// key travels in clear, and any 32 bytes will do. What such frames cost:
//
//   - On the receive goroutine only cheap checks run: the sender is one the
//     owner would talk to at all (a node's Wants, which must not block),
//     the frame's size, a token bucket per source (an IPv6 /64 or an IPv4
//     address: SourceRate, bursts of SourceBurst) and a node-wide one
//     (StrangerRate). A frame that passes is copied onto a bounded queue;
//     one that does not is dropped and counted. No X25519 runs there.
//   - One worker goroutine per client or bridge opens the queued frames
//     (the X25519) and hands those that open to its owner, on the worker.
//     Between frames it computes the shared keys waiting to be pinned
//     (Cache.Pin), so keys known in advance are ready before their
//     first frame.
//
// Bound: StrangerRate X25519 per second for such frames (after a burst of
// StrangerBurst), whatever the number of sources, and none on a receive
// goroutine. It is the size of the handshake budget for strangers
// (transport's strangerRate), and like it, a flood from spoofed sources
// can use it up: frames from a node's bridges and from the keys it knows
// in advance never depend on it (pinned), and a bridge's TCP listener
// spends a budget of its own (its sources are proven by TCP's handshake,
// and a node falls back to TCP when UDP gets no answer).
const (
	StrangerRate     = 500
	StrangerBurst    = 500
	strangerQueueLen = 256
	// MaxStrangerFrame bounds a queued frame: a Register with the longest
	// token and wire.MaxEndpoints endpoints takes 367 bytes, a probe under 100.
	MaxStrangerFrame = 512

	// Per source (ratelimit.Source), as wireguard-go limits handshakes:
	// 20/s, bursts of 5, in a table of at most MaxSources sources. A
	// bridge answers refusals and challenges within the same bounds.
	SourceRate  = 20
	SourceBurst = 5
	MaxSources  = 4096
)

// Handler acts on a message from from, whose frame opened with shared
// and came from src, on the worker goroutine.
type Handler func(from identity.PublicKey, shared *wire.SharedKey, m wire.Message, src netip.AddrPort)

// Counters are the owner's counters the queue adds to.
type Counters struct {
	Queued  *atomic.Uint64 // frames handed to the worker
	Limited *atomic.Uint64 // frames dropped: over a budget, too long, or the queue full
	Failed  *atomic.Uint64 // frames the worker could not open
}

type strangerFrame struct {
	buf [MaxStrangerFrame]byte
	n   int
	src netip.AddrPort
}

var strangerFrames = sync.Pool{New: func() any { return new(strangerFrame) }}

// Budget is what frames from uncached senders may spend: per source and
// in all. Time is real time (it budgets CPU), not a bridge's clock nor an
// injected one (package clock): callers pass time.Now. A
// bridge keeps one of its own for the first frames of its TCP
// connections.
type Budget struct {
	perSource *ratelimit.Keyed
	all       *rate.Limiter
}

// NewBudget is a budget of SourceRate frames a second per source and
// StrangerRate in all.
func NewBudget() *Budget {
	return &Budget{
		perSource: ratelimit.NewKeyed(SourceRate, SourceBurst, MaxSources),
		all:       rate.NewLimiter(StrangerRate, StrangerBurst),
	}
}

// Allow spends one frame from src (unless src is unknown: then only the
// budget in all) at now.
func (b *Budget) Allow(src netip.AddrPort, now time.Time) bool {
	return (!src.IsValid() || b.perSource.Allow(ratelimit.Source(src.Addr()), now)) && b.all.AllowN(now, 1)
}

// Strangers is the queue and worker of frames from uncached senders. Its
// worker ends with Stop; frames submitted after that are dropped.
type Strangers struct {
	keys     *Cache
	handle   Handler
	counters Counters
	budget   *Budget
	q        chan *strangerFrame
	kick     chan struct{} // keys wait to be pinned
	done     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// StartStrangers starts the worker that opens the frames submitted to it
// with keys (computing the shared keys it lacks), and hands those that
// open to handle. Between frames it computes the keys waiting to be
// pinned (Cache.Pin).
func StartStrangers(keys *Cache, handle Handler, counters Counters) *Strangers {
	s := &Strangers{
		keys:     keys,
		handle:   handle,
		counters: counters,
		budget:   NewBudget(),
		q:        make(chan *strangerFrame, strangerQueueLen),
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	s.wg.Add(1)
	go s.work()
	return s
}

// Stop ends the worker and waits for it. Owners call it once their
// receiving has stopped, before what the handler uses is closed.
func (s *Strangers) Stop() {
	s.stopOnce.Do(func() {
		close(s.done)
		s.wg.Wait()
	})
}

// Submit queues a control frame from src for the worker, within the
// budgets. It runs on a receive goroutine: it never blocks, never does
// X25519, and copies frame (a receive buffer). It reports whether the
// frame was queued.
func (s *Strangers) Submit(frame []byte, src netip.AddrPort, now time.Time) bool {
	select {
	case <-s.done:
		return false
	default:
	}
	if len(frame) > MaxStrangerFrame || !s.budget.Allow(src, now) {
		s.counters.Limited.Add(1)
		return false
	}
	f := strangerFrames.Get().(*strangerFrame)
	f.n = copy(f.buf[:], frame)
	f.src = src
	select {
	case s.q <- f:
		s.counters.Queued.Add(1)
		return true
	default:
		strangerFrames.Put(f)
		s.counters.Limited.Add(1)
		return false
	}
}

// PinSoon wakes the worker to compute the keys waiting to be pinned.
func (s *Strangers) PinSoon() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// work opens queued frames, and pins waiting keys when there are none.
func (s *Strangers) work() {
	defer s.wg.Done()
	for {
		select {
		case <-s.done:
			return
		case f := <-s.q:
			s.open(f)
			continue
		default:
		}
		if k, ok := s.keys.nextPending(); ok {
			s.keys.PinComputed(k, s.keys.Compute(k))
			continue
		}
		select {
		case <-s.done:
			return
		case f := <-s.q:
			s.open(f)
		case <-s.kick:
		}
	}
}

// open opens one queued frame and hands it to the owner.
func (s *Strangers) open(f *strangerFrame) {
	frame, src := f.buf[:f.n], f.src
	defer strangerFrames.Put(f)
	from, err := wire.Sender(frame)
	if err != nil {
		s.counters.Failed.Add(1)
		return
	}
	// Another frame of this sender may have taught us its key meanwhile.
	shared := s.keys.Cached(from)
	if shared == nil {
		shared = s.keys.Compute(from)
		s.keys.PinComputed(from, shared) // if it waits to be pinned: no second X25519
	}
	m, err := wire.Open(frame, shared)
	if err != nil {
		s.counters.Failed.Add(1)
		return
	}
	if s.keys.keepOpened {
		s.keys.Keep(from, shared)
	}
	s.handle(from, shared, m, src)
}
