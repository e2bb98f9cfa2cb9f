// Package tunwrap owns the tun.Device that WireGuard reads and writes: it
// wraps the real device (a kernel TUN or the userspace stack) so that the
// policy filter sees every packet in both directions before WireGuard or the
// local stack does, holds packets for destinations that are not peers yet
// until they are resolved, injects packets of its own (held packets, the
// admin API's pings) into the outbound path, and answers what cannot be
// delivered with ICMP errors.
//
// Outbound (Read: local stack -> WireGuard): a packet must come from this
// node's address or site prefix (else it is spoofed and dropped), it is
// recorded in the connection table, and it waits in the hold queue if no
// peer owns its destination yet.
//
// Inbound (Write: WireGuard -> local stack): WireGuard has checked that the
// source belongs to the peer that encrypted it; the filter then applies the
// allow rules and the connection table.
package tunwrap

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/packet"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// Device is a tun.Device whose blocked Read can be cut short, which the
// wrapper needs to inject packets into the read path without an extra
// goroutine and copy per batch.
type Device interface {
	tun.Device
	// Interrupt makes a Read that is blocked, or the next Read, return
	// (0, nil) promptly. Safe for concurrent use.
	Interrupt()
}

// Config is what the wrapper needs from the node.
type Config struct {
	Filter *policy.Filter
	// Local is the node's own address, the source of its pings and ICMP errors.
	Local netip.Addr
	// Resolve is called once for a destination that has no peer, when its
	// first packet is held. It must not block; it answers later with
	// Release or Reject. Nil: such packets are answered unreachable at once.
	Resolve func(dst netip.Addr)
	// HoldTimeout bounds how long packets wait for Resolve's answer.
	HoldTimeout time.Duration
	// ControlPort, if not zero, is the UDP port of Local that the node
	// itself answers: inbound datagrams to it go to Control (before the
	// filter; the payload is only valid during the call), and local
	// programs may not send to it (only packets the node injects may).
	ControlPort uint16
	Control     func(src netip.Addr, payload []byte)
}

// Stats counts packets by fate. Read fields with Load.
type Stats struct {
	OutPackets  atomic.Uint64 // passed to WireGuard
	OutBytes    atomic.Uint64
	InPackets   atomic.Uint64 // delivered to the local stack
	InBytes     atomic.Uint64
	Dropped     [policy.NumVerdicts]atomic.Uint64 // by policy.Verdict
	Held        atomic.Uint64                     // packets that waited for a peer
	HeldInbound atomic.Uint64                     // inbound packets that waited for their source's certificate
	Unreachable atomic.Uint64                     // ICMP errors sent to local programs
	Injected    atomic.Uint64                     // packets of our own put into the read path
	Hairpinned  atomic.Uint64                     // packets forwarded between a hosted device and the overlay
}

// Wrapper is the tun.Device given to WireGuard.
type Wrapper struct {
	inner  Device
	cfg    Config
	stats  Stats
	routes atomic.Pointer[routeTable]
	// peers holds the node addresses that have a peer in the device. It is
	// kept apart from routes so that adding one peer costs O(1), whatever
	// their number: a sync.Map reads without locking for keys that stay.
	peers  sync.Map // netip.Addr -> struct{}
	hold   holdQueue
	holdIn inboundHold
	first  firstWaits
	ping   pinger

	injectMu sync.Mutex // guards injected, queued, stagedCh, hairpin
	injected [][]byte
	// hairpin are packets from or to a device this node hosts, judged on
	// the way in (Filter.Hairpin), waiting to go back out.
	hairpin  [][]byte
	queued   uint64        // packets ever put in injected
	taken    atomic.Uint64 // packets ever taken out of injected by Read
	staged   atomic.Uint64 // taken, as of the start of WireGuard's latest Read (see WaitStaged)
	stagedCh chan struct{} // closed when staged moves; nil: nobody waits

	closeOnce sync.Once
	closed    chan struct{}
	done      chan struct{}
}

var _ tun.Device = (*Wrapper)(nil)

