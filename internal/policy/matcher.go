package policy

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/tomoe-net/tomoe/internal/packet"
)

// Self is what the matcher needs about this node itself: its address and
// its own memberships (for rules whose To names destination nodes).
type Self struct {
	Addr    netip.Addr
	Members []Member
	// Hosted are the node addresses of the devices this node hosts: a
	// rule whose To names one of them (its key or address) is about
	// traffic to that device (as if To were its address /128).
	Hosted []netip.Addr
}

// hostedDest returns the hosted device a DestNodes identity names, if any.
func (s Self) hostedDest(id Identity) (netip.Addr, bool) {
	for _, h := range s.Hosted {
		if id.Matches(h, nil) {
			return h, true
		}
	}
	return netip.Addr{}, false
}

// Matcher is an immutable, compiled rule set. Build a new one on every
// change and swap it in: readers on the packet path never lock, and a
// decision costs one map lookup plus the rules naming the source (and "*").
type Matcher struct {
	entries []Entry
	bySrc   map[netip.Addr]*srcRules
	any     srcRules
	self    netip.Addr
	byCert  bool
	next    time.Time
}

// srcRules are the compiled rules about one source.
type srcRules struct{ allow, deny []crule }

// crule is a rule compiled for one source: certificate identities and
// destination nodes are already resolved.
type crule struct {
	idx    int // into Matcher.entries
	proto  Proto
	ports  Ports
	dest   DestKind // DestDefault, DestSelf or DestPrefix
	prefix netip.Prefix
	named  bool // From names the source by key or address
}

func (c *crule) matches(dst netip.Addr, self bool, ipProto uint8, port uint16, hasPorts bool) bool {
	switch c.dest {
	case DestSelf:
		if !self {
			return false
		}
	case DestPrefix:
		if !c.prefix.Contains(dst) {
			return false
		}
	}
	if !c.proto.matches(ipProto) {
		return false
	}
	if c.proto == ProtoL2 {
		return hasPorts && port == L2Port
	}
	if len(c.ports) == 0 {
		return true
	}
	// A rule with ports only admits TCP and UDP packets whose port is known.
	return hasPorts && (ipProto == packet.ProtoTCP || ipProto == packet.ProtoUDP) && c.ports.Contains(port)
}

// coversAll reports whether the rule matches every packet from its source.
func (c *crule) coversAll() bool {
	return c.dest == DestDefault && c.proto == ProtoAny && len(c.ports) == 0
}

func first(cs []crule, dst netip.Addr, self bool, ipProto uint8, port uint16, hasPorts bool) int {
	for i := range cs {
		if cs[i].matches(dst, self, ipProto, port, hasPorts) {
			return cs[i].idx
		}
	}
	return -1
}

// Compile builds a matcher from config rules, with no organisation
// directory, at the current time.
func Compile(rules []Rule) *Matcher {
	entries := make([]Entry, len(rules))
	for i, r := range rules {
		entries[i] = Entry{Rule: r, Source: SourceConfig, Origin: SourceConfig}
	}
	return CompileAt(entries, nil, Self{}, time.Now())
}

// CompileAt builds a matcher from entries as they stand at now: expired
// rules (Until <= now) are left out, certificate identities in From are
// resolved against dir into per-address lists (so a decision stays a map
// lookup; recompile when dir changes), and rules whose To names destination
// nodes that self is not are left out. entries is not kept.
func CompileAt(entries []Entry, dir Directory, self Self, now time.Time) *Matcher {
	m := &Matcher{bySrc: make(map[netip.Addr]*srcRules), self: self.Addr}
	for _, e := range entries {
		if e.Expired(now) {
			continue
		}
		dest, prefix := e.To.Kind, e.To.Prefix
		if dest == DestNodes {
			if e.To.ID.Matches(self.Addr, self.Members) {
				dest = DestDefault
			} else if h, ok := self.hostedDest(e.To.ID); ok {
				dest, prefix = DestPrefix, netip.PrefixFrom(h, 128)
			} else {
				continue
			}
		}
		idx := len(m.entries)
		m.entries = append(m.entries, e)
		if !e.Until.IsZero() && (m.next.IsZero() || e.Until.Before(m.next)) {
			m.next = e.Until
		}
		c := crule{idx: idx, proto: e.Proto, ports: e.Ports, dest: dest, prefix: prefix}
		switch {
		case e.From.kind() == KindAny:
			m.any.add(c, e.Deny)
		case e.From.ByCert():
			if !e.Deny {
				m.byCert = true
			}
			for addr, members := range dir {
				if e.From.Matches(addr, members) {
					m.src(addr).add(c, e.Deny)
				}
			}
		case e.From.kind() == KindNode:
			c.named = true
			m.src(e.From.Addr).add(c, e.Deny)
		}
	}
	return m
}

