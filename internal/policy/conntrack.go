package policy

import (
	"net/netip"
	"sync"
	"time"

	"github.com/tomoe-net/tomoe/internal/packet"
)

// Idle timeouts of tracked flows. TCP connections that have seen a reply are
// kept a day, so that a quiet SSH session survives; the table is bounded, and
// a closed connection leaves it within minutes.
const (
	tcpNewTimeout         = 2 * time.Minute
	tcpEstablishedTimeout = 24 * time.Hour
	tcpClosingTimeout     = 4 * time.Minute
	tcpResetTimeout       = 10 * time.Second
	udpNewTimeout         = time.Minute
	udpRepliedTimeout     = 3 * time.Minute
	icmpTimeout           = 30 * time.Second
	otherTimeout          = 2 * time.Minute

	// DefaultConntrackMax bounds the number of tracked flows.
	DefaultConntrackMax = 65536
)

const (
	ctNew uint8 = iota
	ctReplied
	ctClosing
)

type ctEntry struct {
	expires int64 // unix nanoseconds
	state   uint8
}

// Conntrack remembers the flows this node opened, so that their replies pass
// the default-deny inbound filter. Only flows the node *initiated* are
// tracked: a TCP SYN without ACK, any UDP datagram, an ICMP echo request, a
// packet of another protocol. Replies the node sends to flows a peer opened
// create no entry, so they cannot turn into an opening for that peer once
// its rule is revoked.
type Conntrack struct {
	max int

	mu       sync.Mutex // guards the fields below
	flows    map[packet.Flow]*ctEntry
	byRemote map[netip.Addr]int
	lastGC   int64
}

// NewConntrack returns a table holding at most max flows (0: the default).
func NewConntrack(max int) *Conntrack {
	if max <= 0 {
		max = DefaultConntrackMax
	}
	return &Conntrack{max: max, flows: make(map[packet.Flow]*ctEntry), byRemote: make(map[netip.Addr]int)}
}

func initiates(p *packet.Parsed) bool {
	switch p.Proto {
	case packet.ProtoTCP:
		return p.IsTCPInitial()
	case packet.ProtoUDP:
		return p.HasPorts
	case packet.ProtoICMPv4, packet.ProtoICMPv6:
		return p.IsEchoRequest()
	}
	return !p.NonFirst
}

func flowKey(p *packet.Parsed) packet.Flow {
	f := p.Flow
	if !p.HasPorts && !p.IsEchoRequest() && !p.IsEchoReply() {
		f.SrcPort, f.DstPort = 0, 0
	}
	return f
}

// Outbound records an outgoing packet. It reports false only when the packet
// would open a new flow and the table is full.
func (c *Conntrack) Outbound(p *packet.Parsed, now int64) bool {
	if p.NonFirst || (p.IsICMP() && !p.IsEchoRequest()) {
		return true
	}
	key := flowKey(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.flows[key]
	if e == nil {
		if !initiates(p) {
			return true
		}
		if len(c.flows) >= c.max {
			c.gcLocked(now, true)
			if len(c.flows) >= c.max {
				return false
			}
		}
		e = &ctEntry{}
		c.flows[key] = e
		c.byRemote[key.Dst]++
	}
	c.touchLocked(e, p, now)
	return true
}

// Reply reports whether an incoming packet answers a tracked flow, and
// refreshes that flow.
func (c *Conntrack) Reply(p *packet.Parsed, now int64) bool {
	if p.IsICMP() && !p.IsEchoReply() {
		return false
	}
	key := flowKey(p).Reverse()
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.flows[key]
	if e == nil || e.expires < now {
		return false
	}
	if e.state == ctNew {
		e.state = ctReplied
	}
	c.touchLocked(e, p, now)
	return true
}

// Related reports whether an ICMP error quotes a flow this node opened.
func (c *Conntrack) Related(inner packet.Flow, now int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.flows[inner]
	if e == nil {
		// Errors about ICMP and port-less flows quote them without ports.
		inner.SrcPort, inner.DstPort = 0, 0
		e = c.flows[inner]
	}
	return e != nil && e.expires >= now
}

// HasRemote reports whether any tracked flow goes to remote.
func (c *Conntrack) HasRemote(remote netip.Addr) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byRemote[remote] > 0
}

func (c *Conntrack) touchLocked(e *ctEntry, p *packet.Parsed, now int64) {
	var d time.Duration
	switch p.Proto {
	case packet.ProtoTCP:
		switch {
		case p.TCPFlags&packet.TCPRst != 0:
			e.state = ctClosing
			d = tcpResetTimeout
		case p.TCPFlags&packet.TCPFin != 0 || e.state == ctClosing:
			e.state = ctClosing
			d = tcpClosingTimeout
		case e.state == ctReplied:
			d = tcpEstablishedTimeout
		default:
			d = tcpNewTimeout
		}
	case packet.ProtoUDP:
		d = udpNewTimeout
		if e.state == ctReplied {
			d = udpRepliedTimeout
		}
	case packet.ProtoICMPv4, packet.ProtoICMPv6:
		d = icmpTimeout
	default:
		d = otherTimeout
	}
	if exp := now + int64(d); exp > e.expires || p.TCPFlags&packet.TCPRst != 0 {
		e.expires = exp
	}
}

// Flush forgets every flow whose remote end matches and returns how many
// there were.
func (c *Conntrack) Flush(match func(remote netip.Addr) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k := range c.flows {
		if match(k.Dst) {
			delete(c.flows, k)
			n++
		}
	}
	for a := range c.byRemote {
		if match(a) {
			delete(c.byRemote, a)
		}
	}
	return n
}

// GC drops expired flows. The node calls it periodically; Outbound also
// calls it when the table is full (at most once a second).
func (c *Conntrack) GC(now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gcLocked(now, false)
}

func (c *Conntrack) gcLocked(now int64, rateLimited bool) {
	if rateLimited && now-c.lastGC < int64(time.Second) {
		return
	}
	c.lastGC = now
	for k, e := range c.flows {
		if e.expires < now {
			delete(c.flows, k)
			if c.byRemote[k.Dst]--; c.byRemote[k.Dst] <= 0 {
				delete(c.byRemote, k.Dst)
			}
		}
	}
}

// Len returns the number of tracked flows, expired ones not yet collected included.
func (c *Conntrack) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.flows)
}
