package tunwrap

import (
	"net/netip"
	"sync"
	"time"

	"github.com/tomoe-net/tomoe/internal/packet"
)

// Bounds of the hold queue: a program that sprays unknown addresses gets
// unreachable errors, not unbounded memory.
const (
	maxHeldPerDst = 32
	maxHeldDsts   = 256
)

type held struct {
	since time.Time
	pkts  []heldPacket
}

// heldPacket is a packet waiting for its destination's peer. hairpin:
// forwarded for a hosted device, already judged by Filter.Hairpin; it
// goes back to the hairpin queue when released (Outbound would rightly
// refuse its source, which is not this node's).
type heldPacket struct {
	b       []byte
	hairpin bool
}

type holdQueue struct {
	mu      sync.Mutex // guards pending
	pending map[netip.Addr]*held
}

func (q *holdQueue) init() { q.pending = make(map[netip.Addr]*held) }

// holdPacket keeps a copy of pkt until dst is resolved, asking the resolver
// on the first packet for dst. hairpin: see heldPacket.
func (w *Wrapper) holdPacket(dst netip.Addr, pkt []byte, hairpin bool) {
	if w.cfg.Resolve == nil {
		w.unreachable(pkt, packet.UnreachNoRoute)
		return
	}
	q := &w.hold
	q.mu.Lock()
	h := q.pending[dst]
	first := h == nil
	if first {
		if len(q.pending) >= maxHeldDsts {
			q.mu.Unlock()
			w.unreachable(pkt, packet.UnreachNoRoute)
			return
		}
		h = &held{since: time.Now()}
		q.pending[dst] = h
	}
	if len(h.pkts) < maxHeldPerDst {
		h.pkts = append(h.pkts, heldPacket{b: append([]byte(nil), pkt...), hairpin: hairpin})
		w.stats.Held.Add(1)
	}
	q.mu.Unlock()
	if first {
		w.cfg.Resolve(dst)
	}
}

func (q *holdQueue) take(dst netip.Addr) []heldPacket {
	q.mu.Lock()
	defer q.mu.Unlock()
	h := q.pending[dst]
	if h == nil {
		return nil
	}
	delete(q.pending, dst)
	return h.pkts
}

// Release sends the packets held for dst, now that it has a peer (call
// SetPeer or SetRoutes first).
func (w *Wrapper) Release(dst netip.Addr) {
	for _, pkt := range w.hold.take(dst) {
		if pkt.hairpin {
			w.pushHairpin(pkt.b)
		} else {
			w.Inject(pkt.b)
		}
	}
}

// Reject answers the packets held for dst with ICMP destination
// unreachable (code: a packet.Unreach* value) and forgets them.
func (w *Wrapper) Reject(dst netip.Addr, code uint8) {
	for _, pkt := range w.hold.take(dst) {
		w.unreachable(pkt.b, code)
	}
}

// Pending reports the destinations waiting for resolution.
func (w *Wrapper) Pending() int {
	w.hold.mu.Lock()
	defer w.hold.mu.Unlock()
	return len(w.hold.pending)
}

func (w *Wrapper) unreachable(orig []byte, code uint8) {
	var p packet.Parsed
	if p.Decode(orig) != nil {
		return
	}
	from := w.cfg.Local
	if p.Version == 4 {
		return // no IPv4 source of our own to answer from (yet)
	}
	if icmp := packet.Unreachable(from, orig, code); icmp != nil {
		if w.cfg.Filter.Hosts(p.Src) {
			// From a device this node hosts: the error goes back to it.
			w.stats.Unreachable.Add(1)
			w.queueHairpin(icmp)
			return
		}
		w.deliverLocal(icmp)
	}
}

func (w *Wrapper) expireLoop() {
	defer close(w.done)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-w.closed:
			return
		case now := <-t.C:
			var expired []netip.Addr
			w.hold.mu.Lock()
			for dst, h := range w.hold.pending {
				if now.Sub(h.since) > w.cfg.HoldTimeout {
					expired = append(expired, dst)
				}
			}
			w.hold.mu.Unlock()
			for _, dst := range expired {
				w.Reject(dst, packet.UnreachAddress)
			}
			w.ping.expire(now)
		}
	}
}
