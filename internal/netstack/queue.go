package netstack

import (
	"os"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// outQueue is the bounded FIFO of outbound packets between gVisor's transmit
// path and Read. Producers never block: when the queue is full the packet is
// dropped and counted, and TCP treats it as loss.
type outQueue struct {
	// mu guards ring, head, count, interrupted, closed and sleepers.
	mu          sync.Mutex
	ring        []*stack.PacketBuffer // each holds one reference
	head        int
	count       int
	interrupted bool
	closed      bool
	sleepers    int // Reads asleep in wait; lets tests see a Read is blocked

	// wake holds a token when Read should look at the queue again; it has
	// capacity 1 so producers can signal without blocking or allocating.
	wake chan struct{}
	// done is closed by close, releasing every blocked Read.
	done chan struct{}
}

func newOutQueue(capacity int) *outQueue {
	return &outQueue{
		ring: make([]*stack.PacketBuffer, capacity),
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
}

// push queues pkt, taking a reference on it, and reports false (taking none)
// if the queue is full or closed.
func (q *outQueue) push(pkt *stack.PacketBuffer) bool {
	q.mu.Lock()
	if q.closed || q.count == len(q.ring) {
		q.mu.Unlock()
		return false
	}
	q.ring[(q.head+q.count)%len(q.ring)] = pkt.IncRef()
	q.count++
	q.mu.Unlock()
	q.signal()
	return true
}

func (q *outQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// wait blocks until it can fill dst with at least one packet, an interrupt is
// pending, or the queue is closed. It returns the number of packets moved to
// dst (whose references pass to the caller), 0 for an interrupt or an empty
// dst, or os.ErrClosed.
func (q *outQueue) wait(dst []*stack.PacketBuffer) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		switch {
		case q.closed:
			return 0, os.ErrClosed
		case q.interrupted:
			q.interrupted = false
			return 0, nil
		case len(dst) == 0:
			return 0, nil
		case q.count > 0:
			n := min(len(dst), q.count)
			for i := range n {
				j := (q.head + i) % len(q.ring)
				dst[i] = q.ring[j]
				q.ring[j] = nil
			}
			q.head = (q.head + n) % len(q.ring)
			q.count -= n
			if q.count > 0 {
				// Another concurrent Read may be asleep; pass the baton.
				q.signal()
			}
			return n, nil
		}
		q.sleepers++
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-q.done:
		}
		q.mu.Lock()
		q.sleepers--
	}
}

func (q *outQueue) interrupt() {
	q.mu.Lock()
	q.interrupted = true
	q.mu.Unlock()
	q.signal()
}

// close releases blocked readers, refuses further pushes and drops what is
// queued. It is idempotent.
func (q *outQueue) close() {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.closed = true
	for q.count > 0 {
		q.ring[q.head].DecRef()
		q.ring[q.head] = nil
		q.head = (q.head + 1) % len(q.ring)
		q.count--
	}
	q.mu.Unlock()
	close(q.done)
}
