package config

import (
	"fmt"
	"strings"

	"github.com/tomoe-net/tomoe/internal/policy"
)

// AdminAllow is one [[admin.allow]] entry: an identity that may use this
// node's admin API (and web UI) over the overlay, on the node address,
// TCP port 4680. The entry admits the identity to that port by itself.
type AdminAllow struct {
	// From is a node address, a public key, group:ORG/GROUP, org:ORG or
	// name:GLOB (not "*": the admin API is not for everyone).
	From policy.Identity `toml:"from"`
	// Role is "read" (GET only) or "write" (every change too).
	Role AdminRole `toml:"role"`
}

// AdminRole is what an identity may do through the admin API over the
// overlay. (Not a string type: the TOML decoder would take any string
// without asking UnmarshalText.)
type AdminRole uint8

// Admin roles; the zero role is unset.
const (
	RoleRead  AdminRole = 1 // every GET: status, peers, policy, routes, services, events
	RoleWrite AdminRole = 2 // every change too
)

func (r AdminRole) String() string {
	switch r {
	case RoleRead:
		return "read"
	case RoleWrite:
		return "write"
	}
	return ""
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (r *AdminRole) UnmarshalText(b []byte) error {
	switch strings.ToLower(strings.TrimSpace(string(b))) {
	case "read":
		*r = RoleRead
		return nil
	case "write":
		*r = RoleWrite
		return nil
	}
	return fmt.Errorf("%q: write \"read\" (sees everything, changes nothing) or \"write\" (may change this node)", string(b))
}

// MarshalText implements encoding.TextMarshaler.
func (r AdminRole) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// validateAdminAllow checks [[admin.allow]]: an identity and a role each,
// no "*".
func (c *Config) validateAdminAllow(bad func(key, format string, args ...any)) {
	for i, a := range c.Admin.Allow {
		key := fmt.Sprintf("admin.allow[%d]", i)
		switch {
		case a.From.IsZero():
			bad(key+".from", "missing: name who may use the admin API over the overlay: a node address, a public key, group:ORG/GROUP, org:ORG or name:GLOB")
		case a.From.Any:
			bad(key+".from", `"*" would give every node that reaches this one its admin API: name the administrators (a key, an address, group:ORG/GROUP or name:GLOB)`)
		}
		if a.Role == 0 {
			bad(key+".role", `missing: "read" (sees everything, changes nothing) or "write" (may change this node)`)
		}
	}
}

// AdminRules are the rules [[admin.allow]] implies: each identity may
// open TCP connections to this node's admin port.
func (c *Config) AdminRules(port uint16) []policy.Rule {
	out := make([]policy.Rule, 0, len(c.Admin.Allow))
	for _, a := range c.Admin.Allow {
		out = append(out, policy.Rule{From: a.From, Proto: policy.ProtoTCP, Ports: policy.Ports{{Lo: port, Hi: port}}, To: policy.Dest{Kind: policy.DestSelf}})
	}
	return out
}

// Console configures the console's actions ([console]).
type Console struct {
	// OrgKey is an organisation's key file (tomoe org init): the console
	// (its web page and POST /v1/console/*) then revokes members and signs
	// and pushes that organisation's policy. Whoever controls this node
	// controls the organisation: keep it on an administrator's machine.
	OrgKey string `toml:"org_key"`
}
