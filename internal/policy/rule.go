// Package policy owns who may reach this node: the allow rules (from config
// and from the admin API, persisted), the compiled matcher the packet filter
// consults, connection tracking (which end opened each flow, with quotas on
// the flows peers open), and the filter's verdicts and counters.
//
// Inbound is default deny. A packet from the overlay passes if an allow rule
// names its source identity (or "*") with a matching protocol and port, or if
// it answers a flow this node opened. Everything else is dropped and counted.
// A flow a peer opened never admits anything by itself.
package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/packet"
)

// Identity names who a rule is about: one node (by public key or node
// address) or everyone ("*"). Rules match by node address, which a key
// determines; the key form is kept for display.
type Identity struct {
	Any  bool
	Addr netip.Addr         // node address; valid unless Any
	Key  identity.PublicKey // set when the identity was given as a key
}

// ParseIdentity parses "*", a node address in fc00::/8, or a base64 public key.
func ParseIdentity(s string) (Identity, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return Identity{}, errors.New(`empty identity: give a node address (fc..), a public key (base64) or "*"`)
	case s == "*":
		return Identity{Any: true}, nil
	case strings.Contains(s, ":"):
		a, err := netip.ParseAddr(strings.Trim(s, "[]"))
		if err != nil {
			return Identity{}, fmt.Errorf("identity %q: not an IPv6 address: %v", s, err)
		}
		if a.Zone() != "" || !identity.IsNodeAddress(a) {
			return Identity{}, fmt.Errorf("identity %q: a node address is in fc00::/8 (see `tomoe key address PUBKEY`)", s)
		}
		return Identity{Addr: a}, nil
	default:
		k, err := identity.ParsePublicKey(s)
		if err != nil {
			return Identity{}, fmt.Errorf(`identity %q: neither a node address (fc..), a public key nor "*": %v`, s, err)
		}
		return Identity{Addr: k.Address(), Key: k}, nil
	}
}

// String gives the form the identity was written in.
func (id Identity) String() string {
	switch {
	case id.Any:
		return "*"
	case !id.Key.IsZero():
		return id.Key.String()
	}
	return id.Addr.String()
}

// Same reports whether two identities name the same nodes (a key and its
// address are the same identity).
func (id Identity) Same(o Identity) bool {
	if id.Any || o.Any {
		return id.Any == o.Any
	}
	return id.Addr == o.Addr
}

// Covers reports whether id matches the node with address a.
func (id Identity) Covers(a netip.Addr) bool { return id.Any || id.Addr == a }

// IsZero reports whether id names nobody (the zero Identity: unset).
func (id Identity) IsZero() bool { return !id.Any && !id.Addr.IsValid() }

// UnmarshalText parses an identity as ParseIdentity does, so that config
// files carry identities as typed values.
func (id *Identity) UnmarshalText(b []byte) error {
	v, err := ParseIdentity(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// MarshalText gives the form the identity was written in.
func (id Identity) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// Proto is the protocol a rule allows.
type Proto uint8

// Protocols of a rule. ProtoICMP means ICMPv6, and ICMPv4 on tunnelled IPv4.
const (
	ProtoAny Proto = iota
	ProtoTCP
	ProtoUDP
	ProtoICMP
)

// ParseProto parses tcp, udp, icmp or any ("" is any).
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
	}
	return 0, fmt.Errorf("protocol %q: use tcp, udp, icmp or any", s)
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

// Rule allows inbound traffic from an identity.
type Rule struct {
	From  Identity
	Proto Proto
	Ports Ports
}

// ParseRule builds a rule from its three textual fields, as config and the
// admin API carry them.
func ParseRule(from, proto, ports string) (Rule, error) {
	id, err := ParseIdentity(from)
	if err != nil {
		return Rule{}, err
	}
	p, err := ParseProto(proto)
	if err != nil {
		return Rule{}, err
	}
	ps, err := ParsePorts(ports)
	if err != nil {
		return Rule{}, err
	}
	r := Rule{From: id, Proto: p, Ports: ps}
	if err := r.Check(); err != nil {
		return Rule{}, err
	}
	return r, nil
}

// Check reports a rule whose parts contradict each other: ports with
// proto icmp. ParseRule checks it; a rule assembled from typed parts (a
// config file's) is checked with it.
func (r Rule) Check() error {
	if r.Proto == ProtoICMP && len(r.Ports) > 0 {
		return errors.New("ports make no sense with proto icmp: drop ports, or use tcp/udp")
	}
	return nil
}

// Equal reports whether two rules allow exactly the same traffic.
func (r Rule) Equal(o Rule) bool {
	return r.From.Same(o.From) && r.Proto == o.Proto && slices.Equal(r.Ports, o.Ports)
}

// String renders the rule the way the CLI accepts it.
func (r Rule) String() string {
	s := "from " + r.From.String() + " proto " + r.Proto.String()
	if len(r.Ports) > 0 {
		s += " ports " + r.Ports.String()
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
