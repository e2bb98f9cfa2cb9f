package config

import (
	"fmt"
	"strings"

	"github.com/tomoe-net/tomoe/internal/policy"
)

// DefaultL2Interface is the bridge name of a segment that names none.
const DefaultL2Interface = "tomoe-l2"

// L2Segment is one [[l2]] table: a virtual Ethernet segment whose members
// are nodes, carried between node addresses inside the overlay.
type L2Segment struct {
	// Name identifies the segment; every member writes the same name (the
	// tunnels' VXLAN IDs are derived from it).
	Name string `toml:"name"`
	// Interface is the Linux bridge this node creates for the segment
	// (default "tomoe-l2").
	Interface string `toml:"interface"`
	// Members are the nodes of the segment: by public key or node
	// address, or by organisation certificate (group:ORG/GROUP, org:ORG,
	// name:GLOB: the nodes whose valid certificate this node holds and
	// matches, as for policy rules). Without Hub, every member has a
	// tunnel to every other (a full mesh); with Hub, the hub has one to
	// each member and the others only one, to the hub. This node may be
	// listed or matched too (it is skipped).
	Members []policy.Identity `toml:"members"`
	// Hub, if set, is the node that forwards between the members, by key
	// or address. On the hub itself (Hub is this node) the members are
	// its tunnels; on a member the hub is its only one.
	Hub policy.Identity `toml:"hub"`
	// Attach, if set, is a physical interface put into the segment
	// (extending a real LAN); it is released when the node stops.
	Attach string `toml:"attach"`
	// MACLimit bounds the MAC addresses the segment's bridge learns (nil:
	// DefaultL2MACLimit).
	MACLimit *int `toml:"mac_limit"`
	// BroadcastLimit bounds the broadcast and multicast frames a second
	// each port sends into the segment (nil: DefaultL2BroadcastLimit).
	BroadcastLimit *int `toml:"broadcast_limit"`
}

// Bounds and defaults of [[l2]] mac_limit and broadcast_limit (the
// defaults are internal/l2's DefaultMaxMACs and DefaultBroadcastPPS).
const (
	DefaultL2MACLimit       = 4096
	MinL2MACLimit           = 16
	MaxL2MACLimit           = 65536
	DefaultL2BroadcastLimit = 1000
	MinL2BroadcastLimit     = 1
	MaxL2BroadcastLimit     = 100000
)

// MACs is the segment's mac_limit, or the default.
func (s L2Segment) MACs() int {
	if s.MACLimit == nil {
		return DefaultL2MACLimit
	}
	return *s.MACLimit
}

// Broadcasts is the segment's broadcast_limit, or the default.
func (s L2Segment) Broadcasts() int {
	if s.BroadcastLimit == nil {
		return DefaultL2BroadcastLimit
	}
	return *s.BroadcastLimit
}

// BridgeName returns the segment's bridge interface.
func (s L2Segment) BridgeName() string {
	if s.Interface == "" {
		return DefaultL2Interface
	}
	return s.Interface
}

