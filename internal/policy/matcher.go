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
		if e.To.Kind == DestNodes && !e.To.ID.Matches(self.Addr, self.Members) {
			continue
		}
		idx := len(m.entries)
		m.entries = append(m.entries, e)
		if !e.Until.IsZero() && (m.next.IsZero() || e.Until.Before(m.next)) {
			m.next = e.Until
		}
		c := crule{idx: idx, proto: e.Proto, ports: e.Ports, dest: e.To.Kind, prefix: e.To.Prefix}
		if c.dest == DestNodes {
			c.dest = DestDefault
		}
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
