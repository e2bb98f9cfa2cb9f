package transport

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// What the Bind has handed to the socket per peer, for a node that must
// know its own packets left before it closes (the route withdrawals it
// sends its peers when it stops). WireGuard sends each peer's transport
// messages from one goroutine, in the order it queued them: a message
// handed over after one of ours was queued is ours, or one queued ahead
// of it.

// sentWaiters wakes WaitSent's callers when a transport message is sent.
type sentWaiters struct {
	waiting atomic.Bool // someone waits: Send must wake them
	mu      sync.Mutex  // guards ch
	ch      chan struct{}
}

// noteSent counts the transport messages of bufs, just handed to the
// socket for p, and wakes the waiters. On every Send: one atomic add and
// one load when nobody waits.
func (b *Bind) noteSent(p *PeerEndpoint, bufs [][]byte) {
	n := uint64(0)
	for _, buf := range bufs {
		if len(buf) > 0 && buf[0] == msgTransport {
			n++
		}
	}
	if n == 0 {
		return
	}
	p.sent.Add(n)
	if !b.sent.waiting.Load() {
		return
	}
	b.sent.mu.Lock()
	b.sent.waiting.Store(false)
	if b.sent.ch != nil {
		close(b.sent.ch)
		b.sent.ch = nil
	}
	b.sent.mu.Unlock()
}

// Sent returns how many transport messages (data and keepalives, not
// handshakes) the Bind has handed to the socket for key, directly or
// through a relay; 0 if key is not a peer.
func (b *Bind) Sent(key identity.PublicKey) uint64 {
	if p := b.Peer(key); p != nil {
		return p.sent.Load()
	}
	return 0
}

// WaitSent waits until the Bind has handed more than n transport messages
// to the socket for key (see Sent), or until ctx ends.
func (b *Bind) WaitSent(ctx context.Context, key identity.PublicKey, n uint64) error {
	p := b.Peer(key)
	if p == nil {
		return fmt.Errorf("wait for a send to %s: not a peer", key.ShortString())
	}
	for {
		b.sent.mu.Lock()
		// Announced before the count is read: a Send that counts after
		// the read sees someone waits, and wakes them.
		b.sent.waiting.Store(true)
		if p.sent.Load() > n {
			b.sent.mu.Unlock()
			return nil
		}
		if b.sent.ch == nil {
			b.sent.ch = make(chan struct{})
		}
		ch := b.sent.ch
		b.sent.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
