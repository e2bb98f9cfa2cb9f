package netstack

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// FuzzWrite feeds arbitrary bytes to Write, as a compromised or buggy peer
// could through WireGuard, then drains whatever the stack answers through the
// Read copy path. It checks that nothing panics and Write keeps its contract.
func FuzzWrite(f *testing.F) {
	v6 := echoRequest6(addrB, addrA, 1, 1, []byte("seed"))
	v4 := echoRequest4(addrB4, addrA4, 1, 1, []byte("seed"))
	f.Add(v6)
	f.Add(v4)
	f.Add(v6[:41])
	f.Add(v4[:21])
	f.Add([]byte{})
	f.Add([]byte{0x60})
	f.Add(tcpSYN6(addrB, addrA, 40000, 80))
	f.Add(tcpSYN6(addrB, addrA, 40000, 80)[:50])
	f.Add(udp6(addrB, addrA, 5353, 53, []byte("query")))
	withFrag := append([]byte(nil), v6...)
	withFrag[6] = 44
	f.Add(withFrag)

	s, err := New(Config{Addresses: []netip.Addr{addrA, addrA4}, MTU: testMTU})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	// Something listening, so fuzzed TCP and UDP reach endpoint code too.
	l, err := s.ListenTCP(netip.MustParseAddrPort("[::]:80"))
	if err != nil {
		f.Fatal(err)
	}
	defer l.Close()
	pc, err := s.ListenUDP(netip.MustParseAddrPort("[::]:53"))
	if err != nil {
		f.Fatal(err)
	}
	defer pc.Close()

	bufs := make([][]byte, batchSize)
	sizes := make([]int, batchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 8+testMTU)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		prefixed := append(make([]byte, 8), data...)
		if n, err := s.Write([][]byte{data, prefixed, nil}, 0); n != 3 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		if n, err := s.Write([][]byte{prefixed}, 8); n != 1 || err != nil {
			t.Fatalf("Write with offset = %d, %v", n, err)
		}
		drain(s, bufs, sizes)
	})
}

// drain copies out everything queued on s without blocking.
func drain(s *Stack, bufs [][]byte, sizes []int) {
	var batch [batchSize]*stack.PacketBuffer
	for {
		q := s.link.out
		q.mu.Lock()
		n := 0
		for q.count > 0 && n < len(batch) {
			batch[n] = q.ring[q.head]
			q.ring[q.head] = nil
			q.head = (q.head + 1) % len(q.ring)
			q.count--
			n++
		}
		q.mu.Unlock()
		if n == 0 {
			return
		}
		s.copyOut(batch[:n], bufs, sizes, 8)
	}
}

// tcpSYN6 builds a TCP SYN from src to dst with a correct checksum.
func tcpSYN6(src, dst netip.Addr, sport, dport uint16) []byte {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], 12345)
	tcp[12] = 5 << 4
	tcp[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	binary.BigEndian.PutUint16(tcp[16:], checksum(pseudoHeader6(src, dst, len(tcp), 6), tcp))
	return ip6(src, dst, 6, tcp)
}

// udp6 builds a UDP datagram from src to dst with a correct checksum.
func udp6(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	binary.BigEndian.PutUint16(udp[6:], checksum(pseudoHeader6(src, dst, len(udp), 17), udp))
	return ip6(src, dst, 17, udp)
}

func ip6(src, dst netip.Addr, next byte, payload []byte) []byte {
	pkt := make([]byte, 40, 40+len(payload))
	pkt[0] = 0x60
	binary.BigEndian.PutUint16(pkt[4:], uint16(len(payload)))
	pkt[6] = next
	pkt[7] = 64
	s, d := src.As16(), dst.As16()
	copy(pkt[8:24], s[:])
	copy(pkt[24:40], d[:])
	return append(pkt, payload...)
}
