// Package policy owns who may reach this node: the allow rules (from config
// and from the admin API, persisted), the compiled matcher the packet filter
// consults, connection tracking (which end opened each flow, with quotas on
// the flows peers open), and the filter's verdicts and counters.
//
// Inbound is default deny. A packet from the overlay passes if an allow rule
// names its source identity (a key, an address, "*", or an organisation
// membership: group:, org:, name:) with a matching destination, protocol
// and port and no deny rule matches it, or if it answers a flow this node
// opened. Everything else is dropped and counted. A flow a peer opened
// never admits anything by itself. Deny rules beat allow rules whatever
// their order or source (config, admin API, organisation documents), but
// only decide what rules would admit: a deny never stops replies to flows
// this node opened itself.
package policy

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tomoe-net/tomoe/internal/packet"
)

// Proto is the protocol a rule allows.
type Proto uint8

// Protocols of a rule. ProtoICMP means ICMPv6, and ICMPv4 on tunnelled IPv4.
// ProtoL2 is the encapsulation of virtual Ethernet segments: VXLAN, UDP
// to port L2Port.
const (
	ProtoAny Proto = iota
	ProtoTCP
	ProtoUDP
	ProtoICMP
	ProtoL2
)

// L2Port is the UDP port of virtual Ethernet's VXLAN tunnels (IANA's).
const L2Port = 4789

// ParseProto parses tcp, udp, icmp, l2 or any ("" is any).
func ParseProto(s string) (Proto, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "any":
		return ProtoAny, nil
	case "tcp":
		return ProtoTCP, nil
	case "udp":
		return ProtoUDP, nil
	case "icmp", "icmpv6", "icmp6":
		return ProtoICMP, nil
	case "l2":
		return ProtoL2, nil
	}
	return 0, fmt.Errorf("protocol %q: use tcp, udp, icmp, l2 (virtual Ethernet) or any", s)
}

// UnmarshalText parses a protocol as ParseProto does.
func (p *Proto) UnmarshalText(b []byte) error {
	v, err := ParseProto(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// MarshalText gives the protocol's name.
func (p Proto) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

func (p Proto) String() string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMP:
		return "icmp"
	case ProtoL2:
		return "l2"
	}
	return "any"
}

// matches reports whether an IP protocol number falls under p.
func (p Proto) matches(ipProto uint8) bool {
	switch p {
	case ProtoAny:
		return true
	case ProtoTCP:
		return ipProto == packet.ProtoTCP
	case ProtoUDP:
		return ipProto == packet.ProtoUDP
	case ProtoICMP:
		return ipProto == packet.ProtoICMPv6 || ipProto == packet.ProtoICMPv4
	case ProtoL2:
		return ipProto == packet.ProtoUDP
	}
	return false
}

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

// Ports is a sorted, merged list of port ranges; empty means every port.
type Ports []PortRange

// ParsePorts parses "22,8000-8080" (spaces allowed). The empty string is
// every port.
func ParsePorts(s string) (Ports, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var out Ports
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("ports %q: empty element; write e.g. \"22,8000-8080\"", s)
		}
		lo, hi, isRange := strings.Cut(part, "-")
		l, err := parsePort(lo)
		if err != nil {
			return nil, fmt.Errorf("ports %q: %v", s, err)
		}
		h := l
		if isRange {
			if h, err = parsePort(hi); err != nil {
				return nil, fmt.Errorf("ports %q: %v", s, err)
			}
			if h < l {
				return nil, fmt.Errorf("ports %q: range %s runs backwards", s, part)
			}
		}
		out = append(out, PortRange{l, h})
	}
	slices.SortFunc(out, func(a, b PortRange) int { return int(a.Lo) - int(b.Lo) })
	merged := out[:1]
	for _, r := range out[1:] {
		last := &merged[len(merged)-1]
		if uint32(r.Lo) <= uint32(last.Hi)+1 {
			last.Hi = max(last.Hi, r.Hi)
			continue
		}
		merged = append(merged, r)
	}
	return merged, nil
}

func parsePort(s string) (uint16, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port (1-65535)", s)
	}
	return uint16(n), nil
}

// Contains reports whether port is in the list (an empty list holds all).
func (ps Ports) Contains(port uint16) bool {
	if len(ps) == 0 {
		return true
	}
	for _, r := range ps {
		if port >= r.Lo && port <= r.Hi {
			return true
		}
	}
	return false
}

// UnmarshalText parses a port list as ParsePorts does.
func (ps *Ports) UnmarshalText(b []byte) error {
	v, err := ParsePorts(string(b))
	if err != nil {
		return err
	}
	*ps = v
	return nil
}

// MarshalText gives the canonical form ("" for every port).
func (ps Ports) MarshalText() ([]byte, error) { return []byte(ps.String()), nil }

