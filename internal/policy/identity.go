package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// Member is one verified organisation membership of a node.
type Member struct {
	Org    string   // the organisation's name as this node's config names it
	Name   string   // certificate name, e.g. alice@sales.acme
	Groups []string // the certificate's groups in Org
}

// Directory maps node addresses to their verified memberships. It is
// immutable once handed over: the caller copies it on write.
type Directory map[netip.Addr][]Member

// IdentityKind says how an Identity names nodes.
type IdentityKind uint8

// Kinds of identity. The zero kind is unset; literals written before kinds
// existed (Identity{Any: true}, Identity{Addr: a}) are read as KindAny and
// KindNode (see Identity.Kind).
const (
	KindUnset IdentityKind = iota
	KindAny                // "*": every node
	KindNode               // one node, by public key or node address
	KindGroup              // group:ORG/GROUP: verified members of ORG in GROUP
	KindOrg                // org:ORG: every verified member of ORG
	KindName               // name:GLOB: verified members whose certificate name matches GLOB
)

// Identity names who a rule is about: one node (by public key or node
// address), everyone ("*"), or nodes by their organisation certificate
// (group:, org:, name:). Key and address rules match by node address, which
// a key determines; the key form is kept for display. Certificate rules
// match the memberships a Directory gives for an address.
type Identity struct {
	Kind  IdentityKind
	Any   bool
	Addr  netip.Addr         // node address (KindNode)
	Key   identity.PublicKey // set when the identity was given as a key
	Org   string             // KindGroup, KindOrg
	Group string             // KindGroup
	Glob  string             // KindName
}

// Identity prefixes of certificate identities.
const (
	prefixGroup = "group:"
	prefixOrg   = "org:"
	prefixName  = "name:"
)

// ParseIdentity parses "*", a node address in fc00::/8, a base64 public key,
// group:ORG/GROUP, org:ORG or name:GLOB.
func ParseIdentity(s string) (Identity, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return Identity{}, errors.New(`empty identity: give a node address (fc..), a public key (base64), "*", group:ORG/GROUP, org:ORG or name:GLOB`)
	case s == "*":
		return Identity{Kind: KindAny, Any: true}, nil
	case strings.HasPrefix(s, prefixGroup):
		org, group, ok := strings.Cut(s[len(prefixGroup):], "/")
		if !ok {
			return Identity{}, fmt.Errorf("identity %q: write group:ORG/GROUP, e.g. group:acme/sales", s)
		}
		if err := checkOrgName(org); err != nil {
			return Identity{}, fmt.Errorf("identity %q: %v", s, err)
		}
		if err := checkName(group, "group", 63, "a-z 0-9 . _ -", isGroupChar); err != nil {
			return Identity{}, fmt.Errorf("identity %q: %v", s, err)
		}
		return Identity{Kind: KindGroup, Org: org, Group: group}, nil
	case strings.HasPrefix(s, prefixOrg):
		org := s[len(prefixOrg):]
		if err := checkOrgName(org); err != nil {
			return Identity{}, fmt.Errorf("identity %q: %v", s, err)
		}
		return Identity{Kind: KindOrg, Org: org}, nil
	case strings.HasPrefix(s, prefixName):
		glob := s[len(prefixName):]
		if err := checkName(glob, "name pattern", 128, "a-z 0-9 @ . _ + - and * (any run of characters)", isGlobChar); err != nil {
			return Identity{}, fmt.Errorf("identity %q: %v", s, err)
		}
		return Identity{Kind: KindName, Glob: glob}, nil
	case strings.Contains(s, ":"):
		a, err := netip.ParseAddr(strings.Trim(s, "[]"))
		if err != nil {
			return Identity{}, fmt.Errorf("identity %q: not an IPv6 address, nor group:, org: or name: (%v)", s, err)
		}
		if a.Zone() != "" || !identity.IsNodeAddress(a) {
			return Identity{}, fmt.Errorf("identity %q: a node address is in fc00::/8 (see `tomoe key address PUBKEY`)", s)
		}
		return Identity{Kind: KindNode, Addr: a}, nil
	default:
		k, err := identity.ParsePublicKey(s)
		if err != nil {
			return Identity{}, fmt.Errorf(`identity %q: neither a node address (fc..), a public key, "*", group:, org: nor name:: %v`, s, err)
		}
		return Identity{Kind: KindNode, Addr: k.Address(), Key: k}, nil
	}
}

