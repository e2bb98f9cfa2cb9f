package policy

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// DestKind says what a rule's destination (its `to`) is.
type DestKind uint8

// Kinds of destination.
const (
	// DestDefault (no `to`): this node and every route it offers, the
	// meaning rules had before destinations existed.
	DestDefault DestKind = iota
	// DestSelf ("self"): this node's own addresses only (node address,
	// site prefix, overlay IPv4), not the routes it forwards.
	DestSelf
	// DestPrefix (an IP prefix or address): destinations inside it,
	// forwarded or this node's own.
	DestPrefix
	// DestNodes (group:, org:, name:, a key or node address): the
	// destination NODES the rule is about. It applies on a node that
	// matches, to all its traffic as DestDefault does, and on no other
	// node. Meant for organisation policy shared by many nodes.
	DestNodes
)

// Dest is where a rule lets traffic go.
type Dest struct {
	Kind   DestKind
	Prefix netip.Prefix // DestPrefix; masked
	ID     Identity     // DestNodes
}

// ParseDest parses a rule's `to`: "" (this node and its routes), "self", an
// IP prefix or non-node address (a forwarded destination), or an identity
// of destination nodes (group:ORG/GROUP, org:ORG, name:GLOB, key or node
// address).
func ParseDest(s string) (Dest, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return Dest{}, nil
	case s == "self":
		return Dest{Kind: DestSelf}, nil
	case s == "*":
		return Dest{}, fmt.Errorf(`to %q: leave "to" out to mean this node and every route it offers`, s)
	case strings.Contains(s, "/") && !strings.HasPrefix(s, prefixGroup) && !isKey(s):
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return Dest{}, fmt.Errorf("to %q: not an IP prefix (e.g. 10.1.0.0/16 or fd00:1::/64): %v", s, err)
		}
		return Dest{Kind: DestPrefix, Prefix: p.Masked()}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return Dest{}, fmt.Errorf("to %q: drop the zone", s)
		}
		if !identity.IsNodeAddress(a) {
			return Dest{Kind: DestPrefix, Prefix: netip.PrefixFrom(a, a.BitLen())}, nil
		}
	}
	id, err := ParseIdentity(s)
	if err != nil {
		return Dest{}, fmt.Errorf(`to: %v (or use "self", an IP prefix or address)`, err)
	}
	if id.kind() == KindAny {
		return Dest{}, nil
	}
	return Dest{Kind: DestNodes, ID: id}, nil
}

// isKey reports whether s is a public key (base64 may hold a '/').
func isKey(s string) bool {
	_, err := identity.ParsePublicKey(s)
	return err == nil
}

// String gives the written form ("" for DestDefault).
func (d Dest) String() string {
	switch d.Kind {
	case DestSelf:
		return "self"
	case DestPrefix:
		if d.Prefix.IsSingleIP() {
			return d.Prefix.Addr().String()
		}
		return d.Prefix.String()
	case DestNodes:
		return d.ID.String()
	}
	return ""
}

// Equal reports whether two destinations are the same.
func (d Dest) Equal(o Dest) bool {
	return d.Kind == o.Kind && d.Prefix == o.Prefix && (d.Kind != DestNodes || d.ID.Same(o.ID))
}

// UnmarshalText parses a destination as ParseDest does.
func (d *Dest) UnmarshalText(b []byte) error {
	v, err := ParseDest(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalText gives the written form.
func (d Dest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }
