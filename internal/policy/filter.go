package policy

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/packet"
)

// Verdict is the filter's decision on one packet.
type Verdict uint8

// Verdicts. Everything but Accept drops the packet.
const (
	Accept         Verdict = iota
	DropMalformed          // not a parsable IP packet
	DropSpoofed            // outbound with a source that is not this node's
	DropDenied             // inbound, no rule allows it and it answers nothing
	DropNotLocal           // inbound for an address this node does not own
	DropTableFull          // new flow refused: the connection table is full
	DropNotOverlay         // link-local or multicast: the kernel's own chatter on the interface
	DropFlowQuota          // inbound flow a rule admits refused: its remote (or all remotes) opened as many as they may

	// NumVerdicts sizes arrays indexed by Verdict.
	NumVerdicts = iota
)

var verdictNames = [...]string{"accept", "malformed", "spoofed", "denied", "not_local", "table_full", "not_overlay", "flow_quota"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "unknown"
}

// Denial describes a dropped inbound packet (denied, not local, or a new
// flow refused by the connection table), for logs and the event stream.
type Denial struct {
	Src, Dst netip.Addr // Src is the sending node (the owner, for a site address)
	Proto    uint8
	DstPort  uint16
	Reason   Verdict
	Count    uint64 // packets denied from Src so far
}

// denyLogInterval is how often one source's denials are reported.
const denyLogInterval = 10 * time.Second

// maxDenyCounters bounds the per-source counters; sources past it share the
// zero-address counter.
const maxDenyCounters = 65536

type denyCounter struct {
	n          atomic.Uint64
	lastReport atomic.Int64
}

// Filter is the policy as the TUN wrapper applies it to every packet.
// Methods are safe for concurrent use; the packet path takes no lock except
// the connection table's.
type Filter struct {
	local   atomic.Pointer[Local]
	matcher atomic.Pointer[Matcher]
	sites   atomic.Pointer[map[[8]byte]netip.Addr]
	routed  atomic.Pointer[[]RouteOwner]
	hosted  atomic.Pointer[map[netip.Addr]struct{}] // node addresses of the devices this node hosts
	ct      *Conntrack
	onDeny  func(Denial)

	mu     sync.RWMutex // guards denies (the map; counters are atomic)
	denies map[netip.Addr]*denyCounter

	spoofed   atomic.Uint64
	malformed atomic.Uint64
}

// Local is what this node owns: the sources it may send from and the
// destinations it accepts.
type Local struct {
	Addr netip.Addr   // node address
	Site netip.Prefix // site prefix
	IPv4 netip.Addr   // optional IPv4 address on the overlay
	// Offered are the prefixes this node forwards for its peers (its
	// offered routes; an exit's ::/0 already without the overlay's spaces).
	// Packets to them from peers are filtered like inbound traffic, and
	// packets from them may leave into the overlay.
	Offered []netip.Prefix
	// Host are the host's own addresses beyond the overlay (its LAN and
	// public addresses), sorted: never forwarded, even inside Offered.
	// They are the host's, not the overlay's (see also the firewall's
	// input rule).
	Host []netip.Addr
}

func (l *Local) owns(a netip.Addr) bool {
	return a == l.Addr || l.Site.Contains(a) || (l.IPv4.IsValid() && a == l.IPv4)
}

// forwards reports whether a lies in one of the offered routes and is
// not the host's own address.
func (l *Local) forwards(a netip.Addr) bool {
	for _, p := range l.Offered {
		if p.Contains(a) {
			_, own := slices.BinarySearchFunc(l.Host, a, netip.Addr.Compare)
			return !own
		}
	}
	return false
}

// RouteOwner says which peer (by node address) a tunnelled route leads to.
type RouteOwner struct {
	Prefix netip.Prefix
	Owner  netip.Addr
}

// NewFilter returns a filter for the node described by local. onDeny, if not
// nil, is called at most once per denyLogInterval per source with the latest
// denial; it must not block.
func NewFilter(local Local, m *Matcher, ct *Conntrack, onDeny func(Denial)) *Filter {
	f := &Filter{ct: ct, onDeny: onDeny, denies: make(map[netip.Addr]*denyCounter)}
	f.local.Store(&local)
	f.matcher.Store(m)
	return f
}

