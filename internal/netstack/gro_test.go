package netstack

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// captureDispatcher records the packets delivered to it.
type captureDispatcher struct{ pkts [][]byte }

func (c *captureDispatcher) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	c.pkts = append(c.pkts, pkt.ToView().AsSlice())
}

func (*captureDispatcher) DeliverLinkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer) {}

// tcpSeg6 builds a TCP ACK segment from src to dst carrying payload, with
// the given sequence number, extra flags and a timestamp option.
func tcpSeg6(src, dst netip.Addr, seq uint32, flags byte, payload []byte) []byte {
	tcp := make([]byte, 32+len(payload))
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 9000)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], 777)
	tcp[12] = 8 << 4
	tcp[13] = 0x10 | flags // ACK
	binary.BigEndian.PutUint16(tcp[14:], 1000)
	copy(tcp[20:], []byte{1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6}) // NOP NOP TS
	copy(tcp[32:], payload)
	binary.BigEndian.PutUint16(tcp[16:], checksum(pseudoHeader6(src, dst, len(tcp), 6), tcp))
	return ip6(src, dst, 6, tcp)
}

// tcpSeg4 is tcpSeg6 over IPv4.
func tcpSeg4(src, dst netip.Addr, seq uint32, flags byte, payload []byte) []byte {
	p6 := tcpSeg6(netip.AddrFrom16(src.As16()), netip.AddrFrom16(dst.As16()), seq, flags, payload)
	tcp := p6[40:]
	s, d := src.As4(), dst.As4()
	ph := make([]byte, 12)
	copy(ph[0:4], s[:])
	copy(ph[4:8], d[:])
	ph[9] = 6
	binary.BigEndian.PutUint16(ph[10:], uint16(len(tcp)))
	binary.BigEndian.PutUint16(tcp[16:], 0)
	binary.BigEndian.PutUint16(tcp[16:], checksum(ph, tcp))
	pkt := make([]byte, 20, 20+len(tcp))
	pkt[0] = 0x45
	binary.BigEndian.PutUint16(pkt[2:], uint16(20+len(tcp)))
	binary.BigEndian.PutUint16(pkt[4:], uint16(seq)) // IDs differ per segment
	pkt[6] = 0x40                                    // DF
	pkt[8] = 64
	pkt[9] = 6
	copy(pkt[12:16], s[:])
	copy(pkt[16:20], d[:])
	binary.BigEndian.PutUint16(pkt[10:], checksum(pkt[:20]))
	return append(pkt, tcp...)
}

// coalesce runs one Write's worth of packets through a coalescer and
// returns what it delivered, in order.
func coalesce(t *testing.T, pkts ...[]byte) [][]byte {
	t.Helper()
	const offset = 4
	bufs := make([][]byte, len(pkts))
	for i, p := range pkts {
		bufs[i] = append(make([]byte, offset), p...)
	}
	d := &captureDispatcher{}
	c := coalescer{d: d, bufs: bufs, offset: offset}
	for i := range bufs {
		if !c.add(i) {
			c.flush()
			d.pkts = append(d.pkts, bytes.Clone(pkts[i]))
		}
	}
	c.flush()
	return d.pkts
}

func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// checkTCP6 checks an IPv6 TCP packet's lengths and checksum with the
// test's own checksum, and returns its payload.
func checkTCP6(t *testing.T, p []byte) []byte {
	t.Helper()
	if int(binary.BigEndian.Uint16(p[4:]))+40 != len(p) {
		t.Fatalf("payload length %d, packet %d bytes", binary.BigEndian.Uint16(p[4:]), len(p))
	}
	src, dst := netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
	if checksum(pseudoHeader6(src, dst, len(p)-40, 6), p[40:]) != 0 {
		t.Fatal("bad TCP checksum")
	}
	return p[40+int(p[52]>>4)*4:]
}

func TestCoalesceMergesRun6(t *testing.T) {
	// An odd segment size puts every other payload at an odd offset.
	for _, size := range []int{1000, 999} {
		a, b := payload(size, 1), payload(size, 2)
		c := payload(size/2, 3)
		got := coalesce(t,
			tcpSeg6(addrA, addrB, 100, 0, a),
			tcpSeg6(addrA, addrB, 100+uint32(size), 0, b),
			tcpSeg6(addrA, addrB, 100+2*uint32(size), 0x08, c), // PSH, short: ends the run
			tcpSeg6(addrA, addrB, 100+2*uint32(size)+uint32(len(c)), 0, a),
		)
		if len(got) != 2 {
			t.Fatalf("size %d: %d packets delivered, want 2", size, len(got))
		}
		pl := checkTCP6(t, got[0])
		if want := append(append(bytes.Clone(a), b...), c...); !bytes.Equal(pl, want) {
			t.Fatalf("size %d: merged payload differs", size)
		}
		if got[0][53]&0x08 == 0 {
			t.Errorf("size %d: merged packet lost PSH", size)
		}
		if binary.BigEndian.Uint32(got[0][44:]) != 100 {
			t.Errorf("size %d: merged sequence number %d, want 100", size, binary.BigEndian.Uint32(got[0][44:]))
		}
		if pl := checkTCP6(t, got[1]); !bytes.Equal(pl, a) {
			t.Errorf("size %d: segment after the run changed", size)
		}
	}
}

