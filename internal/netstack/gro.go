package netstack

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	xsum "gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// This file is the inbound half of segmentation offload: receive coalescing
// (GRO) of the TCP segments one Write hands the stack. A bulk TCP flow
// arrives as runs of MSS-sized segments in sequence; gVisor's cost is per
// packet (IP parsing, demultiplexing, a segment and an ACK decision each), so
// Write merges each run into one packet of up to 64 KiB, as Linux's GRO does,
// and the stack handles one packet where it would have handled dozens.
//
// gVisor has a GRO engine of its own (pkg/tcpip/stack/gro), but in the
// pinned version it does not update the IPv6 payload length of a merged
// packet, so the IPv6 layer would trim it back to the first segment: the
// overlay is IPv6, so it cannot be used.
//
// Only plain segments merge: IPv4 without options or fragmentation, IPv6
// whose next header is TCP, ACK set and none of SYN, FIN, RST, URG and CWR,
// a payload, IP lengths that match the packet exactly, valid checksums. A
// segment joins the run of its connection when its sequence number follows the run,
// its ACK number, window, flags (but PSH), TCP options and IP header fields
// (but length, ID and checksum) equal the first segment's, and its payload is
// no larger than the first one's; a smaller payload or PSH ends the run.
// Everything else is delivered as it came, after the runs it might belong
// to, so each flow's order is kept.

// maxGROFlows is how many flows one Write merges at once; a segment of
// another flow when all are taken delivers the runs so far first.
const maxGROFlows = 8

// groFlow is a run of segments of one flow being merged. Its segments are
// bufs[first], bufs[next[first]], ... up to bufs[last].
type groFlow struct {
	first, last int
	hdrLen      int    // IP and TCP headers, the same in every segment
	segSize     int    // payload of the first segment
	size        int    // payload bytes in the run
	count       int    // segments in the run
	nextSeq     uint32 // sequence number the next segment must have
	sum         uint16 // ones' complement sum of the payloads at their merged offsets
	psh         bool
	closed      bool // a short segment or PSH ended the run
}

// groSegment is what parseSegment learns about one TCP segment.
type groSegment struct {
	v6      bool
	ipLen   int // IP header length
	hdrLen  int // IP and TCP header length
	seq     uint32
	psh     bool
	payload int
	sum     uint16 // ones' complement sum of the payload
}

// parseSegment reports whether p is a TCP segment that may merge, and
// what merging needs to know about it.
func parseSegment(p []byte) (groSegment, bool) {
	var s groSegment
	var src, dst tcpip.Address
	if len(p) == 0 {
		return s, false
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) < header.IPv4MinimumSize+header.TCPMinimumSize {
			return s, false
		}
		ip := header.IPv4(p)
		if ip.HeaderLength() != header.IPv4MinimumSize || int(ip.TotalLength()) != len(p) ||
			ip.Protocol() != uint8(header.TCPProtocolNumber) ||
			ip.More() || ip.FragmentOffset() != 0 || !ip.IsChecksumValid() {
			return s, false
		}
		s.ipLen = header.IPv4MinimumSize
		src, dst = tcpip.AddrFrom4Slice(p[12:16]), tcpip.AddrFrom4Slice(p[16:20])
	case 6:
		if len(p) < header.IPv6MinimumSize+header.TCPMinimumSize {
			return s, false
		}
		ip := header.IPv6(p)
		if ip.NextHeader() != uint8(header.TCPProtocolNumber) || int(ip.PayloadLength())+header.IPv6MinimumSize != len(p) {
			return s, false
		}
		s.v6 = true
		s.ipLen = header.IPv6MinimumSize
		src, dst = tcpip.AddrFrom16Slice(p[8:24]), tcpip.AddrFrom16Slice(p[24:40])
	default:
		return s, false
	}
	tcp := header.TCP(p[s.ipLen:])
	off := int(tcp.DataOffset())
	if off < header.TCPMinimumSize || s.ipLen+off >= len(p) {
		return s, false // malformed, or no payload
	}
	flags := tcp.Flags()
	if flags&header.TCPFlagAck == 0 || flags&(header.TCPFlagSyn|header.TCPFlagFin|header.TCPFlagRst|header.TCPFlagUrg|header.TCPFlagCwr) != 0 {
		return s, false
	}
	s.hdrLen = s.ipLen + off
	s.payload = len(p) - s.hdrLen
	s.sum = xsum.Checksum(p[s.hdrLen:], 0)
	if !tcp.IsChecksumValid(src, dst, s.sum, uint16(s.payload)) {
		return s, false // gVisor counts and drops it
	}
	s.seq = tcp.SequenceNumber()
	s.psh = flags&header.TCPFlagPsh != 0
	return s, true
}

