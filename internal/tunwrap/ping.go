package tunwrap

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/tomoe-net/tomoe/internal/packet"
)

// The pinger sends ICMPv6 echo requests from the node's address through the
// outbound path and catches the replies before the local stack sees them,
// so `tomoe ping` works the same in kernel and userspace mode and needs no
// socket. Its echo identifier is random per wrapper, and each request
// carries a random cookie the reply must echo.
type pinger struct {
	id uint16

	mu      sync.Mutex // guards seq and waiting
	seq     uint16
	waiting map[uint16]*pingWait
}

type pingWait struct {
	dst      netip.Addr
	cookie   [8]byte
	sent     time.Time
	deadline time.Time
	done     chan pingResult // buffered, receives once
}

type pingResult struct {
	rtt time.Duration
	err error
}

// UnreachableError reports an ICMP destination-unreachable answer to a ping.
type UnreachableError struct {
	From netip.Addr
	Code uint8
}

func (e *UnreachableError) Error() string {
	reason := map[uint8]string{
		packet.UnreachNoRoute:     "no route",
		packet.UnreachProhibited:  "administratively prohibited",
		packet.UnreachAddress:     "address unreachable (no peer found)",
		packet.UnreachPort:        "port unreachable",
		packet.UnreachPolicyFails: "source address failed policy",
	}[e.Code]
	if reason == "" {
		reason = fmt.Sprintf("code %d", e.Code)
	}
	return fmt.Sprintf("destination unreachable from %s: %s", e.From, reason)
}

func (p *pinger) init() {
	var b [2]byte
	rand.Read(b[:])
	p.id = binary.BigEndian.Uint16(b[:])
	p.waiting = make(map[uint16]*pingWait)
}

// MaxPingPayload bounds Ping's size so a request fits the minimum MTU.
const MaxPingPayload = 1280 - packet.IPv6HeaderLen - packet.ICMPHeaderLen

// Ping sends one echo request of size payload bytes (at least 8) to dst and
// waits for the reply until ctx ends.
func (w *Wrapper) Ping(ctx context.Context, dst netip.Addr, size int) (time.Duration, error) {
	if size < 8 || size > MaxPingPayload {
		return 0, fmt.Errorf("ping size %d: must be 8..%d bytes", size, MaxPingPayload)
	}
	if !dst.Is6() || dst.Is4In6() {
		return 0, fmt.Errorf("ping %s: only IPv6 overlay addresses can be pinged", dst)
	}
	select {
	case <-w.closed:
		return 0, errClosed
	default:
	}
	pw := &pingWait{dst: dst, done: make(chan pingResult, 1)}
	rand.Read(pw.cookie[:])
	payload := make([]byte, size)
	copy(payload, pw.cookie[:])
	if dl, ok := ctx.Deadline(); ok {
		pw.deadline = dl
	}
	p := &w.ping
	p.mu.Lock()
	p.seq++
	seq := p.seq
	p.waiting[seq] = pw
	pw.sent = time.Now()
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		if p.waiting[seq] == pw {
			delete(p.waiting, seq)
		}
		p.mu.Unlock()
	}()

	w.Inject(packet.EchoRequest(w.cfg.Local, dst, p.id, seq, payload))
	select {
	case r := <-pw.done:
		return r.rtt, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// intercept consumes echo replies and ICMP errors that answer our pings.
func (p *pinger) intercept(pp *packet.Parsed, pkt []byte) bool {
	now := time.Now()
	switch {
	case pp.IsEchoReply() && pp.Proto == packet.ProtoICMPv6 && pp.SrcPort == p.id:
		seq, payload := packet.EchoPayload(pkt, pp)
		p.mu.Lock()
		pw := p.waiting[seq]
		if pw == nil || pw.dst != pp.Src || len(payload) < 8 || [8]byte(payload[:8]) != pw.cookie {
			p.mu.Unlock()
			return false
		}
		delete(p.waiting, seq)
		p.mu.Unlock()
		pw.done <- pingResult{rtt: now.Sub(pw.sent)}
		return true
	case pp.IsICMPError() && pp.HasInner && pp.Inner.Proto == packet.ProtoICMPv6 && pp.Inner.SrcPort == p.id:
		p.mu.Lock()
		matched := false
		for seq, pw := range p.waiting {
			if pw.dst == pp.Inner.Dst {
				delete(p.waiting, seq)
				pw.done <- pingResult{err: &UnreachableError{From: pp.Src, Code: pp.ICMPCode}}
				matched = true
			}
		}
		p.mu.Unlock()
		return matched
	}
	return false
}

// expire drops waiters whose context deadline passed (Ping returns by
// itself; this only frees the table when callers leak contexts).
func (p *pinger) expire(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for seq, pw := range p.waiting {
		if !pw.deadline.IsZero() && now.After(pw.deadline.Add(time.Second)) {
			delete(p.waiting, seq)
		}
	}
}

func (p *pinger) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for seq, pw := range p.waiting {
		delete(p.waiting, seq)
		pw.done <- pingResult{err: errClosed}
	}
}