// SetLocal replaces what this node owns (its offered routes change live).
func (f *Filter) SetLocal(l Local) { f.local.Store(&l) }

// SetRouted installs the tunnelled routes this node accepted, so that a
// packet from a device behind a peer is judged as coming from that peer.
// Longer prefixes must come first.
func (f *Filter) SetRouted(owners []RouteOwner) { f.routed.Store(&owners) }

// SetSites installs which peer owns which site prefix. A packet from a
// device behind a peer (a source in its site prefix, which WireGuard only
// accepts from that peer) is judged as coming from the peer itself.
func (f *Filter) SetSites(owners map[netip.Prefix]netip.Addr) {
	m := make(map[[8]byte]netip.Addr, len(owners))
	for p, a := range owners {
		m[site64(p.Addr())] = a
	}
	f.sites.Store(&m)
}

func site64(a netip.Addr) [8]byte {
	b := a.As16()
	return [8]byte(b[:8])
}

// identify returns the node a source address belongs to: itself for a node
// address, the site prefix's owner for a site address, invalid if unknown.
func (f *Filter) identify(src netip.Addr) netip.Addr {
	switch {
	case identity.IsNodeAddress(src):
		return src
	case identity.IsSiteAddress(src):
		if m := f.sites.Load(); m != nil {
			if owner, ok := (*m)[site64(src)]; ok {
				return owner
			}
		}
		return netip.Addr{}
	}
	if r := f.routed.Load(); r != nil {
		for _, o := range *r {
			if o.Prefix.Contains(src) {
				return o.Owner
			}
		}
	}
	return netip.Addr{}
}

// SetMatcher installs a new rule set; packets after this call see it.
func (f *Filter) SetMatcher(m *Matcher) { f.matcher.Store(m) }

// Matcher returns the current rule set.
func (f *Filter) Matcher() *Matcher { return f.matcher.Load() }

// Conntrack returns the connection table.
func (f *Filter) Conntrack() *Conntrack { return f.ct }

// Outbound decides on a packet this node sends into the overlay; p must have
// been decoded without error (else pass DropMalformed yourself). Its
// source must be this node's or in a route it offers (else DropSpoofed; a
// hosted device's address is neither). To a hosted device, only this
// node's own address opens flows: what it forwards only answers flows the
// device opened (else DropDenied). A packet that opens a flow (not an
// answer on a flow a peer opened) is refused only when the connection
// table is full (DropTableFull); peers' flows never take more than half
// of it.
func (f *Filter) Outbound(p *packet.Parsed, now int64) Verdict {
	if p.Dst.IsMulticast() || p.Dst.IsLinkLocalUnicast() || p.Src.IsLinkLocalUnicast() || p.Src.IsUnspecified() {
		// Router solicitations, MLD reports and the like: not for the
		// overlay, and not an attack either.
		return DropNotOverlay
	}
	l := f.local.Load()
	if !l.owns(p.Src) && !l.forwards(p.Src) {
		// A hosted device's address is not this node's either: what the
		// device sends comes in through WireGuard and is judged by
		// Hairpin, never here.
		f.spoofed.Add(1)
		return DropSpoofed
	}
	if p.Src != l.Addr && f.Hosts(p.Dst) {
		// This node guards its devices: its own programs may talk to them
		// from its node address, but what it forwards (its LAN, its site
		// prefix's devices, an offered route's hosts) may only answer
		// flows the device opened there (Inbound judged those); no rule
		// can name such a source, so nothing of theirs opens a flow.
		if !f.ct.Answers(p, now) {
			return f.deny(p, p.Src, DropDenied, now)
		}
		return Accept
	}
	if !f.ct.Outbound(p, now) {
		return DropTableFull
	}
	return Accept
}