// sameTuple reports whether segments p and q, of one IP version, belong to
// one TCP connection: the same addresses and ports.
func sameTuple(p, q []byte, s groSegment) bool {
	if s.v6 {
		if string(p[8:40]) != string(q[8:40]) {
			return false
		}
	} else if string(p[12:20]) != string(q[12:20]) {
		return false
	}
	return string(p[s.ipLen:s.ipLen+4]) == string(q[s.ipLen:s.ipLen+4])
}

// sameHeaders reports whether segment q may follow a run that starts with
// p, of the same connection and header length: the same ACK number,
// window, flags but PSH and options, and IP header fields but lengths, ID
// and checksum.
func sameHeaders(p, q []byte, s groSegment) bool {
	if s.v6 {
		// Version, traffic class, flow label; next header, hop limit.
		if string(p[0:4]) != string(q[0:4]) || string(p[6:8]) != string(q[6:8]) {
			return false
		}
	} else if p[1] != q[1] || p[6]&0xe0 != q[6]&0xe0 || string(p[8:10]) != string(q[8:10]) {
		// TOS; flags (DF); TTL, protocol.
		return false
	}
	pt, qt := p[s.ipLen:s.hdrLen], q[s.ipLen:s.hdrLen]
	// ACK number (8:12); data offset (12); window (14:16); options (20:).
	return string(pt[8:13]) == string(qt[8:13]) &&
		pt[13]&^byte(header.TCPFlagPsh) == qt[13]&^byte(header.TCPFlagPsh) &&
		string(pt[14:16]) == string(qt[14:16]) && string(pt[20:]) == string(qt[20:])
}

// maxRunSegments is the most segments one merged packet carries. Without
// a cap a run grows to 64 KiB, and after a loss the receiver then sends one
// duplicate ACK where it would have sent dozens: the sender, which detects
// loss by counting them (RACK is off, see tuning.go), recovers late.
// Measured (BenchmarkTCPThroughput, rtt2ms-loss0.2%, MB/s): no cap 4.2-5.6,
// 16 segments 4.3-8.1, 8 segments 6.6-10.1, no coalescing 9.0-10.8; CPU
// per byte on the lossless wire (cpu-ns/B): no cap 4.0-5.0, 16 4.2-4.8,
// 8 5.1-6.0, no coalescing 6.4-7.3.
const maxRunSegments = 8

// maxMerged bounds a merged packet's IP payload (IPv6) or total length
// (IPv4): both fields are 16 bits.
const maxMerged = 65535

// coalescer merges the TCP segments of one Write; it lives on Write's
// stack.
type coalescer struct {
	s      *Stack
	d      stack.NetworkDispatcher
	bufs   [][]byte
	offset int
	merged int // segments delivered inside merged packets
	flows  [maxGROFlows]groFlow
	nflows int
	next   [batchSize]int16 // next[i]: the segment after bufs[i] in its run
}

