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
	// remoteTimeout is how long a flow a remote opened is kept after its
	// last packet in either direction: this node's answers refresh it, so
	// it outlives any conversation, and an idle one frees its remote's
	// quota within a minute. A remote may sustain perRemote/remoteTimeout
	// new flows a second (68 with the default table).
	remoteTimeout = time.Minute

	// DefaultConntrackMax bounds the number of tracked flows.
	DefaultConntrackMax = 65536
)

// Shares of the table that flows opened by remote ends may take: all
// remotes together at most 1/remoteShare of it, so that at least half of
// it is always free for this node's own flows; one remote owner at most
// 1/perRemoteShare (4,096 of the default 65,536), so that eight of them
// must flood together to crowd out the others.
const (
	remoteShare    = 2
	perRemoteShare = 16
)

const (
	ctNew uint8 = iota
	ctReplied
	ctClosing
)

type ctEntry struct {
	expires int64 // unix nanoseconds
	// owner is the node a remote-origin flow is charged to; zero for this
	// node's own flows.
	owner  netip.Addr
	state  uint8
	remote bool // opened by the remote end
	// hosted: opened by a device this node hosts (owner), forwarded
	// through it; charged to the device like a remote's flow.
	hosted bool
}

// Conntrack is the connection table. Its entries are keyed as this node
// sends (Src is the local end), and each records which end opened the flow,
// as Linux conntrack remembers the original direction:
//
//   - A flow this node opened lets its replies pass the default-deny inbound
//     filter (Reply). This node opens a flow with a TCP SYN without ACK, an
//     ICMP echo request, or any UDP datagram or packet of another protocol
//     that is not an answer on a flow the remote opened.
//   - A flow a remote opened is recorded only for UDP and protocols other
//     than TCP and ICMP (connectionless ones), when a rule admits its packet
//     (Admitted). It never lets anything in by itself: rules judge every
//     inbound packet of it. It exists so that this node's answers on it
//     are answers, creating nothing: they cannot become a flow "this node
//     opened" that would let the remote in after its rule is revoked.
//     TCP needs no such record: a SYN-ACK or ACK opens nothing.
//
// Flows remote ends open are bounded per owner (the node they are charged
// to: a site's or an accepted route's devices share their node's quota)
// and all together, well below the table's size, so that no remote can
// stop this node from opening its own flows. A new remote flow over a
// bound is refused, never recorded as this node's.
//
// An expired flow is gone, whether or not GC has collected it yet: it
// answers nothing and no longer says who opened it. So a packet this node
// sends on a flow a remote opened, after a minute without a packet either
// way, opens a flow of this node's (as with Linux conntrack).
type Conntrack struct {
	max, remoteMax, perRemote int

	mu       sync.Mutex // guards the fields below
	flows    map[packet.Flow]*ctEntry
	byRemote map[netip.Addr]int // this node's flows per remote address
	byOwner  map[netip.Addr]int // remote-origin and hosted devices' flows per owner
	remote   int                // remote-origin and hosted devices' flows
	lastGC   int64
}

// NewConntrack returns a table holding at most size flows (0: the
// default), of which remote ends may open at most size/2, one owner
// size/16.
func NewConntrack(size int) *Conntrack {
	if size <= 0 {
		size = DefaultConntrackMax
	}
	return &Conntrack{
		max:       size,
		remoteMax: max(1, size/remoteShare),
		perRemote: max(1, size/perRemoteShare),
		flows:     make(map[packet.Flow]*ctEntry),
		byRemote:  make(map[netip.Addr]int),
		byOwner:   make(map[netip.Addr]int),
	}
}