// Inbound decides on a packet a peer sent, after WireGuard decrypted it and
// checked that its source belongs to that peer. A packet passes if a rule
// admits it or if it replies to a flow this node opened. A connectionless
// packet a rule admits is also recorded as a flow its sender opened,
// charged to the node it comes from (see Conntrack); over that node's
// quota it is refused (DropFlowQuota), and counted against it like a
// denial.
func (f *Filter) Inbound(p *packet.Parsed, now int64) Verdict {
	local := f.local.Load()
	if !local.owns(p.Dst) && !local.forwards(p.Dst) {
		return f.deny(p, f.identify(p.Src), DropNotLocal, now)
	}
	m := f.matcher.Load()
	from := f.identify(p.Src)
	switch {
	case !from.IsValid():
		// A site address whose owner we do not know: nobody vouches for it.
	case p.NonFirst:
		// Later fragments carry no ports; the first one was judged. Let them
		// through from sources that may send something, or that we talk to:
		// without the first fragment the kernel cannot reassemble them.
		if m.AllowsAny(from) || f.ct.HasRemote(p.Src) {
			return Accept
		}
	case p.IsICMPError():
		// Errors about traffic this node sent (Packet Too Big above all) must
		// pass: about flows it opened, and about its replies to flows the
		// rules admit. The error may come from a router on the way, so its
		// source need not be the flow's peer.
		if p.HasInner && (local.owns(p.Inner.Src) || local.forwards(p.Inner.Src)) {
			in := p.Inner
			ports := in.Proto == packet.ProtoTCP || in.Proto == packet.ProtoUDP
			if f.ct.Related(in, now) || m.AllowsTo(f.identify(in.Dst), in.Src, local.owns(in.Src), in.Proto, in.SrcPort, ports) {
				return Accept
			}
		}
		if m.AllowsTo(from, p.Dst, local.owns(p.Dst), p.Proto, 0, false) {
			return Accept
		}
	default:
		// Rules first, then replies: a deny rule refuses what rules would
		// admit, never a reply to a flow this node opened.
		if m.AllowsTo(from, p.Dst, local.owns(p.Dst), p.Proto, p.DstPort, p.HasPorts) {
			// A connectionless flow is recorded as the remote's, so that
			// this node's answers open nothing; from's quota bounds them.
			if v := f.ct.Admitted(p, from, now); v != Accept {
				return f.deny(p, from, v, now)
			}
			return Accept
		}
		// Virtual Ethernet's tunnels are symmetrical (both ends send from
		// and to L2Port): their packets pass by rules alone, never as
		// replies, so that revoking a member cuts it at once.
		if p.Proto == packet.ProtoUDP && p.HasPorts && p.DstPort == L2Port {
			break
		}
		if f.ct.Reply(p, now) {
			return Accept
		}
	}
	return f.deny(p, from, DropDenied, now)
}

// SetHosted installs the node addresses of the plain WireGuard devices
// this node hosts (their home node: `tomoe device add`).
func (f *Filter) SetHosted(addrs []netip.Addr) {
	m := make(map[netip.Addr]struct{}, len(addrs))
	for _, a := range addrs {
		m[a] = struct{}{}
	}
	f.hosted.Store(&m)
}

// Hosts reports whether a is the address of a device this node hosts.
func (f *Filter) Hosts(a netip.Addr) bool {
	m := f.hosted.Load()
	if m == nil || len(*m) == 0 {
		return false
	}
	_, ok := (*m)[a]
	return ok
}