// New wraps inner. It starts one goroutine (hold-queue expiry), ended by Close.
func New(inner Device, cfg Config) *Wrapper {
	if cfg.HoldTimeout <= 0 {
		cfg.HoldTimeout = 5 * time.Second
	}
	w := &Wrapper{inner: inner, cfg: cfg, closed: make(chan struct{}), done: make(chan struct{})}
	w.routes.Store(&routeTable{})
	w.hold.init()
	w.ping.init()
	go w.expireLoop()
	return w
}

// Stats returns the wrapper's counters.
func (w *Wrapper) Stats() *Stats { return &w.stats }

// ReadAheader is a Device that reads frames beyond the first of each batch
// without waiting (the kernel TUN on Linux, internal/tunbatch).
type ReadAheader interface {
	// ReadAhead returns the packets read ahead and the frames read ahead
	// that were dropped as malformed; ok is false where the device reads
	// one frame at a time.
	ReadAhead() (extra, malformed uint64, ok bool)
}

// ReadAhead returns the inner device's read-ahead counters (ReadAheader);
// ok is false where it has none.
func (w *Wrapper) ReadAhead() (extra, malformed uint64, ok bool) {
	if ra, is := w.inner.(ReadAheader); is {
		return ra.ReadAhead()
	}
	return 0, 0, false
}

// File implements tun.Device.
func (w *Wrapper) File() *os.File { return w.inner.File() }

// MTU implements tun.Device.
func (w *Wrapper) MTU() (int, error) { return w.inner.MTU() }

// Name implements tun.Device.
func (w *Wrapper) Name() (string, error) { return w.inner.Name() }

// Events implements tun.Device.
func (w *Wrapper) Events() <-chan tun.Event { return w.inner.Events() }

// BatchSize implements tun.Device.
func (w *Wrapper) BatchSize() int { return w.inner.BatchSize() }

// Close implements tun.Device. It closes the wrapped device.
func (w *Wrapper) Close() error {
	var err error
	w.closeOnce.Do(func() {
		close(w.closed)
		<-w.done
		w.ping.closeAll()
		err = w.inner.Close()
	})
	return err
}

// Read implements tun.Device: packets leaving this node.
func (w *Wrapper) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	w.noteStaged()
	for {
		if n := w.drainHairpin(bufs, sizes, offset); n > 0 {
			w.forwardOut(bufs[:n], sizes, offset)
			return n, nil
		}
		if n := w.drainInjected(bufs, sizes, offset); n > 0 {
			w.outbound(bufs[:n], sizes, offset, true)
			return n, nil
		}
		n, err := w.inner.Read(bufs, sizes, offset)
		if n > 0 {
			w.outbound(bufs[:n], sizes, offset, false)
		}
		if n > 0 || err != nil {
			return n, err
		}
		select {
		case <-w.closed:
			return 0, os.ErrClosed
		default:
		}
	}
}

// outbound filters a batch read from the local stack in place: dropped and
// held packets get size zero, which WireGuard skips. injected: the packets
// are the node's own.
func (w *Wrapper) outbound(bufs [][]byte, sizes []int, offset int, injected bool) {
	now := time.Now().UnixNano()
	routes := w.routes.Load()
	f := w.cfg.Filter
	var p packet.Parsed
	var lastDst netip.Addr
	var same sameFlow
	for i := range bufs {
		if sizes[i] == 0 {
			continue
		}
		pkt := bufs[i][offset : offset+sizes[i]]
		if err := p.Decode(pkt); err != nil {
			f.Malformed()
			w.stats.Dropped[policy.DropMalformed].Add(1)
			sizes[i] = 0
			continue
		}
		if same.accepted(&p) {
			// Same verdict as the previous packet of this batch.
		} else if v := f.Outbound(&p, now); v != policy.Accept {
			w.stats.Dropped[v].Add(1)
			sizes[i] = 0
			continue
		} else if !injected && w.isControl(&p) {
			// A local program may not speak for the node.
			w.stats.Dropped[policy.DropSpoofed].Add(1)
			sizes[i] = 0
			continue
		} else {
			same.remember(&p)
		}
		if p.Dst != lastDst {
			if !w.routable(routes, p.Dst) {
				w.holdPacket(p.Dst, pkt, netip.Addr{})
				sizes[i] = 0
				continue
			}
			lastDst = p.Dst
		}
		w.stats.OutPackets.Add(1)
		w.stats.OutBytes.Add(uint64(len(pkt)))
	}
}