// TestCoalesceCapsRun checks a long run is cut every maxRunSegments
// segments, in order.
func TestCoalesceCapsRun(t *testing.T) {
	a := payload(1000, 1)
	var pkts [][]byte
	for i := range maxRunSegments + 3 {
		pkts = append(pkts, tcpSeg6(addrA, addrB, 100+uint32(i*len(a)), 0, a))
	}
	got := coalesce(t, pkts...)
	if len(got) != 2 {
		t.Fatalf("%d packets delivered, want 2", len(got))
	}
	if pl := checkTCP6(t, got[0]); len(pl) != maxRunSegments*len(a) {
		t.Fatalf("first packet carries %d bytes, want %d", len(pl), maxRunSegments*len(a))
	}
	if seq := binary.BigEndian.Uint32(got[1][44:]); seq != 100+uint32(maxRunSegments*len(a)) {
		t.Fatalf("second packet starts at %d", seq)
	}
}

func TestCoalesceMergesRun4(t *testing.T) {
	src, dst := netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.1.0.2")
	a, b := payload(1200, 1), payload(1200, 2)
	got := coalesce(t, tcpSeg4(src, dst, 5, 0, a), tcpSeg4(src, dst, 1205, 0, b))
	if len(got) != 1 {
		t.Fatalf("%d packets delivered, want 1", len(got))
	}
	p := got[0]
	if int(binary.BigEndian.Uint16(p[2:])) != len(p) || checksum(p[:20]) != 0 {
		t.Fatal("bad IPv4 total length or header checksum")
	}
	ph := make([]byte, 12)
	copy(ph, p[12:20])
	ph[9] = 6
	binary.BigEndian.PutUint16(ph[10:], uint16(len(p)-20))
	if checksum(ph, p[20:]) != 0 {
		t.Fatal("bad TCP checksum")
	}
	if !bytes.Equal(p[52:], append(bytes.Clone(a), b...)) {
		t.Fatal("merged payload differs")
	}
}

func TestCoalesceKeepsApart(t *testing.T) {
	a := payload(1000, 1)
	other := netip.MustParseAddr("fc22::3")
	bad := tcpSeg6(addrA, addrB, 1100, 0, a)
	bad[len(bad)-1] ^= 0xff // corrupt payload: bad checksum
	ackDiffers := tcpSeg6(addrA, addrB, 2100, 0, a)
	binary.BigEndian.PutUint32(ackDiffers[48:], 778)
	binary.BigEndian.PutUint16(ackDiffers[56:], 0)
	binary.BigEndian.PutUint16(ackDiffers[56:], checksum(pseudoHeader6(addrA, addrB, len(ackDiffers)-40, 6), ackDiffers[40:]))
	for name, pkts := range map[string][][]byte{
		"gap":        {tcpSeg6(addrA, addrB, 100, 0, a), tcpSeg6(addrA, addrB, 5000, 0, a)},
		"bigger":     {tcpSeg6(addrA, addrB, 100, 0, a[:500]), tcpSeg6(addrA, addrB, 600, 0, a)},
		"after psh":  {tcpSeg6(addrA, addrB, 100, 0x08, a), tcpSeg6(addrA, addrB, 1100, 0, a)},
		"fin":        {tcpSeg6(addrA, addrB, 100, 0, a), tcpSeg6(addrA, addrB, 1100, 0x01, a)},
		"bad sum":    {tcpSeg6(addrA, addrB, 100, 0, a), bad},
		"other host": {tcpSeg6(addrA, addrB, 100, 0, a), tcpSeg6(other, addrB, 1100, 0, a)},
		"ack":        {tcpSeg6(addrA, addrB, 1100, 0, a), ackDiffers},
	} {
		got := coalesce(t, pkts...)
		if len(got) != len(pkts) {
			t.Errorf("%s: %d packets delivered, want %d", name, len(got), len(pkts))
			continue
		}
		for i := range got {
			if !bytes.Equal(got[i], pkts[i]) {
				t.Errorf("%s: packet %d changed or reordered", name, i)
			}
		}
	}
}