// add offers bufs[i], an IP packet, for merging. It reports false if the
// packet cannot merge; the caller then delivers it after flush.
func (c *coalescer) add(i int) bool {
	p := c.bufs[i][c.offset:]
	seg, ok := parseSegment(p)
	if !ok {
		return false
	}
	for k := range c.nflows {
		f := &c.flows[k]
		first := c.bufs[f.first][c.offset:]
		if first[0]>>4 != p[0]>>4 || !sameTuple(first, p, seg) {
			continue
		}
		merged := f.hdrLen + f.size + seg.payload // IPv4 total length
		if seg.v6 {
			merged -= header.IPv6MinimumSize // IPv6 payload length
		}
		if !f.closed && seg.seq == f.nextSeq && seg.payload <= f.segSize && merged <= maxMerged && f.count < maxRunSegments &&
			f.hdrLen == seg.hdrLen && sameHeaders(first, p, seg) {
			c.next[f.last] = int16(i)
			c.next[i] = -1
			f.last = i
			sum := seg.sum
			if f.size%2 == 1 {
				sum = sum<<8 | sum>>8
			}
			f.sum = xsum.Combine(f.sum, sum)
			f.size += seg.payload
			f.count++
			f.nextSeq += uint32(seg.payload)
			f.psh = f.psh || seg.psh
			f.closed = seg.payload < f.segSize || seg.psh
			return true
		}
		// The connection's run cannot take this segment: the run goes
		// first, and the segment starts the next one.
		c.deliver(f)
		c.start(f, i, seg)
		return true
	}
	if c.nflows == len(c.flows) {
		c.flush()
	}
	c.start(&c.flows[c.nflows], i, seg)
	c.nflows++
	return true
}

// start makes f a run of segment i alone.
func (c *coalescer) start(f *groFlow, i int, seg groSegment) {
	*f = groFlow{
		first: i, last: i,
		hdrLen:  seg.hdrLen,
		segSize: seg.payload,
		size:    seg.payload,
		count:   1,
		nextSeq: seg.seq + uint32(seg.payload),
		sum:     seg.sum,
		psh:     seg.psh,
		closed:  seg.psh,
	}
	c.next[i] = -1
}

// flush delivers every run.
func (c *coalescer) flush() {
	for k := range c.nflows {
		c.deliver(&c.flows[k])
	}
	c.nflows = 0
}

// deliver hands f's run to the stack as one packet.
func (c *coalescer) deliver(f *groFlow) {
	first := c.bufs[f.first][c.offset:]
	if f.count == 1 {
		proto, _ := ipProtocol(first)
		c.s.deliverBuffer(c.d, proto, buffer.MakeWithData(first))
		return
	}
	// The headers of the merged packet are the first segment's with the
	// lengths, the IPv4 header checksum, PSH and the TCP checksum updated.
	var hdr [header.IPv6MinimumSize + header.TCPHeaderMaximumSize]byte
	h := hdr[:f.hdrLen]
	copy(h, first)
	var src, dst tcpip.Address
	ipLen := header.IPv6MinimumSize
	if h[0]>>4 == 6 {
		binary.BigEndian.PutUint16(h[4:], uint16(f.hdrLen-ipLen+f.size))
		src, dst = tcpip.AddrFrom16Slice(h[8:24]), tcpip.AddrFrom16Slice(h[24:40])
	} else {
		ipLen = header.IPv4MinimumSize
		ip := header.IPv4(h)
		ip.SetTotalLength(uint16(f.hdrLen + f.size))
		ip.SetChecksum(0)
		ip.SetChecksum(^ip.CalculateChecksum())
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	}
	tcp := header.TCP(h[ipLen:])
	if f.psh {
		tcp.SetFlags(uint8(tcp.Flags() | header.TCPFlagPsh))
	}
	tcpLen := f.hdrLen - ipLen + f.size
	tcp.SetChecksum(0)
	sum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(tcpLen))
	sum = xsum.Checksum(tcp, sum)
	tcp.SetChecksum(^xsum.Combine(sum, f.sum))

	buf := buffer.MakeWithData(h)
	for i := f.first; i >= 0; i = int(c.next[i]) {
		buf.Append(buffer.NewViewWithData(c.bufs[i][c.offset+f.hdrLen:]))
	}
	proto := header.IPv4ProtocolNumber
	if ipLen == header.IPv6MinimumSize {
		proto = header.IPv6ProtocolNumber
	}
	c.s.deliverBuffer(c.d, proto, buf)
	c.merged += f.count
}