// Write implements tun.Device: packets WireGuard decrypted for this node.
// bufs is compacted in place; WireGuard rebuilds it for every batch.
func (w *Wrapper) Write(bufs [][]byte, offset int) (int, error) {
	now := time.Now().UnixNano()
	f := w.cfg.Filter
	kept := bufs[:0]
	var p packet.Parsed
	var bytes uint64
	var same, sameHP sameFlow
	for _, b := range bufs {
		pkt := b[offset:]
		if err := p.Decode(pkt); err != nil {
			f.Malformed()
			w.stats.Dropped[policy.DropMalformed].Add(1)
			continue
		}
		if w.first.n.Load() != 0 {
			w.firstFrom(p.Src)
		}
		if sameHP.accepted(&p) {
			w.queueHairpin(pkt)
			continue
		}
		if v, fwd := f.Hairpin(&p, now); fwd {
			if v != policy.Accept {
				w.stats.Dropped[v].Add(1)
			} else if w.isControl(&p) {
				// A device may not speak for a node.
				w.stats.Dropped[policy.DropSpoofed].Add(1)
			} else {
				sameHP.remember(&p)
				w.queueHairpin(pkt)
			}
			continue
		}
		if p.IsICMP() && w.ping.intercept(&p, pkt) {
			continue
		}
		if w.isControl(&p) && p.Dst == w.cfg.Local {
			if f.Hosts(p.Src) {
				// A hosted device is no node: it neither offers routes
				// nor speaks for an organisation.
				w.stats.Dropped[policy.DropDenied].Add(1)
				continue
			}
			if w.cfg.Control != nil && !p.Fragment && p.L4Offset > 0 && p.L4Offset+8 <= p.Length && p.Length <= len(pkt) {
				w.cfg.Control(p.Src, pkt[p.L4Offset+8:p.Length])
			}
			continue
		}
		if same.accepted(&p) {
			// Same verdict as the previous packet of this batch.
		} else if w.holdInbound(p.Src, pkt) {
			continue
		} else if v := f.Inbound(&p, now); v != policy.Accept {
			w.stats.Dropped[v].Add(1)
			continue
		} else {
			same.remember(&p)
		}
		kept = append(kept, b)
		bytes += uint64(len(pkt))
	}
	if len(kept) == 0 {
		return len(bufs), nil
	}
	w.stats.InPackets.Add(uint64(len(kept)))
	w.stats.InBytes.Add(bytes)
	if _, err := w.inner.Write(kept, offset); err != nil {
		return 0, err
	}
	return len(bufs), nil
}

// isControl reports whether p is a datagram (or its first fragment) to the
// control port of a node address. Control messages fit one packet; a
// fragmented one is dropped, never handed to a local socket.
func (w *Wrapper) isControl(p *packet.Parsed) bool {
	return w.cfg.ControlPort != 0 && p.Proto == packet.ProtoUDP && p.HasPorts &&
		p.DstPort == w.cfg.ControlPort && identity.IsNodeAddress(p.Dst)
}

// sameFlow remembers the last accepted TCP or UDP flow of a batch. With
// offloads a batch is mostly segments of one flow; a segment of the same
// flow without SYN, FIN or RST gets the same verdict, so the filter (and
// the connection table's lock) runs once per flow per batch, not per
// packet. Batches are judged against one clock reading, so this changes
// no decision.
type sameFlow struct {
	flow packet.Flow
	ok   bool
}

func (s *sameFlow) accepted(p *packet.Parsed) bool {
	return s.ok && p.HasPorts && !p.Fragment && p.TCPFlags&(packet.TCPSyn|packet.TCPFin|packet.TCPRst) == 0 && p.Flow == s.flow
}

func (s *sameFlow) remember(p *packet.Parsed) {
	s.ok = p.HasPorts && !p.Fragment && (p.Proto == packet.ProtoTCP || p.Proto == packet.ProtoUDP)
	s.flow = p.Flow
}