func (c *Config) validateL2(bad func(key, format string, args ...any)) {
	if len(c.L2) == 0 {
		return
	}
	// Off Linux, validatePlatform refuses [[l2]].
	if c.TUN.Mode != ModeKernel {
		bad("l2", "virtual Ethernet needs tun.mode = \"kernel\" (it uses a Linux bridge and VXLAN devices over the TUN interface); userspace mode carries no Ethernet frames")
		return
	}
	names := map[string]int{}
	ifaces := map[string]string{c.TUN.Name: "tun.name"}
	// Every bridge first: an attached port may name none of them, nor an
	// earlier or later segment's.
	bridges := map[string]string{}
	for i, s := range c.L2 {
		if _, dup := bridges[s.BridgeName()]; !dup {
			bridges[s.BridgeName()] = fmt.Sprintf("l2[%d].interface", i)
		}
	}
	for i, s := range c.L2 {
		key := fmt.Sprintf("l2[%d]", i)
		if err := checkSegmentName(s.Name); err != nil {
			bad(key+".name", "%v", err)
		} else if j, dup := names[s.Name]; dup {
			bad(key+".name", "%q is also l2[%d]'s name: each segment once", s.Name, j)
		} else {
			names[s.Name] = i
		}
		br := s.BridgeName()
		if err := validInterfaceName(br); err != nil {
			bad(key+".interface", "%v", err)
		} else if l2DeviceName(br) {
			bad(key+".interface", "%q is named as tomoe's tunnels (l2v), inner bridges (l2i) and veths (l2p, l2q) are, with 6 hex digits: choose another name", br)
		} else if other, dup := ifaces[br]; dup {
			bad(key+".interface", "%q is also %s: give each segment its own bridge, e.g. interface = \"l2-%s\"", br, other, s.Name)
		} else {
			ifaces[br] = key + ".interface"
		}
		if s.Attach != "" {
			if err := validInterfaceName(s.Attach); err != nil {
				bad(key+".attach", "%v", err)
			} else if other, dup := bridges[s.Attach]; dup {
				bad(key+".attach", "%q is %s, a segment's bridge: attach a physical port (a bridge in a segment makes a loop)", s.Attach, other)
			} else if other, dup := ifaces[s.Attach]; dup {
				bad(key+".attach", "%q is also %s: a port belongs to one segment", s.Attach, other)
			} else {
				ifaces[s.Attach] = key + ".attach"
			}
		}
		if len(s.Members) == 0 && s.Hub.IsZero() {
			bad(key+".members", "missing: list the member nodes' keys or addresses, group:ORG/GROUP, org:ORG or name:GLOB, or set hub = KEY (the node that forwards between the members)")
		}
		for j, m := range s.Members {
			if err := CheckL2Member(m); err != nil {
				bad(fmt.Sprintf("%s.members[%d]", key, j), "%v", err)
			}
		}
		if !s.Hub.IsZero() && s.Hub.Kind != policy.KindNode {
			bad(key+".hub", "%s: give the hub's public key (base64) or node address (fc..); a hub is one node, which every member must agree on, so it cannot be a group, an organisation or a name", s.Hub)
		}
		if s.MACLimit != nil && (*s.MACLimit < MinL2MACLimit || *s.MACLimit > MaxL2MACLimit) {
			bad(key+".mac_limit", "%d is outside %d..%d: the MAC addresses the segment's bridge learns (default %d)", *s.MACLimit, MinL2MACLimit, MaxL2MACLimit, DefaultL2MACLimit)
		}
		if s.BroadcastLimit != nil && (*s.BroadcastLimit < MinL2BroadcastLimit || *s.BroadcastLimit > MaxL2BroadcastLimit) {
			bad(key+".broadcast_limit", "%d is outside %d..%d: broadcast and multicast frames a second per port (default %d)", *s.BroadcastLimit, MinL2BroadcastLimit, MaxL2BroadcastLimit, DefaultL2BroadcastLimit)
		}
	}
}

// CheckL2Member reports whether m may be a segment's member: a node (key
// or address) or a certificate identity, not "*".
func CheckL2Member(m policy.Identity) error {
	switch {
	case m.Kind == policy.KindNode || m.ByCert():
		return nil
	case m.Kind == policy.KindAny:
		return fmt.Errorf("\"*\": a segment's members must be named (a key, an address, group:ORG/GROUP, org:ORG or name:GLOB): with \"*\" any node that reaches this one could put its frames on the segment and see every broadcast of it")
	}
	return fmt.Errorf("%s: give a node's public key (base64) or address (fc..), group:ORG/GROUP, org:ORG or name:GLOB", m)
}

// l2DeviceName reports whether n is of the form of internal/l2's own
// interface names: l2v, l2i, l2p or l2q and 6 hex digits.
func l2DeviceName(n string) bool {
	if len(n) != 9 || !strings.HasPrefix(n, "l2") || !strings.ContainsRune("vipq", rune(n[2])) {
		return false
	}
	for _, c := range n[3:] {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

func checkSegmentName(n string) error {
	if n == "" {
		return fmt.Errorf("missing: a segment needs a name, the same on every member, e.g. name = \"office\"")
	}
	if len(n) > 64 || strings.ContainsFunc(n, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) {
		return fmt.Errorf("%q: up to 64 of a-z, 0-9, '-', '_', '.'", n)
	}
	return nil
}