// TestCoalesceKeepsFlowOrder interleaves two flows and a packet that does
// not merge: each flow's bytes must arrive in order.
func TestCoalesceKeepsFlowOrder(t *testing.T) {
	a := payload(1000, 1)
	other := netip.MustParseAddr("fc22::3")
	got := coalesce(t,
		tcpSeg6(addrA, addrB, 100, 0, a),
		tcpSeg6(other, addrB, 100, 0, a),
		tcpSeg6(addrA, addrB, 1100, 0, a),
		udp6(addrA, addrB, 1, 2, a),
		tcpSeg6(addrA, addrB, 2100, 0, a),
		tcpSeg6(other, addrB, 1100, 0, a),
	)
	// addrA: [100, 1100] then 2100; other: 100 then 1100; the UDP
	// datagram flushes both runs.
	if len(got) != 5 {
		t.Fatalf("%d packets delivered, want 5", len(got))
	}
	next := map[byte]uint32{}
	for _, p := range got {
		if p[6] != 6 {
			continue
		}
		pl := checkTCP6(t, p)
		seq := binary.BigEndian.Uint32(p[44:])
		if n, ok := next[p[23]]; ok && seq != n {
			t.Fatalf("flow %x: sequence %d, want %d", p[23], seq, n)
		}
		next[p[23]] = seq + uint32(len(pl))
	}
}

// FuzzCoalesce cuts arbitrary bytes into the packets of one Write (each
// cut's length is the byte before it) and runs them through the
// coalescer, as a buggy or compromised peer could through WireGuard. Nothing
// may panic, every packet must come out (merged or as it came), and a
// packet the coalescer built must be a well-formed TCP segment with a valid
// checksum.
func FuzzCoalesce(f *testing.F) {
	a := payload(300, 1)
	seg := func(seq uint32, flags byte, p []byte) []byte { return tcpSeg6(addrA, addrB, seq, flags, p) }
	join := func(pkts ...[]byte) []byte {
		var b []byte
		for _, p := range pkts {
			b = append(b, byte(len(p)>>8), byte(len(p)))
			b = append(b, p...)
		}
		return b
	}
	src4, dst4 := netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.1.0.2")
	f.Add(join(seg(1, 0, a), seg(301, 0, a), seg(601, 0x08, a[:7])))
	f.Add(join(seg(1, 0, a[:7]), seg(8, 0, a[:7]), seg(15, 0, a[:7])))
	f.Add(join(tcpSeg4(src4, dst4, 1, 0, a), tcpSeg4(src4, dst4, 301, 0, a)))
	f.Add(join(seg(1, 0, a), udp6(addrA, addrB, 1, 2, a), seg(301, 0, a)))
	f.Add([]byte{0, 1, 0x60})
	f.Fuzz(func(t *testing.T, data []byte) {
		var pkts [][]byte
		for len(data) >= 2 && len(pkts) < 2*batchSize {
			n := int(data[0])<<8 | int(data[1])
			data = data[2:]
			n = min(n, len(data))
			if n > 0 {
				pkts = append(pkts, data[:n])
			}
			data = data[n:]
		}
		if len(pkts) > batchSize {
			pkts = pkts[:batchSize]
		}
		in := map[string]int{}
		for _, p := range pkts {
			in[string(p)]++
		}
		got := coalesce(t, pkts...)
		if len(got) > len(pkts) {
			t.Fatalf("%d packets out of %d", len(got), len(pkts))
		}
		for _, p := range got {
			if in[string(p)] > 0 {
				in[string(p)]--
				continue
			}
			checkMerged(t, p)
		}
	})
}

// checkMerged checks a packet the coalescer built: IP lengths that match
// the packet and a valid TCP checksum.
func checkMerged(t *testing.T, p []byte) {
	t.Helper()
	switch p[0] >> 4 {
	case 6:
		checkTCP6(t, p)
	case 4:
		if int(binary.BigEndian.Uint16(p[2:])) != len(p) || checksum(p[:20]) != 0 {
			t.Fatal("merged IPv4 packet: bad total length or header checksum")
		}
		ph := make([]byte, 12)
		copy(ph, p[12:20])
		ph[9] = 6
		binary.BigEndian.PutUint16(ph[10:], uint16(len(p)-20))
		if checksum(ph, p[20:]) != 0 {
			t.Fatal("merged IPv4 packet: bad TCP checksum")
		}
	default:
		t.Fatalf("merged packet of IP version %d", p[0]>>4)
	}
}