// Limits returns the table's bounds: all flows, flows remote ends opened,
// and flows one owner opened.
func (c *Conntrack) Limits() (all, remote, perOwner int) {
	return c.max, c.remoteMax, c.perRemote
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

// connectionless reports whether the table records flows a remote opens
// with p: UDP with ports, and protocols other than TCP and ICMP.
func connectionless(p *packet.Parsed) bool {
	switch p.Proto {
	case packet.ProtoTCP, packet.ProtoICMPv4, packet.ProtoICMPv6:
		return false
	case packet.ProtoUDP:
		return p.HasPorts
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

// OutboundFor records a packet a device this node hosts (owner) sends
// through it: as Outbound, but a new flow is charged to the device under a
// remote's quotas (the device is a key this node does not control; its
// flows must not fill the table this node's own need). It returns Accept,
// DropFlowQuota or DropTableFull.
func (c *Conntrack) OutboundFor(p *packet.Parsed, owner netip.Addr, now int64) Verdict {
	if p.NonFirst || (p.IsICMP() && !p.IsEchoRequest()) {
		return Accept
	}
	key := flowKey(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.liveLocked(key, now)
	if e == nil {
		if !initiates(p) {
			return Accept
		}
		if v := c.chargeableLocked(owner, now); v != Accept {
			return v
		}
		e = &ctEntry{owner: owner, hosted: true}
		c.flows[key] = e
		c.byOwner[owner]++
		c.remote++
	}
	c.touchLocked(e, p, now)
	return Accept
}

// OpenedByHosted reports whether p, sent by a device this node hosts
// (owner), belongs to a live flow the device opened (OutboundFor), which
// is charged to it.
func (c *Conntrack) OpenedByHosted(p *packet.Parsed, owner netip.Addr, now int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.flows[flowKey(p)]
	return e != nil && e.hosted && e.owner == owner && e.expires >= now
}

// liveLocked returns the entry for key, or nil if there is none or it
// expired (an expired one is removed: it no longer says who opened the flow).
func (c *Conntrack) liveLocked(key packet.Flow, now int64) *ctEntry {
	e := c.flows[key]
	if e != nil && e.expires < now {
		c.deleteLocked(key, e)
		return nil
	}
	return e
}

// Outbound records an outgoing packet: it opens or refreshes a flow of this
// node's, or refreshes a flow the remote opened, which it answers. It
// reports false only when the packet would open a new flow and the table
// is full.
func (c *Conntrack) Outbound(p *packet.Parsed, now int64) bool {
	if p.NonFirst || (p.IsICMP() && !p.IsEchoRequest()) {
		return true
	}
	key := flowKey(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.liveLocked(key, now)
	if e == nil {
		if !initiates(p) {
			return true
		}
		if !c.roomLocked(now) {
			return false
		}
		e = &ctEntry{}
		c.flows[key] = e
		c.byRemote[key.Dst]++
	}
	c.touchLocked(e, p, now)
	return true
}

// Answers reports whether an outgoing packet this node forwards (from a
// source it does not own) answers a flow its remote end opened, and
// refreshes that flow: a TCP segment, ICMP message or later fragment that
// opens nothing, or a connectionless packet of a flow Admitted recorded
// as the remote's. It records nothing new.
func (c *Conntrack) Answers(p *packet.Parsed, now int64) bool {
	if p.NonFirst {
		return true
	}
	if !connectionless(p) {
		return !initiates(p)
	}
	key := flowKey(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.liveLocked(key, now)
	if e == nil || !e.remote {
		return false
	}
	c.touchLocked(e, p, now)
	return true
}

// Admitted records an inbound connectionless packet (UDP with ports, or a
// protocol other than TCP and ICMP; others are accepted and not recorded)
// that a rule admitted, from a remote that owner stands for (invalid: the
// source itself). A new flow becomes the remote's, charged to owner; a
// packet of a flow this node opened is its reply. It returns Accept, or
// DropFlowQuota when owner or all remotes together have opened as many
// flows as they may, or DropTableFull when the table is full.
func (c *Conntrack) Admitted(p *packet.Parsed, owner netip.Addr, now int64) Verdict {
	if !connectionless(p) {
		return Accept
	}
	key := flowKey(p).Reverse()
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.liveLocked(key, now)
	switch {
	case e == nil:
		if !owner.IsValid() {
			owner = key.Dst
		}
		if v := c.chargeableLocked(owner, now); v != Accept {
			return v
		}
		e = &ctEntry{owner: owner, remote: true}
		c.flows[key] = e
		c.byOwner[owner]++
		c.remote++
	case !e.remote && e.state == ctNew:
		e.state = ctReplied
	}
	c.touchLocked(e, p, now)
	return Accept
}

// chargeableLocked reports whether one more flow may be charged to owner
// (a remote, or a device this node hosts): Accept, or DropFlowQuota when
// owner or all owners together hold as many as they may, or DropTableFull.
func (c *Conntrack) chargeableLocked(owner netip.Addr, now int64) Verdict {
	if c.remote >= c.remoteMax || c.byOwner[owner] >= c.perRemote {
		c.gcLocked(now, true)
		if c.remote >= c.remoteMax || c.byOwner[owner] >= c.perRemote {
			return DropFlowQuota
		}
	}
	if !c.roomLocked(now) {
		return DropTableFull
	}
	return Accept
}

// roomLocked reports whether a flow may be added, collecting expired flows
// (at most once a second) when the table is full.
func (c *Conntrack) roomLocked(now int64) bool {
	if len(c.flows) < c.max {
		return true
	}
	c.gcLocked(now, true)
	return len(c.flows) < c.max
}

// Reply reports whether an incoming packet answers a flow this node opened,
// and refreshes that flow. Flows remote ends opened answer nothing.
func (c *Conntrack) Reply(p *packet.Parsed, now int64) bool {
	if p.IsICMP() && !p.IsEchoReply() {
		return false
	}
	key := flowKey(p).Reverse()
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.flows[key]
	if e == nil || e.remote || e.expires < now {
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
	return e != nil && !e.remote && e.expires >= now
}

// HasRemote reports whether any flow this node opened goes to remote.
func (c *Conntrack) HasRemote(remote netip.Addr) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byRemote[remote] > 0
}

func (c *Conntrack) touchLocked(e *ctEntry, p *packet.Parsed, now int64) {
	var d time.Duration
	switch {
	case e.remote:
		d = remoteTimeout
	case p.Proto == packet.ProtoTCP:
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
	case p.Proto == packet.ProtoUDP:
		d = udpNewTimeout
		if e.state == ctReplied {
			d = udpRepliedTimeout
		}
	case p.IsICMP():
		d = icmpTimeout
	default:
		d = otherTimeout
	}
	if exp := now + int64(d); exp > e.expires || p.TCPFlags&packet.TCPRst != 0 {
		e.expires = exp
	}
}

func (c *Conntrack) deleteLocked(key packet.Flow, e *ctEntry) {
	delete(c.flows, key)
	if e.remote || e.hosted {
		c.remote--
		if c.byOwner[e.owner]--; c.byOwner[e.owner] <= 0 {
			delete(c.byOwner, e.owner)
		}
		return
	}
	if c.byRemote[key.Dst]--; c.byRemote[key.Dst] <= 0 {
		delete(c.byRemote, key.Dst)
	}
}

// Flush forgets every flow this node opened whose remote end matches, and
// returns how many there were, so that no reply of such a remote passes
// any more. Flows the remotes opened stay until they expire: they let
// nothing in, and while they last this node's further answers on them
// (a service still sending) remain answers; forgotten, the next answer
// would open a flow of this node's that lets the remote's packets in.
func (c *Conntrack) Flush(match func(remote netip.Addr) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, e := range c.flows {
		if !e.remote && match(k.Dst) {
			c.deleteLocked(k, e)
			n++
		}
	}
	return n
}

// GC drops expired flows. The node calls it periodically; a new flow that
// finds the table or a quota full also calls it (at most once a second).
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
			c.deleteLocked(k, e)
		}
	}
}

// Len returns the number of tracked flows, expired ones not yet collected included.
func (c *Conntrack) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.flows)
}

// Counts returns the number of tracked flows by who opened them (a hosted
// device's count as remote), expired ones not yet collected included.
func (c *Conntrack) Counts() (local, remote int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.flows) - c.remote, c.remote
}

// OpenedBy returns the number of tracked flows charged to owner.
func (c *Conntrack) OpenedBy(owner netip.Addr) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byOwner[owner]
}
