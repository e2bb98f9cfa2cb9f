package policy

import "net/netip"

// Matcher is an immutable, compiled rule set. Build a new one on every
// change and swap it in: readers on the packet path never lock.
type Matcher struct {
	byAddr map[netip.Addr][]Rule
	any    []Rule
}

// Compile builds a matcher from rules.
func Compile(rules []Rule) *Matcher {
	m := &Matcher{byAddr: make(map[netip.Addr][]Rule)}
	for _, r := range rules {
		if r.From.Any {
			m.any = append(m.any, r)
			continue
		}
		m.byAddr[r.From.Addr] = append(m.byAddr[r.From.Addr], r)
	}
	return m
}

// Allows reports whether an inbound packet from src with IP protocol ipProto
// to port is allowed. hasPorts is false when the packet carries no ports
// that were read (ICMP, other protocols).
func (m *Matcher) Allows(src netip.Addr, ipProto uint8, port uint16, hasPorts bool) bool {
	for i := range m.any {
		if m.any[i].allows(ipProto, port, hasPorts) {
			return true
		}
	}
	rs := m.byAddr[src]
	for i := range rs {
		if rs[i].allows(ipProto, port, hasPorts) {
			return true
		}
	}
	return false
}

// AllowsAny reports whether any rule admits some inbound traffic from src.
// The handshake admission of unknown keys and fragments use it.
func (m *Matcher) AllowsAny(src netip.Addr) bool {
	return len(m.any) > 0 || len(m.byAddr[src]) > 0
}

// Names reports whether a rule names src itself (not only "*"). Only such
// peers get their site prefix routed: it has just 56 bits, so an unknown key
// must not be able to claim one through a wildcard rule.
func (m *Matcher) Names(src netip.Addr) bool {
	return len(m.byAddr[src]) > 0
}