func (m *Matcher) src(a netip.Addr) *srcRules {
	rs := m.bySrc[a]
	if rs == nil {
		rs = &srcRules{}
		m.bySrc[a] = rs
	}
	return rs
}

func (rs *srcRules) add(c crule, deny bool) {
	if deny {
		rs.deny = append(rs.deny, c)
	} else {
		rs.allow = append(rs.allow, c)
	}
}

// Allows reports whether an inbound packet from src with IP protocol ipProto
// to port, addressed to this node itself, is allowed. hasPorts is false
// when the packet carries no ports that were read (ICMP, other protocols).
func (m *Matcher) Allows(src netip.Addr, ipProto uint8, port uint16, hasPorts bool) bool {
	return m.AllowsTo(src, m.self, true, ipProto, port, hasPorts)
}

// AllowsTo reports whether an inbound packet from src to dst is allowed:
// some allow rule matches it and no deny rule does. self says dst is one
// of this node's own addresses (else it is a forwarded destination).
//
// Deny rules decide only what rules would admit (new inbound flows and
// connectionless packets); the filter passes replies to flows this node
// opened before consulting the matcher, so a deny never stops this node's
// own connections.
func (m *Matcher) AllowsTo(src, dst netip.Addr, self bool, ipProto uint8, port uint16, hasPorts bool) bool {
	rs := m.bySrc[src]
	if first(m.any.deny, dst, self, ipProto, port, hasPorts) >= 0 {
		return false
	}
	if rs != nil && first(rs.deny, dst, self, ipProto, port, hasPorts) >= 0 {
		return false
	}
	if first(m.any.allow, dst, self, ipProto, port, hasPorts) >= 0 {
		return true
	}
	return rs != nil && first(rs.allow, dst, self, ipProto, port, hasPorts) >= 0
}

// AllowsToHosted reports whether a packet from src to dst, the address of
// a device this node hosts, is allowed: no deny rule matches it as a
// forwarded destination, and an allow rule whose `to` names the device
// (its key or address, compiled to its /128, or that /128 itself) does.
// Rules without `to`, or "self", are about this node; a wider prefix
// (an offered route, an exit's ::/0, fc00::/8) opens no device: the
// device has no firewall of its own, and a rule meant for forwarded
// traffic must not open every phone the node hosts.
func (m *Matcher) AllowsToHosted(src, dst netip.Addr, ipProto uint8, port uint16, hasPorts bool) bool {
	rs := m.bySrc[src]
	if first(m.any.deny, dst, false, ipProto, port, hasPorts) >= 0 || (rs != nil && first(rs.deny, dst, false, ipProto, port, hasPorts) >= 0) {
		return false
	}
	named := func(cs []crule) bool {
		for i := range cs {
			if cs[i].dest == DestPrefix && cs[i].prefix.IsSingleIP() && cs[i].matches(dst, false, ipProto, port, hasPorts) {
				return true
			}
		}
		return false
	}
	return named(m.any.allow) || (rs != nil && named(rs.allow))
}

// Denies reports whether a deny rule refuses a packet from src to dst, a
// destination this node forwards to (not one of its own addresses): a
// hosted device's traffic into the overlay meets the home's deny rules
// about the device, as what comes to it does.
func (m *Matcher) Denies(src, dst netip.Addr, ipProto uint8, port uint16, hasPorts bool) bool {
	if first(m.any.deny, dst, false, ipProto, port, hasPorts) >= 0 {
		return true
	}
	rs := m.bySrc[src]
	return rs != nil && first(rs.deny, dst, false, ipProto, port, hasPorts) >= 0
}

