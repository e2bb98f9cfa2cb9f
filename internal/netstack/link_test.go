package netstack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// checksum is the Internet checksum (RFC 1071) of the concatenated parts,
// written here independently of gVisor so the tests check its output.
func checksum(parts ...[]byte) uint16 {
	var sum uint32
	var odd []byte
	for _, p := range parts {
		b := append(odd, p...)
		for len(b) >= 2 {
			sum += uint32(binary.BigEndian.Uint16(b))
			b = b[2:]
		}
		odd = b
	}
	if len(odd) == 1 {
		sum += uint32(odd[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// pseudoHeader6 is the IPv6 pseudo-header for upper-layer checksums.
func pseudoHeader6(src, dst netip.Addr, length int, next byte) []byte {
	ph := make([]byte, 40)
	s, d := src.As16(), dst.As16()
	copy(ph[0:16], s[:])
	copy(ph[16:32], d[:])
	binary.BigEndian.PutUint32(ph[32:36], uint32(length))
	ph[39] = next
	return ph
}

// echoRequest6 builds an ICMPv6 echo request from src to dst.
func echoRequest6(src, dst netip.Addr, id, seq uint16, data []byte) []byte {
	icmp := make([]byte, 8+len(data))
	icmp[0] = 128 // echo request
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	copy(icmp[8:], data)
	binary.BigEndian.PutUint16(icmp[2:], checksum(pseudoHeader6(src, dst, len(icmp), 58), icmp))

	return ip6(src, dst, 58, icmp)
}

// echoRequest4 builds an ICMPv4 echo request from src to dst.
func echoRequest4(src, dst netip.Addr, id, seq uint16, data []byte) []byte {
	icmp := make([]byte, 8+len(data))
	icmp[0] = 8 // echo request
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	copy(icmp[8:], data)
	binary.BigEndian.PutUint16(icmp[2:], checksum(icmp))

	pkt := make([]byte, 20, 20+len(icmp))
	pkt[0] = 0x45
	binary.BigEndian.PutUint16(pkt[2:], uint16(20+len(icmp)))
	binary.BigEndian.PutUint16(pkt[4:], id)
	pkt[8] = 64 // TTL
	pkt[9] = 1  // protocol: ICMP
	s, d := src.As4(), dst.As4()
	copy(pkt[12:16], s[:])
	copy(pkt[16:20], d[:])
	binary.BigEndian.PutUint16(pkt[10:], checksum(pkt[:20]))
	return append(pkt, icmp...)
}

// readMatching Reads from s until match accepts a packet or timeout passes.
func readMatching(t *testing.T, s *Stack, timeout time.Duration, match func([]byte) bool) []byte {
	t.Helper()
	var expired atomic.Bool
	timer := time.AfterFunc(timeout, func() {
		expired.Store(true)
		s.Interrupt()
	})
	defer timer.Stop()
	bufs := make([][]byte, 8)
	sizes := make([]int, len(bufs))
	for i := range bufs {
		bufs[i] = make([]byte, 4+testMTU)
	}
	for {
		n, err := s.Read(bufs, sizes, 4)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		for i := range n {
			if pkt := bufs[i][4 : 4+sizes[i]]; match(pkt) {
				return bytes.Clone(pkt)
			}
		}
		if n == 0 && expired.Load() {
			t.Fatalf("no matching packet within %v", timeout)
		}
	}
}

func TestPingOwnAddress6(t *testing.T) {
	s := newTestStack(t, defaultTuning(), addrA)
	data := []byte("tomoe ping payload")
	req := echoRequest6(addrB, addrA, 0x1234, 7, data)
	if n, err := s.Write([][]byte{append(make([]byte, 10), req...)}, 10); n != 1 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	reply := readMatching(t, s, 5*time.Second, func(p []byte) bool {
		return len(p) > 40 && p[0]>>4 == 6 && p[6] == 58 && p[40] == 129
	})
	if got := int(binary.BigEndian.Uint16(reply[4:])); got != len(reply)-40 {
		t.Errorf("payload length %d, packet has %d", got, len(reply)-40)
	}
	src, _ := netip.AddrFromSlice(reply[8:24])
	dst, _ := netip.AddrFromSlice(reply[24:40])
	if src != addrA || dst != addrB {
		t.Errorf("reply %s -> %s, want %s -> %s", src, dst, addrA, addrB)
	}
	icmp := reply[40:]
	if icmp[1] != 0 || binary.BigEndian.Uint16(icmp[4:]) != 0x1234 || binary.BigEndian.Uint16(icmp[6:]) != 7 || !bytes.Equal(icmp[8:], data) {
		t.Errorf("reply ICMPv6 %x does not echo the request", icmp)
	}
	if binary.BigEndian.Uint16(icmp[2:]) == 0 || checksum(pseudoHeader6(src, dst, len(icmp), 58), icmp) != 0 {
		t.Errorf("reply ICMPv6 checksum %#04x does not verify", binary.BigEndian.Uint16(icmp[2:]))
	}
	st := s.Stats()
	if st.PacketsIn != 1 || st.BytesIn != uint64(len(req)) || st.PacketsOut < 1 || st.BytesOut < uint64(len(reply)) {
		t.Errorf("stats %+v", st)
	}
}

func TestPingOwnAddress4(t *testing.T) {
	s := newTestStack(t, defaultTuning(), addrA, addrA4)
	data := []byte("v4 payload")
	s.Write([][]byte{echoRequest4(addrB4, addrA4, 99, 3, data)}, 0)
	reply := readMatching(t, s, 5*time.Second, func(p []byte) bool {
		return len(p) > 20 && p[0]>>4 == 4 && p[9] == 1 && p[20] == 0
	})
	if checksum(reply[:20]) != 0 {
		t.Errorf("IPv4 header checksum does not verify: %x", reply[:20])
	}
	if !bytes.Equal(reply[12:16], addrA4.AsSlice()) || !bytes.Equal(reply[16:20], addrB4.AsSlice()) {
		t.Errorf("reply addresses %x", reply[12:20])
	}
	icmp := reply[20:]
	if checksum(icmp) != 0 || binary.BigEndian.Uint16(icmp[4:]) != 99 || binary.BigEndian.Uint16(icmp[6:]) != 3 || !bytes.Equal(icmp[8:], data) {
		t.Errorf("reply ICMP %x is not a valid echo of the request", icmp)
	}
}

func TestReadBatch(t *testing.T) {
	s := newTestStack(t, defaultTuning(), addrA)
	var reqs [][]byte
	for i := range 10 {
		reqs = append(reqs, echoRequest6(addrB, addrA, 1, uint16(i), []byte("x")))
	}
	s.Write(reqs, 0)
	// Echo replies are sent while Write delivers, so all ten are queued.
	bufs := make([][]byte, 16)
	sizes := make([]int, len(bufs))
	for i := range bufs {
		bufs[i] = make([]byte, testMTU)
	}
	n, err := s.Read(bufs, sizes, 0)
	if n != 10 || err != nil {
		t.Fatalf("Read = %d, %v; want all 10 replies in one batch", n, err)
	}
	for i := range n {
		if seq := binary.BigEndian.Uint16(bufs[i][40+6:]); seq != uint16(i) {
			t.Errorf("packet %d has seq %d: out of order", i, seq)
		}
	}
}

func TestReadDropsOversize(t *testing.T) {
	s := newTestStack(t, defaultTuning(), addrA)
	big := echoRequest6(addrB, addrA, 1, 1, make([]byte, 1000))
	small := echoRequest6(addrB, addrA, 1, 2, []byte("small"))
	s.Write([][]byte{big, small}, 0)
	bufs := [][]byte{make([]byte, 300), make([]byte, 300)}
	sizes := make([]int, 2)
	n, err := s.Read(bufs, sizes, 100)
	if n != 1 || err != nil {
		t.Fatalf("Read = %d, %v; want the small reply only", n, err)
	}
	if seq := binary.BigEndian.Uint16(bufs[0][100+40+6:]); seq != 2 {
		t.Errorf("got reply seq %d, want 2", seq)
	}
	if got := s.Stats().DroppedOversize; got != 1 {
		t.Errorf("DroppedOversize = %d, want 1", got)
	}
}

func TestOutboundQueueFullDrops(t *testing.T) {
	tn := defaultTuning()
	tn.queueLen = 4
	s := newTestStack(t, tn, addrA)
	var reqs [][]byte
	for i := range 10 {
		reqs = append(reqs, echoRequest6(addrB, addrA, 1, uint16(i), nil))
	}
	s.Write(reqs, 0) // nobody reads: 4 queue, 6 drop
	if got := s.Stats().DroppedQueueFull; got != 6 {
		t.Errorf("DroppedQueueFull = %d, want 6", got)
	}
}

// waitBlocked waits until n Reads are asleep on s's queue.
func waitBlocked(t *testing.T, s *Stack, n int) {
	t.Helper()
	q := s.link.out
	waitFor(t, 5*time.Second, "Read to block", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return q.sleepers == n
	})
}

type readResult struct {
	n   int
	err error
}

func goRead(s *Stack) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		bufs := [][]byte{make([]byte, testMTU)}
		n, err := s.Read(bufs, make([]int, 1), 0)
		ch <- readResult{n, err}
	}()
	return ch
}

func expectRead(t *testing.T, ch <-chan readResult, wantErr error, within time.Duration) {
	t.Helper()
	select {
	case r := <-ch:
		if r.n != 0 || !errors.Is(r.err, wantErr) || (wantErr == nil && r.err != nil) {
			t.Fatalf("Read = %d, %v; want 0, %v", r.n, r.err, wantErr)
		}
	case <-time.After(within):
		t.Fatalf("Read did not return within %v", within)
	}
}

func TestInterruptBlockedRead(t *testing.T) {
	s := newTestStack(t, defaultTuning(), addrA)
	ch := goRead(s)
	waitBlocked(t, s, 1)
	go s.Interrupt()
	expectRead(t, ch, nil, time.Second)
}

func TestInterruptBeforeRead(t *testing.T) {
	s := newTestStack(t, defaultTuning(), addrA)
	s.Interrupt()
	s.Interrupt() // coalesces with the first
	expectRead(t, goRead(s), nil, time.Second)
	// The interrupt was consumed: the next Read blocks until Close.
	ch := goRead(s)
	waitBlocked(t, s, 1)
	s.Close()
	expectRead(t, ch, os.ErrClosed, time.Second)
}

func TestInterruptKeepsQueuedPackets(t *testing.T) {
	s := newTestStack(t, defaultTuning(), addrA)
	s.Write([][]byte{echoRequest6(addrB, addrA, 1, 1, nil)}, 0)
	s.Interrupt()
	expectRead(t, goRead(s), nil, time.Second)
	select {
	case r := <-goRead(s):
		if r.n != 1 || r.err != nil {
			t.Fatalf("Read after interrupt = %d, %v; want the queued reply", r.n, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("queued reply lost after Interrupt")
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	s := newTestStack(t, defaultTuning(), addrA)
	ch1, ch2 := goRead(s), goRead(s)
	waitBlocked(t, s, 2)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	expectRead(t, ch1, os.ErrClosed, time.Second)
	expectRead(t, ch2, os.ErrClosed, time.Second)
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	expectRead(t, goRead(s), os.ErrClosed, time.Second)
	if n, err := s.Write([][]byte{echoRequest6(addrB, addrA, 1, 1, nil)}, 0); n != 0 || !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write after Close = %d, %v", n, err)
	}
	if _, err := s.DialContext(t.Context(), "tcp", "[fc22::2]:80"); !errors.Is(err, net.ErrClosed) {
		t.Errorf("DialContext after Close: %v", err)
	}
	if _, err := s.ListenTCP(netip.MustParseAddrPort("[::]:80")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ListenTCP after Close: %v", err)
	}
	if _, err := s.ListenUDP(netip.MustParseAddrPort("[::]:80")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ListenUDP after Close: %v", err)
	}
}

func TestCloseDuringTraffic(t *testing.T) {
	s := newTestStack(t, defaultTuning(), addrA)
	req := echoRequest6(addrB, addrA, 1, 1, make([]byte, 100))
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for {
				if _, err := s.Write([][]byte{req, req}, 0); err != nil {
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			bufs := [][]byte{make([]byte, testMTU), make([]byte, testMTU)}
			for {
				if _, err := s.Read(bufs, make([]int, 2), 0); err != nil {
					return
				}
			}
		}()
	}
	waitFor(t, 5*time.Second, "traffic", func() bool { return s.Stats().PacketsOut > 100 })
	s.Close()
	wg.Wait()
}

func TestWriteMalformed(t *testing.T) {
	s := newTestStack(t, defaultTuning(), addrA, addrA4)
	valid := echoRequest6(addrB, addrA, 1, 1, []byte("abc"))
	badLen6 := bytes.Clone(valid)
	binary.BigEndian.PutUint16(badLen6[4:], 60000)
	badIHL := echoRequest4(addrB4, addrA4, 1, 1, nil)
	badIHL[0] = 0x4f
	badTotal := echoRequest4(addrB4, addrA4, 1, 1, nil)
	binary.BigEndian.PutUint16(badTotal[2:], 5)
	frag := bytes.Clone(valid)
	frag[6] = 44 // claims a fragment header that is not there

	cases := [][]byte{
		nil,
		{},
		{0x50},                        // version 5
		{0x45, 0, 0},                  // truncated IPv4
		make([]byte, 19),              // version 0
		append([]byte{0x60}, 1, 2, 3), // truncated IPv6
		valid[:39],
		valid[:41],
		badLen6,
		badIHL,
		badTotal,
		frag,
	}
	before := s.Stats().DroppedMalformed
	for i, c := range cases {
		if n, err := s.Write([][]byte{c}, 0); n != 1 || err != nil {
			t.Errorf("case %d: Write = %d, %v", i, n, err)
		}
	}
	// An offset past the end is an empty packet, not a panic.
	if n, err := s.Write([][]byte{{1, 2}}, 5); n != 1 || err != nil {
		t.Errorf("offset past end: Write = %d, %v", n, err)
	}
	if _, err := s.Write(nil, -1); err == nil {
		t.Error("negative offset accepted")
	}
	if got := s.Stats().DroppedMalformed - before; got < 5 {
		t.Errorf("DroppedMalformed grew by %d, want at least the 5 link-level rejects", got)
	}
	// The stack still works.
	s.Write([][]byte{valid}, 0)
	readMatching(t, s, 5*time.Second, func(p []byte) bool { return len(p) > 40 && p[40] == 129 })
}
