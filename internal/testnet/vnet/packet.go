package vnet

import (
	"net/netip"
	"sync"
)

// Proto is a transport protocol.
type Proto uint8

const (
	UDP Proto = 17
	TCP Proto = 6
)

func (p Proto) String() string {
	switch p {
	case UDP:
		return "udp"
	case TCP:
		return "tcp"
	}
	return "proto?"
}

// packet is a datagram in flight, or a stream's connection request (syn
// set: it carries no payload, and crosses links without loss or shaping,
// since TCP would retransmit it). Packets come from pools and go back when
// delivered or dropped: the data path allocates nothing per datagram.
type packet struct {
	proto    Proto
	src, dst netip.AddrPort
	buf      []byte // buf[:n] is the payload; cap is the pool's size class
	n        int
	due      int64 // when it leaves the link queue it waits in
	ttl      uint8 // hops left: each router forwarding it takes one
	syn      *dialState
}

// DefaultTTL is the TTL (IPv6: hop limit) a host's packets start with,
// Linux's default (net.ipv4.ip_default_ttl).
const DefaultTTL = 64

// forward takes hops routers' worth of p's TTL, as routers forwarding it
// do, and reports false if one of them would drop it: a router forwards
// a packet only if its TTL is above 1 (RFC 1812 section 5.3.1), so
// crossing hops routers needs a TTL above hops.
func (p *packet) forward(hops uint8) bool {
	if p.ttl <= hops {
		return false
	}
	p.ttl -= hops
	return true
}

// Size classes: one for datagrams up to a full Ethernet frame plus
// WireGuard's overhead, one for anything up to the largest UDP payload.
const (
	smallPacket = 2048
	largePacket = 65535
)

var (
	smallPool = sync.Pool{New: func() any { return &packet{buf: make([]byte, smallPacket)} }}
	largePool = sync.Pool{New: func() any { return &packet{buf: make([]byte, largePacket)} }}
)

// newPacket returns a packet holding a copy of b, or nil if b is larger
// than any UDP datagram.
func newPacket(proto Proto, src, dst netip.AddrPort, b []byte) *packet {
	var p *packet
	switch {
	case len(b) <= smallPacket:
		p = smallPool.Get().(*packet)
	case len(b) <= largePacket:
		p = largePool.Get().(*packet)
	default:
		return nil
	}
	p.proto, p.src, p.dst = proto, src, dst
	p.ttl = DefaultTTL
	p.n = copy(p.buf, b)
	return p
}

func (p *packet) payload() []byte { return p.buf[:p.n] }

func (p *packet) release() {
	p.syn = nil
	p.src, p.dst = netip.AddrPort{}, netip.AddrPort{}
	if cap(p.buf) == smallPacket {
		smallPool.Put(p)
	} else {
		largePool.Put(p)
	}
}

// packetQueue is a FIFO of packets in a ring that grows on demand (up to
// the owner's limit): an idle socket or link costs one slice header.
type packetQueue struct {
	ring []*packet
	head int
	len  int
}

func (q *packetQueue) empty() bool { return q.len == 0 }

func (q *packetQueue) peek() *packet { return q.ring[q.head] }

// push appends p unless the queue already holds limit packets.
func (q *packetQueue) push(p *packet, limit int) bool {
	if q.len >= limit {
		return false
	}
	if q.len == len(q.ring) {
		n := 2 * len(q.ring)
		if n == 0 {
			n = 8
		}
		ring := make([]*packet, n)
		k := copy(ring, q.ring[q.head:])
		copy(ring[k:], q.ring[:q.head])
		q.ring, q.head = ring, 0
	}
	q.ring[(q.head+q.len)%len(q.ring)] = p
	q.len++
	return true
}

func (q *packetQueue) pop() *packet {
	p := q.ring[q.head]
	q.ring[q.head] = nil
	q.head = (q.head + 1) % len(q.ring)
	q.len--
	if q.len == 0 {
		q.head = 0
	}
	return p
}

// drain releases every packet.
func (q *packetQueue) drain() {
	for q.len > 0 {
		q.pop().release()
	}
}