// writeHeadroom is the space kept before packets the wrapper writes itself:
// a kernel TUN with offloads needs room for its virtio-net header.
const writeHeadroom = 16

// deliverLocal hands a packet the node made (an ICMP error) to the local
// stack, unless it answers one of our own pings.
func (w *Wrapper) deliverLocal(pkt []byte) {
	var p packet.Parsed
	if err := p.Decode(pkt); err == nil && p.IsICMP() && w.ping.intercept(&p, pkt) {
		return
	}
	buf := make([]byte, writeHeadroom+len(pkt))
	copy(buf[writeHeadroom:], pkt)
	w.stats.Unreachable.Add(1)
	w.inner.Write([][]byte{buf}, writeHeadroom)
}

// Inject queues a packet into the outbound path as if the local stack had
// sent it; it passes the same filter. The packet is copied.
func (w *Wrapper) Inject(pkt []byte) {
	w.injectMu.Lock()
	if len(w.injected) >= maxInjected {
		w.injectMu.Unlock()
		return
	}
	w.injected = append(w.injected, append([]byte(nil), pkt...))
	w.queued++
	w.injectMu.Unlock()
	w.stats.Injected.Add(1)
	w.inner.Interrupt()
}

// queueHairpin copies a packet Filter.Hairpin accepted into the hairpin
// queue, which Read sends on before anything else; over maxInjected
// packets waiting, it is dropped (the senders' congestion control slows
// down, as with a full link).
func (w *Wrapper) queueHairpin(pkt []byte) {
	if w.pushHairpin(append([]byte(nil), pkt...)) {
		w.stats.Hairpinned.Add(1)
	}
}

// pushHairpin appends pkt (not copied) to the hairpin queue, reporting
// false if the queue was full and pkt dropped.
func (w *Wrapper) pushHairpin(pkt []byte) bool {
	w.injectMu.Lock()
	if len(w.hairpin) >= maxInjected {
		w.injectMu.Unlock()
		w.stats.Dropped[policy.DropTableFull].Add(1)
		return false
	}
	w.hairpin = append(w.hairpin, pkt)
	w.injectMu.Unlock()
	w.inner.Interrupt()
	return true
}

func (w *Wrapper) drainHairpin(bufs [][]byte, sizes []int, offset int) int {
	w.injectMu.Lock()
	defer w.injectMu.Unlock()
	if len(w.hairpin) == 0 {
		return 0
	}
	n := 0
	for n < len(bufs) && n < len(w.hairpin) {
		pkt := w.hairpin[n]
		if len(pkt) > len(bufs[n])-offset {
			pkt = nil
		}
		sizes[n] = copy(bufs[n][offset:], pkt)
		n++
	}
	w.hairpin = w.hairpin[n:]
	if len(w.hairpin) == 0 {
		w.hairpin = nil
	}
	return n
}

// forwardOut sends on hairpinned packets, already judged: those from a
// device on a flow it opened (Filter.Hairpin charged it to the device) to
// a destination without a peer in the device yet wait for it as the node's own do, within the device's bounds (see
// maxHeldPerDevice), and come back to the hairpin queue when released;
// other unroutable ones are answered unreachable (to the device) or
// dropped.
func (w *Wrapper) forwardOut(bufs [][]byte, sizes []int, offset int) {
	routes := w.routes.Load()
	f := w.cfg.Filter
	var p packet.Parsed
	for i := range bufs {
		if sizes[i] == 0 {
			continue
		}
		pkt := bufs[i][offset : offset+sizes[i]]
		if p.Decode(pkt) != nil {
			sizes[i] = 0
			continue
		}
		if !w.routable(routes, p.Dst) {
			sizes[i] = 0
			switch {
			case !f.Hosts(p.Src):
				// To a device that left the device table meanwhile.
				w.stats.Dropped[policy.DropNotLocal].Add(1)
			case f.Conntrack().OpenedByHosted(&p, p.Src, time.Now().UnixNano()):
				w.holdPacket(p.Dst, pkt, p.Src)
			default:
				// On no flow the device opened (charged to its quota): a
				// reply to a peer that is gone, or a segment out of
				// nowhere. No reason to look its destination up.
				w.unreachable(pkt, packet.UnreachNoRoute)
			}
			continue
		}
		w.stats.OutPackets.Add(1)
		w.stats.OutBytes.Add(uint64(len(pkt)))
	}
}

