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

// Bounds on what hosted devices may make this node hold and resolve: a
// device is a key the home does not control (a stolen phone), and each
// destination it holds takes a slot of the home's own queue and makes
// the home look the address up (a session, a bridge lookup). Only a
// packet of a flow the device opened (charged to its flow quota) waits;
// all devices together take at most a quarter of the queue, one device
// maxHeldPerDevice destinations at a time and deviceResolveRate new ones
// a second after a burst of deviceResolveBurst. The rest is answered
// unreachable to the device.
const (
	maxHeldDeviceDsts  = maxHeldDsts / 4
	maxHeldPerDevice   = 8
	deviceResolveBurst = 16
	deviceResolveRate  = 1.0 // per second
)

type held struct {
	since time.Time
	pkts  []heldPacket
	// dev is the hosted device whose packet made this destination wait
	// (invalid: this node's own), charged one of its slots until taken.
	dev netip.Addr
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
	mu      sync.Mutex // guards the fields below
	pending map[netip.Addr]*held
	devices int                           // destinations in pending held for devices
	byDev   map[netip.Addr]int            // the same per device
	budgets map[netip.Addr]*resolveBudget // new destinations a device may still make wait
}

func (q *holdQueue) init() {
	q.pending = make(map[netip.Addr]*held)
	q.byDev = make(map[netip.Addr]int)
	q.budgets = make(map[netip.Addr]*resolveBudget)
}

// resolveBudget is a device's token bucket of new destinations.
type resolveBudget struct {
	tokens float64
	last   time.Time
}

// admitDeviceLocked reports whether device dev may make one more
// destination wait now, and charges it if so.
func (q *holdQueue) admitDeviceLocked(dev netip.Addr, now time.Time) bool {
	if q.devices >= maxHeldDeviceDsts || q.byDev[dev] >= maxHeldPerDevice {
		return false
	}
	b := q.budgets[dev]
	if b == nil {
		b = &resolveBudget{tokens: deviceResolveBurst, last: now}
		q.budgets[dev] = b
	}
	b.tokens = min(deviceResolveBurst, b.tokens+now.Sub(b.last).Seconds()*deviceResolveRate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	q.devices++
	q.byDev[dev]++
	return true
}

// forgetBudgetsLocked drops the buckets that have filled up again, so
// that the map holds only devices active in the last minute or so.
func (q *holdQueue) forgetBudgetsLocked(now time.Time) {
	for dev, b := range q.budgets {
		if q.byDev[dev] == 0 && b.tokens+now.Sub(b.last).Seconds()*deviceResolveRate >= deviceResolveBurst {
			delete(q.budgets, dev)
		}
	}
}

// holdPacket keeps a copy of pkt until dst is resolved, asking the resolver
// on the first packet for dst. dev is the hosted device that sent pkt
// (hairpinned: see heldPacket), invalid for this node's own packets; a
// device's packet takes a new destination only within its bounds.
func (w *Wrapper) holdPacket(dst netip.Addr, pkt []byte, dev netip.Addr) {
	if w.cfg.Resolve == nil {
		w.unreachable(pkt, packet.UnreachNoRoute)
		return
	}
	q := &w.hold
	q.mu.Lock()
	h := q.pending[dst]
	first := h == nil
	if first {
		now := time.Now()
		if len(q.pending) >= maxHeldDsts || (dev.IsValid() && !q.admitDeviceLocked(dev, now)) {
			q.mu.Unlock()
			w.unreachable(pkt, packet.UnreachNoRoute)
			return
		}
		h = &held{since: now, dev: dev}
		q.pending[dst] = h
	}
	if len(h.pkts) < maxHeldPerDst {
		h.pkts = append(h.pkts, heldPacket{b: append([]byte(nil), pkt...), hairpin: dev.IsValid()})
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
	if h.dev.IsValid() {
		q.devices--
		if q.byDev[h.dev]--; q.byDev[h.dev] <= 0 {
			delete(q.byDev, h.dev)
		}
	}
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
			w.hold.forgetBudgetsLocked(now)
			w.hold.mu.Unlock()
			for _, dst := range expired {
				w.Reject(dst, packet.UnreachAddress)
			}
			w.ping.expire(now)
		}
	}
}
