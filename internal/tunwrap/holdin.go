package tunwrap

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tomoe-net/tomoe/internal/packet"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// Inbound hold: a peer admitted pending its organisation certificate meets
// no rule until the certificate verifies, a round trip after its first
// packets. Its packets wait here instead of being dropped (a TCP SYN would
// otherwise cost its sender a one-second retransmission) and are judged
// when the node releases them. The bounds keep a peer that never presents
// a certificate to a few packets; the packet path pays one atomic load
// while no peer is pending.
const (
	maxHeldInPerSrc = 16
	maxHeldInSrcs   = 64
	// heldInTimeout forgets a source the node neither released nor
	// dropped (it does one or the other within orgs.PendingTimeout).
	heldInTimeout = 15 * time.Second
)

type heldIn struct {
	since time.Time
	pkts  [][]byte // each with writeHeadroom bytes before the packet
}

type inboundHold struct {
	mu   sync.Mutex // guards srcs
	srcs map[netip.Addr]*heldIn
	n    atomic.Int64 // len(srcs), read without the lock
}

// HoldFrom makes the packets from src wait (up to maxHeldInPerSrc) until
// ReleaseInbound or DropInbound. It reports false when too many sources
// wait already: then src's packets meet the filter at once.
func (w *Wrapper) HoldFrom(src netip.Addr) bool {
	q := &w.holdIn
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.srcs == nil {
		q.srcs = make(map[netip.Addr]*heldIn)
	}
	if q.srcs[src] != nil {
		return true
	}
	if len(q.srcs) >= maxHeldInSrcs {
		return false
	}
	q.srcs[src] = &heldIn{since: time.Now()}
	q.n.Store(int64(len(q.srcs)))
	return true
}

// holdInbound keeps a copy of pkt if its source waits. It reports whether
// the packet is taken care of (kept, or dropped over the bound).
func (w *Wrapper) holdInbound(src netip.Addr, pkt []byte) bool {
	q := &w.holdIn
	if q.n.Load() == 0 {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	h := q.srcs[src]
	if h == nil {
		return false
	}
	if len(h.pkts) >= maxHeldInPerSrc {
		w.stats.Dropped[policy.DropDenied].Add(1)
		return true
	}
	buf := make([]byte, writeHeadroom+len(pkt))
	copy(buf[writeHeadroom:], pkt)
	h.pkts = append(h.pkts, buf)
	w.stats.HeldInbound.Add(1)
	return true
}

func (q *inboundHold) take(src netip.Addr) ([][]byte, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	h := q.srcs[src]
	if h == nil {
		return nil, false
	}
	delete(q.srcs, src)
	q.n.Store(int64(len(q.srcs)))
	return h.pkts, true
}

// ReleaseInbound ends the wait of src (its certificate verified): the
// packets held are judged by the filter as if they arrived now, and those
// it accepts are delivered.
func (w *Wrapper) ReleaseInbound(src netip.Addr) {
	held, _ := w.holdIn.take(src)
	if len(held) == 0 {
		return
	}
	now := time.Now().UnixNano()
	var p packet.Parsed
	kept := held[:0]
	for _, b := range held {
		if p.Decode(b[writeHeadroom:]) != nil {
			continue
		}
		if v := w.cfg.Filter.Inbound(&p, now); v != policy.Accept {
			w.stats.Dropped[v].Add(1)
			continue
		}
		kept = append(kept, b)
		w.stats.InPackets.Add(1)
		w.stats.InBytes.Add(uint64(len(b) - writeHeadroom))
	}
	if len(kept) > 0 {
		w.inner.Write(kept, writeHeadroom)
	}
}

// DropInbound ends the wait of src (its certificate failed, or it was
// cut): the packets held are dropped as denied.
func (w *Wrapper) DropInbound(src netip.Addr) {
	if held, ok := w.holdIn.take(src); ok && len(held) > 0 {
		w.stats.Dropped[policy.DropDenied].Add(uint64(len(held)))
	}
}

// HeldSources reports how many sources wait.
func (w *Wrapper) HeldSources() int { return int(w.holdIn.n.Load()) }

// expireInbound drops the sources that waited longer than heldInTimeout.
func (w *Wrapper) expireInbound(now time.Time) {
	if w.holdIn.n.Load() == 0 {
		return
	}
	var old []netip.Addr
	w.holdIn.mu.Lock()
	for src, h := range w.holdIn.srcs {
		if now.Sub(h.since) > heldInTimeout {
			old = append(old, src)
		}
	}
	w.holdIn.mu.Unlock()
	for _, src := range old {
		w.DropInbound(src)
	}
}