func checkOrgName(org string) error {
	return checkName(org, "organisation name", 63, "a-z 0-9 -", isOrgChar)
}

func isOrgChar(c byte) bool   { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' }
func isGroupChar(c byte) bool { return isOrgChar(c) || c == '.' || c == '_' }
func isGlobChar(c byte) bool  { return isGroupChar(c) || c == '@' || c == '+' || c == '*' }

func checkName(s, what string, maxLen int, allowed string, ok func(byte) bool) error {
	if s == "" {
		return fmt.Errorf("empty %s", what)
	}
	if len(s) > maxLen {
		return fmt.Errorf("%s longer than %d characters", what, maxLen)
	}
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return fmt.Errorf("%s %q: character %q not allowed (use %s)", what, s, s[i], allowed)
		}
	}
	return nil
}

// kind returns how id names nodes, reading the legacy fields (Any, Addr)
// when Kind is unset.
func (id Identity) kind() IdentityKind {
	switch {
	case id.Kind != KindUnset:
		return id.Kind
	case id.Any:
		return KindAny
	case id.Addr.IsValid():
		return KindNode
	}
	return KindUnset
}

// String gives the form the identity was written in.
func (id Identity) String() string {
	switch id.kind() {
	case KindAny:
		return "*"
	case KindGroup:
		return prefixGroup + id.Org + "/" + id.Group
	case KindOrg:
		return prefixOrg + id.Org
	case KindName:
		return prefixName + id.Glob
	}
	if !id.Key.IsZero() {
		return id.Key.String()
	}
	return id.Addr.String()
}

// ByCert reports whether id names nodes by organisation certificate
// (group:, org:, name:) rather than by key or address.
func (id Identity) ByCert() bool {
	switch id.kind() {
	case KindGroup, KindOrg, KindName:
		return true
	}
	return false
}

// Same reports whether two identities name the same nodes (a key and its
// address are the same identity; certificate identities are the same when
// written the same).
func (id Identity) Same(o Identity) bool {
	k := id.kind()
	if k != o.kind() {
		return false
	}
	switch k {
	case KindAny, KindUnset:
		return true
	case KindNode:
		return id.Addr == o.Addr
	}
	return id.Org == o.Org && id.Group == o.Group && id.Glob == o.Glob
}

// Covers reports whether id matches the node with address a by key,
// address or "*". Certificate identities cover no address by themselves:
// use Matches with the node's memberships.
func (id Identity) Covers(a netip.Addr) bool {
	switch id.kind() {
	case KindAny:
		return true
	case KindNode:
		return id.Addr == a
	}
	return false
}

// Matches reports whether id matches the node with address addr and the
// verified memberships members.
func (id Identity) Matches(addr netip.Addr, members []Member) bool {
	switch id.kind() {
	case KindAny, KindNode:
		return id.Covers(addr)
	case KindGroup:
		for _, m := range members {
			if m.Org == id.Org && slices.Contains(m.Groups, id.Group) {
				return true
			}
		}
	case KindOrg:
		for _, m := range members {
			if m.Org == id.Org {
				return true
			}
		}
	case KindName:
		for _, m := range members {
			if globMatch(id.Glob, m.Name) {
				return true
			}
		}
	}
	return false
}

// globMatch reports whether name matches pattern, where '*' matches any run
// of characters (including none) and every other byte matches itself.
// Linear backtracking on the last star; no allocation.
func globMatch(pattern, name string) bool {
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// IsZero reports whether id names nobody (the zero Identity: unset).
func (id Identity) IsZero() bool { return id.kind() == KindUnset }

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
