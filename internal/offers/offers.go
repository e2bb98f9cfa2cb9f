// Package offers owns the route offer protocol between nodes: the message a
// node sends a peer over the overlay to say which prefixes it forwards (and
// to ask the peer for its own offer), and the decision which offered
// prefixes this node accepts. The messages travel as UDP to ControlPort on
// the peers' node addresses, inside WireGuard: the source address, which
// WireGuard has checked, authenticates them. Everything here is pure.
package offers

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/tomoe-net/tomoe/internal/cidr"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// ControlPort is the overlay UDP port of a node address that carries route
// offers. The node itself answers it; local programs cannot use it.
const ControlPort = 4610

// Limits keep a message within one packet of the minimum overlay MTU.
const (
	MaxRoutes   = 48 // prefixes one node may offer
	MaxAccepted = 16 // prefixes echoed back in Accepted (informational)
	maxMessage  = 8 + 2 + (MaxRoutes+MaxAccepted)*18
)

// Message types.
const (
	TypeRequest = 1 // "send me your offer"
	TypeOffer   = 2 // the sender's complete offer (empty: it offers nothing)
)

const version = 1

// Message is one control message.
type Message struct {
	Type uint8
	// Boot and Seq order offers from one sender: Boot is random per start
	// of the sender, Seq grows with every change.
	Boot, Seq uint32
	// Routes are the prefixes the sender forwards.
	Routes []netip.Prefix
	// Accepted are the prefixes of the receiver's own offer that the sender
	// has installed, so the receiver can tell its user whether return
	// traffic will find its way.
	Accepted []netip.Prefix
}

// Marshal encodes m: version, type, boot, seq, then the two prefix lists,
// each a count byte and entries of (family 4|6, bits, address bytes).
func (m *Message) Marshal() ([]byte, error) {
	if len(m.Routes) > MaxRoutes {
		return nil, fmt.Errorf("offer: %d routes, at most %d", len(m.Routes), MaxRoutes)
	}
	acc := m.Accepted
	if len(acc) > MaxAccepted {
		acc = acc[:MaxAccepted]
	}
	b := make([]byte, 10, maxMessage)
	b[0], b[1] = version, m.Type
	binary.BigEndian.PutUint32(b[2:6], m.Boot)
	binary.BigEndian.PutUint32(b[6:10], m.Seq)
	if m.Type == TypeRequest {
		return b, nil
	}
	for _, list := range [][]netip.Prefix{m.Routes, acc} {
		b = append(b, byte(len(list)))
		for _, p := range list {
			a := p.Addr()
			if a.Is4() {
				b = append(b, 4, byte(p.Bits()))
				v := a.As4()
				b = append(b, v[:]...)
			} else {
				b = append(b, 6, byte(p.Bits()))
				v := a.As16()
				b = append(b, v[:]...)
			}
		}
	}
	return b, nil
}

var errMessage = errors.New("malformed route offer")

// Unmarshal decodes a message strictly: known version and type, exact
// length, canonical prefixes that may be routed (see Routable).
func Unmarshal(b []byte) (Message, error) {
	var m Message
	if len(b) < 10 || len(b) > maxMessage || b[0] != version {
		return m, errMessage
	}
	m.Type = b[1]
	m.Boot = binary.BigEndian.Uint32(b[2:6])
	m.Seq = binary.BigEndian.Uint32(b[6:10])
	switch m.Type {
	case TypeRequest:
		if len(b) != 10 {
			return m, errMessage
		}
		return m, nil
	case TypeOffer:
	default:
		return m, errMessage
	}
	rest := b[10:]
	for i, limit := range []int{MaxRoutes, MaxAccepted} {
		if len(rest) < 1 {
			return m, errMessage
		}
		n := int(rest[0])
		rest = rest[1:]
		if n > limit {
			return m, errMessage
		}
		list := make([]netip.Prefix, 0, n)
		for range n {
			if len(rest) < 2 {
				return m, errMessage
			}
			fam, bits := rest[0], int(rest[1])
			rest = rest[2:]
			var a netip.Addr
			switch {
			case fam == 4 && len(rest) >= 4 && bits <= 32:
				a = netip.AddrFrom4([4]byte(rest[:4]))
				rest = rest[4:]
			case fam == 6 && len(rest) >= 16 && bits <= 128:
				a = netip.AddrFrom16([16]byte(rest[:16]))
				rest = rest[16:]
			default:
				return m, errMessage
			}
			p := netip.PrefixFrom(a, bits)
			if p.Masked() != p || !Routable(p) {
				return m, errMessage
			}
			list = append(list, p)
		}
		if i == 0 {
			m.Routes = list
		} else {
			m.Accepted = list
		}
	}
	if len(rest) != 0 {
		return m, errMessage
	}
	return m, nil
}

// Routable reports whether p may be tunnelled as a route: not inside the
// overlay's own spaces (which route by key), not loopback, link-local or
// multicast. Default routes are routable (exit nodes); see Pieces.
func Routable(p netip.Prefix) bool {
	if p.Bits() == 0 {
		return true
	}
	if p.Overlaps(identity.OverlayPrefix) || p.Overlaps(identity.SitePrefixSpace) {
		return false
	}
	a := p.Addr()
	if a.Is4In6() || a.Zone() != "" {
		return false
	}
	return !(a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || (a.Is6() && p.Overlaps(linkLocal6)))
}

var linkLocal6 = netip.MustParsePrefix("fe80::/10")

// Rule accepts the prefixes that From offers within Prefix.
type Rule struct {
	From   policy.Identity
	Prefix netip.Prefix
}

