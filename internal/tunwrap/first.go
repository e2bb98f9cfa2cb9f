package tunwrap

import (
	"net/netip"
	"sync"
	"sync/atomic"
)

// First packets: a node that answered a peer's handshake must not send it
// anything before the peer's first packet confirms the session. WireGuard
// keeps the responder's new keys aside until then, so a packet sent
// meanwhile makes it start a handshake of its own, which crosses the
// peer's and costs both a retry, seconds later. OnFirstFrom lets the node
// wait for that first packet; the packet path pays one atomic load while
// nobody waits.

type firstWaits struct {
	mu  sync.Mutex // guards fns
	fns map[netip.Addr]func()
	n   atomic.Int64 // len(fns)
}

// OnFirstFrom calls fn (on its own goroutine) when the next packet from src
// arrives from WireGuard, or never if CancelFirst comes first. A second
// call for src replaces the first.
func (w *Wrapper) OnFirstFrom(src netip.Addr, fn func()) {
	f := &w.first
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fns == nil {
		f.fns = make(map[netip.Addr]func())
	}
	f.fns[src] = fn
	f.n.Store(int64(len(f.fns)))
}

// CancelFirst forgets the wait for src, reporting whether there was one.
func (w *Wrapper) CancelFirst(src netip.Addr) bool {
	return w.takeFirst(src) != nil
}

func (w *Wrapper) takeFirst(src netip.Addr) func() {
	f := &w.first
	if f.n.Load() == 0 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	fn := f.fns[src]
	if fn != nil {
		delete(f.fns, src)
		f.n.Store(int64(len(f.fns)))
	}
	return fn
}

// firstFrom runs the wait for src, if any, off the packet path.
func (w *Wrapper) firstFrom(src netip.Addr) {
	if fn := w.takeFirst(src); fn != nil {
		go fn()
	}
}