// String gives the canonical form ("" for every port).
func (ps Ports) String() string {
	var b strings.Builder
	for i, r := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(r.Lo)))
		if r.Hi != r.Lo {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(int(r.Hi)))
		}
	}
	return b.String()
}

// Rule allows (or, with Deny, denies) inbound traffic from an identity to
// a destination, until an optional time.
type Rule struct {
	From  Identity
	Proto Proto
	Ports Ports
	Deny  bool      // a deny rule: beats every allow rule, whatever its source
	To    Dest      // zero: this node and every route it offers
	Until time.Time // zero: never expires; the rule applies while now < Until
}

// RuleSpec is a rule in its textual form, as config, the admin API and
// organisation documents carry it.
type RuleSpec struct {
	Deny                          bool
	From, To, Proto, Ports, Until string // Until: RFC 3339, "" for none
}

// ParseRule builds an allow rule from its three textual fields.
func ParseRule(from, proto, ports string) (Rule, error) {
	return ParseRuleSpec(RuleSpec{From: from, Proto: proto, Ports: ports})
}

// ParseRuleSpec builds a rule from its textual form.
func ParseRuleSpec(s RuleSpec) (Rule, error) {
	id, err := ParseIdentity(s.From)
	if err != nil {
		return Rule{}, err
	}
	to, err := ParseDest(s.To)
	if err != nil {
		return Rule{}, err
	}
	p, err := ParseProto(s.Proto)
	if err != nil {
		return Rule{}, err
	}
	ps, err := ParsePorts(s.Ports)
	if err != nil {
		return Rule{}, err
	}
	until, err := ParseUntil(s.Until)
	if err != nil {
		return Rule{}, err
	}
	r := Rule{From: id, Proto: p, Ports: ps, Deny: s.Deny, To: to, Until: until}
	if err := r.Check(); err != nil {
		return Rule{}, err
	}
	return r, nil
}

// ParseUntil parses an RFC 3339 time ("" is none: the zero time).
func ParseUntil(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("until %q: not an RFC 3339 time such as 2026-12-31T18:00:00Z", s)
	}
	return t.UTC(), nil
}

// Spec gives the rule's textual form.
func (r Rule) Spec() RuleSpec {
	s := RuleSpec{Deny: r.Deny, From: r.From.String(), To: r.To.String(), Proto: r.Proto.String(), Ports: r.Ports.String()}
	if !r.Until.IsZero() {
		s.Until = r.Until.UTC().Format(time.RFC3339)
	}
	return s
}

// Check reports a rule whose parts contradict each other: ports with
// proto icmp. ParseRule checks it; a rule assembled from typed parts (a
// config file's) is checked with it.
func (r Rule) Check() error {
	if r.Proto == ProtoICMP && len(r.Ports) > 0 {
		return errors.New("ports make no sense with proto icmp: drop ports, or use tcp/udp")
	}
	if r.Proto == ProtoL2 && len(r.Ports) > 0 {
		return fmt.Errorf("ports make no sense with proto l2 (it is UDP port %d): drop ports", L2Port)
	}
	if r.From.IsZero() {
		return errors.New("rule without from: name who it is about")
	}
	return nil
}

// Equal reports whether two rules decide exactly the same traffic the same
// way. Until is not compared.
func (r Rule) Equal(o Rule) bool {
	return r.Deny == o.Deny && r.From.Same(o.From) && r.To.Equal(o.To) && r.Proto == o.Proto && slices.Equal(r.Ports, o.Ports)
}

// Expired reports whether the rule no longer applies at now.
func (r Rule) Expired(now time.Time) bool { return !r.Until.IsZero() && !now.Before(r.Until) }

// String renders the rule the way the CLI accepts it.
func (r Rule) String() string {
	s := "from " + r.From.String()
	if r.Deny {
		s = "deny " + s
	}
	if r.To.Kind != DestDefault {
		s += " to " + r.To.String()
	}
	s += " proto " + r.Proto.String()
	if len(r.Ports) > 0 {
		s += " ports " + r.Ports.String()
	}
	if !r.Until.IsZero() {
		s += " until " + r.Until.UTC().Format(time.RFC3339)
	}
	return s
}

// allows reports whether a packet of ipProto to port (hasPorts false: no
// transport ports known) is allowed by the protocol and port part of r.
func (r *Rule) allows(ipProto uint8, port uint16, hasPorts bool) bool {
	if !r.Proto.matches(ipProto) {
		return false
	}
	if len(r.Ports) == 0 {
		return true
	}
	// A rule with ports only admits TCP and UDP packets whose port is known.
	return hasPorts && (ipProto == packet.ProtoTCP || ipProto == packet.ProtoUDP) && r.Ports.Contains(port)
}