// maxInjected bounds the injection queue; injection is best effort.
const maxInjected = 1024

func (w *Wrapper) drainInjected(bufs [][]byte, sizes []int, offset int) int {
	w.injectMu.Lock()
	defer w.injectMu.Unlock()
	n := 0
	for n < len(bufs) && n < len(w.injected) {
		pkt := w.injected[n]
		if len(pkt) > len(bufs[n])-offset {
			pkt = nil // cannot happen for packets within the MTU; drop rather than truncate
		}
		sizes[n] = copy(bufs[n][offset:], pkt)
		n++
	}
	w.injected = w.injected[n:]
	if len(w.injected) == 0 {
		w.injected = nil
	}
	w.taken.Add(uint64(n))
	return n
}

// noteStaged runs as WireGuard's TUN reader comes back for more: it reads
// a batch, hands each packet to its peer's queue (encrypted at once if the
// peer has a session, else waiting for its handshake), then reads again.
// So every injected packet taken before this Read is in its peer's queue.
func (w *Wrapper) noteStaged() {
	t := w.taken.Load()
	if w.staged.Load() == t {
		return // the hot path: nothing injected since
	}
	w.injectMu.Lock()
	w.staged.Store(t)
	if w.stagedCh != nil {
		close(w.stagedCh)
		w.stagedCh = nil
	}
	w.injectMu.Unlock()
}

// WaitStaged waits until WireGuard has taken every packet injected before
// the call and put it in its peer's queue (or the filter dropped it), or
// until ctx ends or the wrapper closes. Packets queued for a peer are
// WireGuard's to send: see transport.Bind.WaitSent.
func (w *Wrapper) WaitStaged(ctx context.Context) error {
	w.injectMu.Lock()
	target := w.queued
	for w.staged.Load() < target {
		if w.stagedCh == nil {
			w.stagedCh = make(chan struct{})
		}
		ch := w.stagedCh
		w.injectMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-w.closed:
			return os.ErrClosed
		}
		w.injectMu.Lock()
	}
	w.injectMu.Unlock()
	return nil
}

// SetPeer records whether node address a has a peer in the device. Packets
// to node addresses without one wait for Resolve.
func (w *Wrapper) SetPeer(a netip.Addr, present bool) {
	if present {
		w.peers.Store(a, struct{}{})
	} else {
		w.peers.Delete(a)
	}
}

// SetRoutes installs the other destinations that have a peer: site
// prefixes and tunnelled routes (which never match the overlay's own
// spaces). Packets to anything else wait for Resolve.
func (w *Wrapper) SetRoutes(sites []netip.Prefix, routes []netip.Prefix) {
	rt := &routeTable{sites: make(map[[8]byte]struct{}, len(sites)), routes: routes}
	for _, s := range sites {
		rt.sites[site64(s.Addr())] = struct{}{}
	}
	w.routes.Store(rt)
}

// routeTable is an immutable set of routable destinations.
type routeTable struct {
	sites  map[[8]byte]struct{}
	routes []netip.Prefix
}

// routable reports whether dst has a peer: a node address in peers, else
// a site prefix or route of rt.
func (w *Wrapper) routable(rt *routeTable, dst netip.Addr) bool {
	if _, ok := w.peers.Load(dst); ok {
		return true
	}
	return rt.has(dst)
}

func site64(a netip.Addr) [8]byte {
	b := a.As16()
	return [8]byte(b[:8])
}

func (rt *routeTable) has(dst netip.Addr) bool {
	if identity.IsNodeAddress(dst) {
		return false
	}
	if identity.IsSiteAddress(dst) {
		_, ok := rt.sites[site64(dst)]
		return ok
	}
	for _, p := range rt.routes {
		if p.Contains(dst) {
			return true
		}
	}
	return false
}

var errClosed = errors.New("tun wrapper closed")
