package netstack

import (
	"errors"
	"log/slog"
	"os"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// This file is the tun.Device face of the stack: the NIC's link endpoint, the
// outbound queue between gVisor and WireGuard, and Read, Write and Interrupt.
//
// Outbound, gVisor calls link.WritePackets from its own goroutines; the link
// takes a reference on each packet and parks it in outQueue without copying.
// Read pops a batch and copies each packet's views straight into WireGuard's
// buffers, the only copy on that path. Inbound, Write copies each packet once
// into pooled gVisor buffers (bufs may not be retained), merging runs of TCP
// segments into larger packets on the way (gro.go), and delivers them
// synchronously; TCP segments are then handed to gVisor's processor
// goroutines, so Write does not wait for TCP processing.
//
// Outbound packets are at most the MTU. The link can offer gVisor's software
// GSO (tuning.gso: TCP builds segments of up to 64 KiB and gVisor splits
// them before they reach the link), but it is off: it measured slower
// wherever packets are lost (tuning.go). Host GSO, where Read would split
// each super-segment (pkt.GSOOptions) into MSS-sized packets across several
// bufs itself, is not implemented; WireGuard encrypts per packet either way.

// errNegativeOffset is returned for a negative offset, a caller bug.
var errNegativeOffset = errors.New("netstack: negative buffer offset")

// Read implements tun.Device. It blocks until at least one outbound packet is
// queued, Interrupt is called, or the stack is closed. It then copies as many
// queued packets as fit in len(bufs) (at most BatchSize) into bufs[i][offset:]
// and sets sizes[i], without blocking further. A packet larger than
// len(bufs[i])-offset is dropped and counted in Stats.DroppedOversize, never
// truncated. After Interrupt it returns (0, nil); after Close, (0, os.ErrClosed).
// Read never retains bufs.
func (s *Stack) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if offset < 0 {
		return 0, errNegativeOffset
	}
	var batch [batchSize]*stack.PacketBuffer
	want := min(len(bufs), len(sizes), batchSize)
	for {
		k, err := s.link.out.wait(batch[:want])
		if err != nil || k == 0 {
			return 0, err
		}
		if n := s.copyOut(batch[:k], bufs, sizes, offset); n > 0 {
			return n, nil
		}
		// Every packet in the batch was oversize: wait for more rather than
		// return an empty, uninterrupted read.
	}
}

// copyOut copies pkts into bufs and releases them, returning how many it
// copied. len(pkts) <= len(bufs) and len(sizes).
func (s *Stack) copyOut(pkts []*stack.PacketBuffer, bufs [][]byte, sizes []int, offset int) int {
	n, bytes, oversize := 0, 0, 0
	for i, pkt := range pkts {
		size := pkt.Size()
		buf := bufs[n]
		if offset > len(buf) || size > len(buf)-offset {
			oversize++
		} else {
			copyPacket(buf[offset:offset+size], pkt)
			sizes[n] = size
			n++
			bytes += size
		}
		pkt.DecRef()
		pkts[i] = nil
	}
	s.stats.packetsOut.Add(uint64(n))
	s.stats.bytesOut.Add(uint64(bytes))
	if oversize > 0 {
		s.stats.droppedOversize.Add(uint64(oversize))
		if s.link.oversizeLog.allow() {
			s.log.Warn("dropped outbound packets larger than the read buffer", "count", oversize, "offset", offset)
		}
	}
	return n
}

// copyPacket copies pkt, headers and payload, into dst, which is exactly
// pkt.Size() long. It walks the packet's views instead of calling AsSlices,
// which would allocate a slice header per packet.
func copyPacket(dst []byte, pkt *stack.PacketBuffer) {
	views, skip := pkt.AsViewList()
	for v := views.Front(); v != nil && len(dst) > 0; v = v.Next() {
		b := v.AsSlice()
		if skip >= len(b) {
			skip -= len(b)
			continue
		}
		dst = dst[copy(dst, b[skip:]):]
		skip = 0
	}
}

