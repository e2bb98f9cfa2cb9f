package bridge

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
//     address: unknownRate, bursts of unknownBurst) and a node-wide one
//     (strangerRate). A frame that passes is copied onto a bounded queue;
//     one that does not is dropped and counted. No X25519 runs there.
//   - One worker goroutine per client or bridge opens the queued frames
//     (the X25519) and hands those that open to its owner, on the worker.
//     Between frames it computes the shared keys waiting to be pinned
//     (keyCache.pending), so keys known in advance are ready before their
//     first frame.
//
// Bound: strangerRate X25519 per second for such frames (after a burst of
// strangerBurst), whatever the number of sources, and none on a receive
// goroutine. It is the size of the handshake budget for strangers
// (transport's strangerRate), and like it, a flood from spoofed sources
// can use it up: frames from a node's bridges and from the keys it knows
// in advance never depend on it (pinned), and a bridge's TCP listener
// spends a budget of its own (its sources are proven by TCP's handshake,
// and a node falls back to TCP when UDP gets no answer).
const (
	strangerRate     = 500
	strangerBurst    = 500
	strangerQueueLen = 256
	// maxStrangerFrame bounds a queued frame: a Register with the longest
	// token and wire.MaxEndpoints endpoints takes 367 bytes, a probe under 100.
	maxStrangerFrame = 512

	// Per source (ratelimit.Source), as wireguard-go limits handshakes:
	// 20/s, bursts of 5, in a table of at most unknownSources sources.
	unknownRate    = 20
	unknownBurst   = 5
	unknownSources = 4096
)

// strangerHandler acts on a message from from, whose frame opened with
// shared, on the worker goroutine.
type strangerHandler func(from identity.PublicKey, shared *wire.SharedKey, m wire.Message, src netip.AddrPort)

// strangerCounters are the owner's counters the queue adds to.
type strangerCounters struct {
	queued  *atomic.Uint64 // frames handed to the worker
	limited *atomic.Uint64 // frames dropped: over a budget, too long, or the queue full
	failed  *atomic.Uint64 // frames the worker could not open
}

type strangerFrame struct {
	buf [maxStrangerFrame]byte
	n   int
	src netip.AddrPort
}

var strangerFrames = sync.Pool{New: func() any { return new(strangerFrame) }}

// strangerBudget is what frames from uncached senders may spend: per
// source and in all. Time is real time (it budgets CPU), not a bridge's
// clock.
type strangerBudget struct {
	perSource *ratelimit.Keyed
	all       *rate.Limiter
}

func newStrangerBudget() *strangerBudget {
	return &strangerBudget{
		perSource: ratelimit.NewKeyed(unknownRate, unknownBurst, unknownSources),
		all:       rate.NewLimiter(strangerRate, strangerBurst),
	}
}

// allow spends one frame from src (unless src is unknown: then only the
// budget in all) at now.
func (b *strangerBudget) allow(src netip.AddrPort, now time.Time) bool {
	return (!src.IsValid() || b.perSource.Allow(ratelimit.Source(src.Addr()), now)) && b.all.AllowN(now, 1)
}

// strangers is the queue and worker of frames from uncached senders. Its
// worker ends with stop; frames submitted after that are dropped.
type strangers struct {
	keys     *keyCache
	handle   strangerHandler
	counters strangerCounters
	budget   *strangerBudget
	q        chan *strangerFrame
	kick     chan struct{} // keys wait to be pinned
	done     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

func startStrangers(keys *keyCache, handle strangerHandler, counters strangerCounters) *strangers {
	s := &strangers{
		keys:     keys,
		handle:   handle,
		counters: counters,
		budget:   newStrangerBudget(),
		q:        make(chan *strangerFrame, strangerQueueLen),
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
	s.wg.Add(1)
	go s.work()
	return s
}

// stop ends the worker and waits for it. Owners call it once their
// receiving has stopped, before what the handler uses is closed.
func (s *strangers) stop() {
	s.stopOnce.Do(func() {
		close(s.done)
		s.wg.Wait()
	})
}

// submit queues a control frame from src for the worker, within the
// budgets. It runs on a receive goroutine: it never blocks, never does
// X25519, and copies frame (a receive buffer). It reports whether the
// frame was queued.
func (s *strangers) submit(frame []byte, src netip.AddrPort, now time.Time) bool {
	select {
	case <-s.done:
		return false
	default:
	}
	if len(frame) > maxStrangerFrame || !s.budget.allow(src, now) {
		s.counters.limited.Add(1)
		return false
	}
	f := strangerFrames.Get().(*strangerFrame)
	f.n = copy(f.buf[:], frame)
	f.src = src
	select {
	case s.q <- f:
		s.counters.queued.Add(1)
		return true
	default:
		strangerFrames.Put(f)
		s.counters.limited.Add(1)
		return false
	}
}

// pinSoon wakes the worker to compute the keys waiting to be pinned.
func (s *strangers) pinSoon() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// work opens queued frames, and pins waiting keys when there are none.
func (s *strangers) work() {
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
			s.keys.pinComputed(k, s.keys.compute(k))
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
func (s *strangers) open(f *strangerFrame) {
	frame, src := f.buf[:f.n], f.src
	defer strangerFrames.Put(f)
	from, err := wire.Sender(frame)
	if err != nil {
		s.counters.failed.Add(1)
		return
	}
	// Another frame of this sender may have taught us its key meanwhile.
	shared := s.keys.cached(from)
	if shared == nil {
		shared = s.keys.compute(from)
		s.keys.pinComputed(from, shared) // if it waits to be pinned: no second X25519
	}
	m, err := wire.Open(frame, shared)
	if err != nil {
		s.counters.failed.Add(1)
		return
	}
	if s.keys.keepOpened {
		s.keys.keep(from, shared)
	}
	s.handle(from, shared, m, src)
}