// AllowsAny reports whether some allow rule could admit some inbound
// traffic from src, and no deny rule refuses everything from it. The
// handshake admission of unknown keys and fragments use it.
func (m *Matcher) AllowsAny(src netip.Addr) bool {
	rs := m.bySrc[src]
	for _, list := range [2][]crule{m.any.deny, rs.denies()} {
		for i := range list {
			if list[i].coversAll() {
				return false
			}
		}
	}
	return len(m.any.allow) > 0 || (rs != nil && len(rs.allow) > 0)
}

func (rs *srcRules) denies() []crule {
	if rs == nil {
		return nil
	}
	return rs.deny
}

// Names reports whether an allow rule names src itself by key or address
// (not "*" nor a certificate identity). Only such peers get their site
// prefix routed: it has just 56 bits, so an unknown key must not be able
// to claim one through a wildcard rule.
func (m *Matcher) Names(src netip.Addr) bool {
	if rs := m.bySrc[src]; rs != nil {
		for i := range rs.allow {
			if rs.allow[i].named {
				return true
			}
		}
	}
	return false
}

// ByCert reports whether some allow rule names its sources by certificate
// (group:, org:, name:). Then unknown keys may be members, so the node
// admits their handshake pending the certificate exchange.
func (m *Matcher) ByCert() bool { return m.byCert }

// NextExpiry returns the earliest Until among the compiled rules (zero:
// none). The owner recompiles (Store.Expire) at that time.
func (m *Matcher) NextExpiry() time.Time { return m.next }

// Decision is an explained verdict of the rules on one packet.
type Decision struct {
	Allowed bool
	Entry   *Entry // the deciding rule; nil for default deny
	Reason  string // "allowed by ...", "denied by ...", "default deny: no rule allows ..."
}

// Explain decides as AllowsTo does and says which rule decided. Of several
// matching rules of the deciding kind, the first in entry order is named.
// It allocates: not for the packet path.
func (m *Matcher) Explain(src, dst netip.Addr, self bool, ipProto uint8, port uint16, hasPorts bool) Decision {
	rs := m.bySrc[src]
	if rs == nil {
		rs = &srcRules{}
	}
	if dst == (netip.Addr{}) && self {
		dst = m.self
	}
	lowest := func(lists ...[]crule) int {
		best := -1
		for _, l := range lists {
			for i := range l {
				if l[i].matches(dst, self, ipProto, port, hasPorts) && (best < 0 || l[i].idx < best) {
					best = l[i].idx
				}
			}
		}
		return best
	}
	if i := lowest(m.any.deny, rs.deny); i >= 0 {
		e := m.entries[i]
		return Decision{Entry: &e, Reason: fmt.Sprintf("denied by %s rule %q", e.Origin, e.String())}
	}
	if i := lowest(m.any.allow, rs.allow); i >= 0 {
		e := m.entries[i]
		return Decision{Allowed: true, Entry: &e, Reason: fmt.Sprintf("allowed by %s rule %q", e.Origin, e.String())}
	}
	what := describe(ipProto, port, hasPorts)
	to := "this node"
	if !self {
		to = dst.String()
	}
	return Decision{Reason: fmt.Sprintf("default deny: no rule allows %s from %s to %s", what, src, to)}
}

func describe(ipProto uint8, port uint16, hasPorts bool) string {
	var name string
	switch ipProto {
	case packet.ProtoTCP:
		name = "tcp"
	case packet.ProtoUDP:
		name = "udp"
	case packet.ProtoICMPv6, packet.ProtoICMPv4:
		name = "icmp"
	default:
		name = fmt.Sprintf("ip proto %d", ipProto)
	}
	if hasPorts {
		return fmt.Sprintf("%s port %d", name, port)
	}
	return name
}

// Entries returns the compiled (unexpired, applicable) rules.
func (m *Matcher) Entries() []Entry { return append([]Entry(nil), m.entries...) }