// Write implements tun.Device. It delivers each bufs[i][offset:], an IPv4 or
// IPv6 packet, to the stack and returns (len(bufs), nil). Empty packets are
// skipped; packets that are not IPv4 or IPv6 or are shorter than the fixed IP
// header are dropped and counted in Stats.DroppedMalformed, as are packets
// gVisor rejects. Write copies what it keeps and never retains bufs. After
// Close it returns (0, os.ErrClosed).
func (s *Stack) Write(bufs [][]byte, offset int) (int, error) {
	if offset < 0 {
		return 0, errNegativeOffset
	}
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return 0, os.ErrClosed
	}
	d := s.link.networkDispatcher()
	if d == nil {
		return 0, os.ErrClosed
	}
	n, bytes, malformed, merged := 0, 0, 0, 0
	for start := 0; start < len(bufs); start += batchSize {
		// One coalescer per batchSize packets: its links are int16
		// indices in a fixed array.
		c := coalescer{s: s, d: d, bufs: bufs[start:min(start+batchSize, len(bufs))], offset: offset}
		for i, b := range c.bufs {
			if offset >= len(b) {
				continue
			}
			p := b[offset:]
			proto, ok := ipProtocol(p)
			if !ok {
				malformed++
				continue
			}
			n++
			bytes += len(p)
			if s.gro && c.add(i) {
				continue
			}
			// Not a segment that merges: the runs it may belong to go
			// first, to keep each flow's order.
			c.flush()
			s.deliverBuffer(d, proto, buffer.MakeWithData(p))
		}
		c.flush()
		merged += c.merged
	}
	s.stats.packetsIn.Add(uint64(n))
	s.stats.bytesIn.Add(uint64(bytes))
	if malformed > 0 {
		s.stats.droppedMalformed.Add(uint64(malformed))
	}
	if merged > 0 {
		s.stats.coalescedIn.Add(uint64(merged))
	}
	return len(bufs), nil
}

// deliverBuffer hands the IP packet in buf to the stack, which takes the
// buffer over. MakeWithData and NewViewWithData copy into pooled chunks;
// the PacketBuffer comes from gVisor's pool too.
func (s *Stack) deliverBuffer(d stack.NetworkDispatcher, proto tcpip.NetworkProtocolNumber, buf buffer.Buffer) {
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buf})
	d.DeliverNetworkPacket(proto, pkt)
	pkt.DecRef()
}

// ipProtocol returns the network protocol of packet p from its version
// nibble, and false if p cannot be an IP packet: an unknown version or fewer
// bytes than the fixed header. Everything past that gVisor validates.
func ipProtocol(p []byte) (tcpip.NetworkProtocolNumber, bool) {
	switch p[0] >> 4 {
	case 4:
		return header.IPv4ProtocolNumber, len(p) >= header.IPv4MinimumSize
	case 6:
		return header.IPv6ProtocolNumber, len(p) >= header.IPv6MinimumSize
	}
	return 0, false
}

// Interrupt makes a Read that is blocked, or else the next Read, return
// (0, nil) promptly, even if packets are queued (they stay queued). Several
// Interrupts before a Read coalesce into one. Safe for concurrent use. tomoe's
// TUN wrapper uses it to get control of the read path to inject its own
// packets.
func (s *Stack) Interrupt() { s.link.out.interrupt() }

// link is the stack's only NIC: a point-to-point IP link with no link-layer
// header and no neighbours, whose far end is WireGuard. It implements
// stack.LinkEndpoint.
type link struct {
	out          *outQueue
	stats        *counters
	log          *slog.Logger
	capabilities stack.LinkEndpointCapabilities
	gso          bool
	queueLog     logEvery
	oversizeLog  logEvery

	// mu guards mtu and dispatcher.
	mu         sync.RWMutex
	mtu        uint32
	dispatcher stack.NetworkDispatcher
}