// Hairpin decides on a packet a peer sent that this node must forward
// back into the overlay because it comes from or goes to a device this
// node hosts; forward is false for every other packet (Inbound judges it).
//
//   - To a hosted device (from anyone, the device itself excepted): this
//     node guards the device, which has no firewall of its own. Deny rules
//     apply as to this node; an allow rule applies only if its `to` names
//     the device (its key, its address or its /128: see Self.Hosted and
//     Matcher.AllowsToHosted), so that rules for this node's own services
//     or the routes it forwards open nothing on its devices; replies to
//     flows the device opened pass.
//   - From a hosted device to an address neither this node's nor one it
//     forwards: allowed unless a deny rule about the device refuses it
//     (`[[policy.deny]] from = DEVICE`, or a "*" deny matching it; every
//     packet, so a new deny stops the device's flows too), recorded as a
//     flow the device opened (so its replies pass); the destination's own
//     policy decides.
//
// Packets between a device and this node itself, or its offered routes,
// are not hairpinned: Inbound judges them with the device as the source.
func (f *Filter) Hairpin(p *packet.Parsed, now int64) (v Verdict, forward bool) {
	toDev, fromDev := f.Hosts(p.Dst), f.Hosts(p.Src)
	if !toDev && !fromDev {
		return Accept, false
	}
	local := f.local.Load()
	if local.owns(p.Dst) || local.forwards(p.Dst) {
		return Accept, false
	}
	if p.Dst.IsMulticast() || p.Dst.IsLinkLocalUnicast() || p.Src.IsLinkLocalUnicast() || p.Src == p.Dst {
		return DropNotOverlay, true
	}
	if !toDev {
		if f.matcher.Load().Denies(p.Src, p.Dst, p.Proto, p.DstPort, p.HasPorts) {
			return f.deny(p, p.Src, DropDenied, now), true
		}
		if v := f.ct.OutboundFor(p, p.Src, now); v != Accept {
			return f.deny(p, p.Src, v, now), true
		}
		return Accept, true
	}
	from := f.identify(p.Src)
	if !from.IsValid() {
		return f.deny(p, from, DropDenied, now), true
	}
	m := f.matcher.Load()
	switch {
	case p.NonFirst:
		if f.ct.HasRemote(p.Src) {
			return Accept, true
		}
	case p.IsICMPError():
		if p.HasInner && f.Hosts(p.Inner.Src) && f.ct.Related(p.Inner, now) {
			return Accept, true
		}
	default:
		if m.AllowsToHosted(from, p.Dst, p.Proto, p.DstPort, p.HasPorts) {
			if v := f.ct.Admitted(p, from, now); v != Accept {
				return f.deny(p, from, v, now), true
			}
			return Accept, true
		}
		if f.ct.Reply(p, now) {
			return Accept, true
		}
	}
	return f.deny(p, from, DropDenied, now), true
}

// Malformed counts a packet that did not parse.
func (f *Filter) Malformed() { f.malformed.Add(1) }

// deny counts a dropped packet against the node it came from (from; the raw
// source if that is unknown).
func (f *Filter) deny(p *packet.Parsed, from netip.Addr, why Verdict, now int64) Verdict {
	if !from.IsValid() {
		from = p.Src
	}
	c := f.counter(from)
	n := c.n.Add(1)
	if f.onDeny != nil {
		last := c.lastReport.Load()
		if now-last >= int64(denyLogInterval) && c.lastReport.CompareAndSwap(last, now) {
			f.onDeny(Denial{Src: from, Dst: p.Dst, Proto: p.Proto, DstPort: p.DstPort, Reason: why, Count: n})
		}
	}
	return why
}

func (f *Filter) counter(src netip.Addr) *denyCounter {
	f.mu.RLock()
	c := f.denies[src]
	f.mu.RUnlock()
	if c != nil {
		return c
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if c = f.denies[src]; c != nil {
		return c
	}
	if len(f.denies) >= maxDenyCounters {
		src = netip.Addr{}
		if c = f.denies[src]; c != nil {
			return c
		}
	}
	c = &denyCounter{}
	c.lastReport.Store(-int64(denyLogInterval))
	f.denies[src] = c
	return c
}

// Denied returns the number of inbound packets dropped from src.
func (f *Filter) Denied(src netip.Addr) uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if c := f.denies[src]; c != nil {
		return c.n.Load()
	}
	return 0
}

// DeniedAll returns the per-source denial counts.
func (f *Filter) DeniedAll() map[netip.Addr]uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[netip.Addr]uint64, len(f.denies))
	for a, c := range f.denies {
		out[a] = c.n.Load()
	}
	return out
}

// Spoofed returns the number of outbound packets dropped for a foreign source.
func (f *Filter) Spoofed() uint64 { return f.spoofed.Load() }

// MalformedCount returns the number of packets that did not parse.
func (f *Filter) MalformedCount() uint64 { return f.malformed.Load() }