// Offerer is a node whose offer is judged, as this node sees it.
type Offerer struct {
	// Addr is its node address, which rules name.
	Addr netip.Addr
	// Space is this node's tun.ipv4_prefix, where IPv4 addresses are
	// derived from keys, and IPv4 the address the offerer's key derives
	// in it (identity.IPv4Address).
	Space netip.Prefix
	IPv4  netip.Addr
}

// NewOfferer describes the node with key k to a node whose tun.ipv4_prefix
// is space.
func NewOfferer(k identity.PublicKey, space netip.Prefix) Offerer {
	o := Offerer{Addr: k.Address(), Space: space}
	o.IPv4, _ = k.IPv4Address(space)
	return o
}

// OwnIPv4 reports whether p is the offerer's derived IPv4 address as a /32.
func (o Offerer) OwnIPv4(p netip.Prefix) bool {
	return o.IPv4.IsValid() && p == netip.PrefixFrom(o.IPv4, 32)
}

// Covers reports whether r accepts prefix p offered by from: p lies within
// r's prefix, and
//   - a default-route rule accepts the default route only: accepting an
//     exit node must not let it take over the host's LAN or other peers'
//     prefixes with more specific routes;
//   - a "*" rule accepts an IPv4 prefix that binds keys (BindsKeys) only
//     if it is the offerer's own derived /32, so that no peer can claim
//     another's address, whichever offers first.
func (r Rule) Covers(from Offerer, p netip.Prefix) bool {
	return r.within(from, p) && !(r.From.Any && BindsKeys(from.Space, p) && !from.OwnIPv4(p))
}

// within is Covers without the binding of addresses to keys.
func (r Rule) within(from Offerer, p netip.Prefix) bool {
	if r.Prefix.Bits() == 0 && p.Bits() != 0 {
		return false
	}
	return r.From.Covers(from.Addr) && p.Addr().BitLen() == r.Prefix.Addr().BitLen() &&
		p.Bits() >= r.Prefix.Bits() && r.Prefix.Contains(p.Addr())
}

// BindsKeys reports whether an offer of p claims IPv4 addresses that
// belong to keys, which a "*" rule grants only to their own key: any /32
// (one node's address, explicit or derived), and any prefix but the
// default route that overlaps space, where addresses are derived (a
// shorter prefix there would capture the addresses of nodes whose own
// /32 is not installed).
func BindsKeys(space, p netip.Prefix) bool {
	return p.Addr().Is4() && p.Bits() > 0 && (p.Bits() == 32 || (space.IsValid() && p.Overlaps(space)))
}

// Accepted returns the prefixes offered by from that some rule accepts,
// in offer order.
func Accepted(rules []Rule, from Offerer, offered []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range offered {
		if slices.ContainsFunc(rules, func(r Rule) bool { return r.Covers(from, p) }) {
			out = append(out, p)
		}
	}
	return out
}

// NotOwnAddress reports whether only the binding of addresses to keys
// keeps the rules from accepting p from from: a "*" rule covers p but p
// is not the offerer's derived address. (For telling the user why.)
func NotOwnAddress(rules []Rule, from Offerer, p netip.Prefix) bool {
	return !slices.ContainsFunc(rules, func(r Rule) bool { return r.Covers(from, p) }) &&
		slices.ContainsFunc(rules, func(r Rule) bool { return r.within(from, p) })
}

// Wants reports whether any rule could accept something from the node at
// from: then this node asks it for its offer.
func Wants(rules []Rule, from netip.Addr) bool {
	for _, r := range rules {
		if r.From.Covers(from) {
			return true
		}
	}
	return false
}

// reserved are the overlay's own spaces, which an exit route never covers:
// a peer's AllowedIPs that held them would let that peer send with the
// source address of any node it is not.
var reserved = []netip.Prefix{identity.OverlayPrefix, identity.SitePrefixSpace}

// Pieces is what route p becomes in AllowedIPs: p itself, except that
//   - a default route leaves out the overlay's spaces;
//   - any route leaves out the host's own networks within it (host: see
//     routes.Host), so that the peer cannot send from the host's LAN;
//
// and a route so split also leaves out, exactly, the others (prefixes
// routed to other peers): WireGuard gives each exact prefix to one peer,
// so a piece must never equal another peer's route.
func Pieces(p netip.Prefix, others, host []netip.Prefix) []netip.Prefix {
	var holes []netip.Prefix
	if p.Bits() == 0 {
		holes = append(holes, reserved...)
	}
	for _, h := range host {
		if h.Addr().BitLen() == p.Addr().BitLen() && h.Bits() > p.Bits() && p.Contains(h.Addr()) {
			holes = append(holes, h)
		}
	}
	if len(holes) == 0 {
		return []netip.Prefix{p}
	}
	return cidr.Subtract(p, append(holes, others...))
}

// notForwarded are destinations an offering node never forwards to, even
// for a default route: its own loopback, link-local addresses (a cloud's
// metadata service lives at 169.254.169.254), the IPv6 metadata service
// of AWS (fd00:ec2::254, a unique local address), multicast and broadcast.
var notForwarded = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"), netip.MustParsePrefix("255.255.255.255/32"),
	netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("fe80::/10"), netip.MustParsePrefix("ff00::/8"),
	netip.MustParsePrefix("fd00:ec2::254/128"),
}

// Forwarded returns the destinations the offering node forwards for route
// p: Pieces(p, nil, nil) without loopback, link-local, metadata services,
// multicast and broadcast.
func Forwarded(p netip.Prefix) []netip.Prefix {
	return cidr.Subtract(p, append(slices.Clone(reserved), notForwarded...))
}

// NeverForwarded reports whether a is a destination no offering node
// forwards to (see Forwarded): the proxies refuse it too.
func NeverForwarded(a netip.Addr) bool {
	a = a.Unmap()
	return slices.ContainsFunc(notForwarded, func(p netip.Prefix) bool { return p.Contains(a) })
}
