package tunbatch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// The tests check Split's output with their own checksum code, not the
// package's (gVisor's).

func refSum(b []byte, acc uint32) uint32 {
	for len(b) >= 2 {
		acc += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	return acc
}

func fold(acc uint32) uint16 {
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint16(acc)
}

// l4Valid reports whether the TCP or UDP checksum of pkt (transport
// header at l4) is right.
func l4Valid(pkt []byte, l4 int, proto uint8) bool {
	var acc uint32
	if pkt[0]>>4 == 4 {
		acc = refSum(pkt[12:20], 0)
	} else {
		acc = refSum(pkt[8:40], 0)
	}
	acc += uint32(proto) + uint32(len(pkt)-l4)
	return fold(refSum(pkt[l4:], acc)) == 0xffff
}

func vnet(flags, gsoType uint8, hdrLen, gsoSize, csumStart, csumOffset uint16) []byte {
	b := make([]byte, HeaderLen)
	b[0], b[1] = flags, gsoType
	binary.NativeEndian.PutUint16(b[2:], hdrLen)
	binary.NativeEndian.PutUint16(b[4:], gsoSize)
	binary.NativeEndian.PutUint16(b[6:], csumStart)
	binary.NativeEndian.PutUint16(b[8:], csumOffset)
	return b
}

// superPacket builds an IP packet of the given version carrying a TCP
// (with 12 bytes of options) or UDP header and payload.
func superPacket(version int, proto uint8, payload []byte, tcpFlags uint8) (pkt []byte, l4 int) {
	var ip []byte
	if version == 4 {
		ip = make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[4:], 0xfffe) // the ID wraps
		ip[8], ip[9] = 64, proto
		copy(ip[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	} else {
		ip = make([]byte, 40)
		ip[0] = 0x60
		ip[6], ip[7] = proto, 64
		ip[8], ip[23] = 0xfd, 1
		ip[24], ip[39] = 0xfd, 2
	}
	l4 = len(ip)
	var th []byte
	if proto == protoTCP {
		th = make([]byte, 32)
		binary.BigEndian.PutUint16(th[0:], 40000)
		binary.BigEndian.PutUint16(th[2:], 5201)
		binary.BigEndian.PutUint32(th[4:], 0xfffff000) // the sequence wraps
		binary.BigEndian.PutUint32(th[8:], 77)
		th[12] = 8 << 4
		th[13] = tcpFlags | 0x10
		binary.BigEndian.PutUint16(th[14:], 512)
		th[20], th[21], th[22] = 1, 1, 8 // NOP NOP timestamps
	} else {
		th = make([]byte, 8)
		binary.BigEndian.PutUint16(th[0:], 40000)
		binary.BigEndian.PutUint16(th[2:], 4789)
	}
	pkt = append(append(ip, th...), payload...)
	return pkt, l4
}

func batch(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	return bufs, make([]int, n)
}

func TestSplitGSO(t *testing.T) {
	payload := make([]byte, 10_001) // odd, so the last piece is odd too
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	const mss, offset = 1000, 16
	for _, c := range []struct {
		name    string
		version int
		proto   uint8
		gso     uint8
	}{
		{"tcp4", 4, protoTCP, gsoTCPv4},
		{"tcp6", 6, protoTCP, gsoTCPv6},
		{"udp4", 4, protoUDP, gsoUDPL4},
		{"udp6", 6, protoUDP, gsoUDPL4},
	} {
		t.Run(c.name, func(t *testing.T) {
			const fin, psh, cwr = 0x01, 0x08, 0x80
			pkt, l4 := superPacket(c.version, c.proto, payload, fin|psh|cwr)
			// hdrLen as the kernel may give it on the forwarding path (the
			// whole first packet): Split must not use it.
			frame := append(vnet(flagNeedsCsum, c.gso, 1500, mss, uint16(l4), 16), pkt...)
			bufs, sizes := batch(20, 2000)
			n, err := Split(frame, bufs, sizes, offset)
			if err != nil || n != 11 {
				t.Fatalf("Split: %d packets, %v; want 11", n, err)
			}
			hdr := l4 + 8
			if c.proto == protoTCP {
				hdr = l4 + 32
			}
			var got []byte
			for i := range n {
				p := bufs[i][offset : offset+sizes[i]]
				want := min(mss, len(payload)-i*mss)
				if len(p) != hdr+want {
					t.Fatalf("piece %d: %d bytes, want %d", i, len(p), hdr+want)
				}
				if c.version == 4 {
					if int(binary.BigEndian.Uint16(p[2:])) != len(p) || fold(refSum(p[:20], 0)) != 0xffff {
						t.Errorf("piece %d: IPv4 length %d or header checksum wrong", i, binary.BigEndian.Uint16(p[2:]))
					}
					if id := binary.BigEndian.Uint16(p[4:]); id != uint16(0xfffe+i) {
						t.Errorf("piece %d: IPv4 ID %#x", i, id)
					}
				} else if int(binary.BigEndian.Uint16(p[4:])) != len(p)-40 {
					t.Errorf("piece %d: IPv6 payload length %d", i, binary.BigEndian.Uint16(p[4:]))
				}
				if !l4Valid(p, l4, c.proto) {
					t.Errorf("piece %d: bad %d checksum", i, c.proto)
				}
				if c.proto == protoTCP {
					if seq := binary.BigEndian.Uint32(p[l4+4:]); seq != 0xfffff000+uint32(i*mss) {
						t.Errorf("piece %d: seq %#x", i, seq)
					}
					flags := p[l4+13]
					if (flags&(fin|psh) != 0) != (i == n-1) || (flags&cwr != 0) != (i == 0) || flags&0x10 == 0 {
						t.Errorf("piece %d: flags %#x", i, flags)
					}
				} else if int(binary.BigEndian.Uint16(p[l4+4:])) != len(p)-l4 {
					t.Errorf("piece %d: UDP length %d", i, binary.BigEndian.Uint16(p[l4+4:]))
				}
				if c.proto == protoTCP {
					// Acknowledgement, data offset, window, urgent pointer
					// and options are the original's.
					for _, r := range [][2]int{{8, 13}, {14, 16}, {18, 32}} {
						if !bytes.Equal(p[l4+r[0]:l4+r[1]], pkt[l4+r[0]:l4+r[1]]) {
							t.Errorf("piece %d: TCP header bytes %d..%d changed", i, r[0], r[1])
						}
					}
				}
				got = append(got, p[hdr:]...)
			}
			if !bytes.Equal(got, payload) {
				t.Fatal("the pieces' payloads do not add up to the original")
			}
			// One buffer fewer, or buffers one byte too small: no room.
			if _, err := Split(frame, bufs[:10], sizes, offset); !errors.Is(err, ErrNoRoom) {
				t.Errorf("10 buffers for 11 pieces: %v", err)
			}
			small, ss := batch(20, offset+hdr+mss-1)
			if _, err := Split(frame, small, ss, offset); !errors.Is(err, ErrNoRoom) {
				t.Errorf("buffers a byte short: %v", err)
			}
		})
	}
}

func TestSplitSingle(t *testing.T) {
	pkt, l4 := superPacket(6, protoUDP, []byte("hello, world!"), 0)
	// The kernel leaves the pseudo-header sum in the field.
	var acc uint32 = refSum(pkt[8:40], 0) + protoUDP + uint32(len(pkt)-l4)
	binary.BigEndian.PutUint16(pkt[l4+4:], uint16(len(pkt)-l4))
	binary.BigEndian.PutUint16(pkt[l4+6:], fold(acc))
	bufs, sizes := batch(2, 100)
	n, err := Split(append(vnet(flagNeedsCsum, gsoNone, 0, 0, uint16(l4), 6), pkt...), bufs, sizes, 4)
	if err != nil || n != 1 || sizes[0] != len(pkt) {
		t.Fatalf("Split: %d, %v, size %d", n, err, sizes[0])
	}
	if !l4Valid(bufs[0][4:4+sizes[0]], l4, protoUDP) {
		t.Error("checksum not filled in")
	}
	// Without NEEDS_CSUM the packet is copied as it is.
	n, err = Split(append(vnet(0, gsoNone, 0, 0, 0, 0), pkt...), bufs, sizes, 0)
	if err != nil || n != 1 || !bytes.Equal(bufs[0][:sizes[0]], pkt) {
		t.Fatalf("plain packet: %d, %v", n, err)
	}
	if _, err := Split(append(vnet(0, gsoNone, 0, 0, 0, 0), pkt...), bufs, sizes, 100-len(pkt)+1); !errors.Is(err, ErrNoRoom) {
		t.Errorf("a packet a byte too long for the buffer: %v", err)
	}
}

func TestSplitRefuses(t *testing.T) {
	tcp4, _ := superPacket(4, protoTCP, make([]byte, 3000), 0)
	udp6, _ := superPacket(6, protoUDP, make([]byte, 3000), 0)
	for _, c := range []struct {
		name  string
		frame []byte
	}{
		{"short header", []byte{0, 0, 0}},
		{"no packet", vnet(0, gsoNone, 0, 0, 0, 0)},
		{"checksum past the end", append(vnet(flagNeedsCsum, gsoNone, 0, 0, 40, 3000+8), udp6...)},
		{"checksum start past the end", append(vnet(flagNeedsCsum, gsoNone, 0, 0, 60000, 6), udp6...)},
		{"TCPv4 GSO on IPv6", append(vnet(flagNeedsCsum, gsoTCPv4, 0, 1000, 40, 16), udp6...)},
		{"ECN GSO", append(vnet(flagNeedsCsum, gsoTCPv4|0x80, 0, 1000, 20, 16), tcp4...)},
		{"IPv4 transport not after the header", append(vnet(flagNeedsCsum, gsoTCPv4, 0, 1000, 24, 16), tcp4...)},
		{"IPv6 transport inside the header", append(vnet(flagNeedsCsum, gsoUDPL4, 0, 1000, 20, 6), udp6...)},
		{"segment size 0", append(vnet(flagNeedsCsum, gsoTCPv4, 0, 0, 20, 16), tcp4...)},
		{"cut TCP header", append(vnet(flagNeedsCsum, gsoTCPv4, 0, 1000, 20, 16), tcp4[:30]...)},
		{"no payload", append(vnet(flagNeedsCsum, gsoTCPv4, 0, 1000, 20, 16), tcp4[:52]...)},
	} {
		bufs, sizes := batch(8, 2000)
		if n, err := Split(c.frame, bufs, sizes, 16); err == nil || errors.Is(err, ErrNoRoom) {
			t.Errorf("%s: %d packets, %v; want a parse error", c.name, n, err)
		}
	}
}

func FuzzSplit(f *testing.F) {
	tcp4, _ := superPacket(4, protoTCP, make([]byte, 3000), 0x08)
	tcp6, _ := superPacket(6, protoTCP, make([]byte, 2500), 0)
	udp6, _ := superPacket(6, protoUDP, make([]byte, 1000), 0)
	f.Add(append(vnet(flagNeedsCsum, gsoTCPv4, 0, 1000, 20, 16), tcp4...), 16)
	f.Add(append(vnet(flagNeedsCsum, gsoTCPv6, 0, 1200, 40, 16), tcp6...), 0)
	f.Add(append(vnet(flagNeedsCsum, gsoUDPL4, 0, 300, 40, 6), udp6...), 10)
	f.Add(append(vnet(flagNeedsCsum, gsoNone, 0, 0, 40, 6), udp6...), 16)
	f.Fuzz(func(t *testing.T, frame []byte, offset int) {
		offset %= 64
		bufs, sizes := batch(8, 1400)
		n, err := Split(frame, bufs, sizes, offset)
		if err != nil {
			if n != 0 {
				t.Fatalf("error %v with %d packets", err, n)
			}
			return
		}
		if n < 1 || n > len(bufs) {
			t.Fatalf("%d packets", n)
		}
		total := 0
		for i := range n {
			if sizes[i] <= 0 || offset+sizes[i] > len(bufs[i]) {
				t.Fatalf("piece %d: size %d", i, sizes[i])
			}
			total += sizes[i]
		}
		if n == 1 && total != len(frame)-HeaderLen {
			t.Fatalf("one packet of %d bytes from a %d-byte frame", total, len(frame))
		}
	})
}

// A single UDP packet whose checksum the kernel left to the device
// (NEEDS_CSUM) and whose sum comes out as 0 must carry 0xffff, as the
// kernel's own skb_checksum_help writes it (CSUM_MANGLED_0): a zero UDP
// checksum means "none", which an IPv6 receiver drops (RFC 8200 8.1).
func TestSplitSingleUDPZeroChecksum(t *testing.T) {
	for _, version := range []int{4, 6} {
		pkt, l4 := superPacket(version, protoUDP, make([]byte, 14), 0)
		binary.BigEndian.PutUint16(pkt[l4+4:], uint16(len(pkt)-l4))
		pseudo := func() uint16 {
			var acc uint32
			if version == 4 {
				acc = refSum(pkt[12:20], 0)
			} else {
				acc = refSum(pkt[8:40], 0)
			}
			return fold(acc + protoUDP + uint32(len(pkt)-l4))
		}
		// Choose the last two payload bytes so that the full sum is 0xffff,
		// that is, the checksum is 0.
		binary.BigEndian.PutUint16(pkt[l4+6:], 0)
		binary.BigEndian.PutUint16(pkt[len(pkt)-2:], 0)
		rest := fold(refSum(pkt[l4:], uint32(pseudo())))
		binary.BigEndian.PutUint16(pkt[len(pkt)-2:], ^rest)
		binary.BigEndian.PutUint16(pkt[l4+6:], pseudo())

		bufs, sizes := batch(1, 200)
		n, err := Split(append(vnet(flagNeedsCsum, gsoNone, 0, 0, uint16(l4), 6), pkt...), bufs, sizes, 0)
		if err != nil || n != 1 {
			t.Fatalf("IPv%d: Split: %d, %v", version, n, err)
		}
		p := bufs[0][:sizes[0]]
		if c := binary.BigEndian.Uint16(p[l4+6:]); c != 0xffff || !l4Valid(p, l4, protoUDP) {
			t.Errorf("IPv%d: UDP checksum %#04x, want 0xffff", version, c)
		}
	}
}