var _ stack.LinkEndpoint = (*link)(nil)

func newLink(mtu uint32, queueLen int, rxChecksumOffload, gso bool, stats *counters, log *slog.Logger) *link {
	l := &link{
		out:         newOutQueue(queueLen),
		stats:       stats,
		log:         log,
		mtu:         mtu,
		queueLog:    logEvery{interval: 10 * time.Second},
		oversizeLog: logEvery{interval: 10 * time.Second},
		gso:         gso,
	}
	if rxChecksumOffload {
		l.capabilities = stack.CapabilityRXChecksumOffload
	}
	return l
}

// networkDispatcher returns where inbound packets go, or nil once the NIC is
// removed.
func (l *link) networkDispatcher() stack.NetworkDispatcher {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.dispatcher
}

// WritePackets implements stack.LinkWriter: it queues the stack's outbound
// packets for Read. Packets that do not fit are dropped and counted; it
// reports how many were queued, and an error only if none were.
func (l *link) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	n, dropped := 0, 0
	for _, pkt := range pkts.AsSlice() {
		if l.out.push(pkt) {
			n++
		} else {
			dropped++
		}
	}
	if dropped == 0 {
		return n, nil
	}
	l.stats.droppedQueueFull.Add(uint64(dropped))
	if l.queueLog.allow() {
		l.log.Warn("outbound queue full, dropping packets", "dropped", dropped, "queue", len(l.out.ring))
	}
	if n == 0 {
		return 0, &tcpip.ErrNoBufferSpace{}
	}
	return n, nil
}

// MTU implements stack.LinkEndpoint.
func (l *link) MTU() uint32 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.mtu
}

// SetMTU implements stack.LinkEndpoint.
func (l *link) SetMTU(mtu uint32) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.mtu = mtu
}

// Attach implements stack.LinkEndpoint; a nil dispatcher detaches.
func (l *link) Attach(d stack.NetworkDispatcher) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dispatcher = d
}

// IsAttached implements stack.LinkEndpoint.
func (l *link) IsAttached() bool { return l.networkDispatcher() != nil }

// Capabilities implements stack.LinkEndpoint. TX checksum offload is never
// claimed: WireGuard sends exactly what we produce, so checksums must be
// complete.
func (l *link) Capabilities() stack.LinkEndpointCapabilities { return l.capabilities }

// SupportedGSO implements stack.GSOEndpoint: gVisor's software GSO if
// tuning.gso asked for it.
func (l *link) SupportedGSO() stack.SupportedGSO {
	if l.gso {
		return stack.GVisorGSOSupported
	}
	return stack.GSONotSupported
}

// GSOMaxSize implements stack.GSOEndpoint.
func (l *link) GSOMaxSize() uint32 {
	if l.gso {
		return stack.GVisorGSOMaxSize
	}
	return 0
}

// MaxHeaderLength implements stack.LinkEndpoint: no link header.
func (*link) MaxHeaderLength() uint16 { return 0 }

// LinkAddress implements stack.LinkEndpoint: an IP link has none.
func (*link) LinkAddress() tcpip.LinkAddress { return "" }

// SetLinkAddress implements stack.LinkEndpoint; ignored.
func (*link) SetLinkAddress(tcpip.LinkAddress) {}

// Wait implements stack.LinkEndpoint; the link starts no goroutines.
func (*link) Wait() {}

// ARPHardwareType implements stack.LinkEndpoint.
func (*link) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }

// AddHeader implements stack.LinkEndpoint; there is no header to add.
func (*link) AddHeader(*stack.PacketBuffer) {}

// ParseHeader implements stack.LinkEndpoint; there is no header to parse.
func (*link) ParseHeader(*stack.PacketBuffer) bool { return true }

// Close implements stack.LinkEndpoint; called when the NIC is removed.
func (l *link) Close() { l.out.close() }

// SetOnCloseAction implements stack.LinkEndpoint; unused.
func (*link) SetOnCloseAction(func()) {}
