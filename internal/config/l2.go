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
	// Members are the nodes of the segment, by public key or node
	// address. Without Hub, every member has a tunnel to every other (a
	// full mesh); with Hub, the hub has one to each member and the others
	// only one, to the hub. This node may be listed too (it is skipped).
	Members []policy.Identity `toml:"members"`
	// Hub, if set, is the node that forwards between the members. On the
	// hub itself (Hub is this node) the members are its tunnels; on a
	// member the hub is its only one.
	Hub policy.Identity `toml:"hub"`
	// Attach, if set, is a physical interface put into the segment
	// (extending a real LAN); it is released when the node stops.
	Attach string `toml:"attach"`
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
		} else if other, dup := ifaces[br]; dup {
			bad(key+".interface", "%q is also %s: give each segment its own bridge, e.g. interface = \"l2-%s\"", br, other, s.Name)
		} else {
			ifaces[br] = key + ".interface"
		}
		if s.Attach != "" {
			if err := validInterfaceName(s.Attach); err != nil {
				bad(key+".attach", "%v", err)
			} else if other, dup := ifaces[s.Attach]; dup {
				bad(key+".attach", "%q is also %s: a port belongs to one segment", s.Attach, other)
			} else {
				ifaces[s.Attach] = key + ".attach"
			}
		}
		if len(s.Members) == 0 && s.Hub.IsZero() {
			bad(key+".members", "missing: list the member nodes' keys or addresses, or set hub = KEY (the node that forwards between the members)")
		}
		for j, m := range s.Members {
			if m.Kind != policy.KindNode {
				bad(fmt.Sprintf("%s.members[%d]", key, j), "%s: give a node's public key (base64) or address (fc..); \"*\" and group:/org:/name: members are not supported yet", m)
			}
		}
		if !s.Hub.IsZero() && s.Hub.Kind != policy.KindNode {
			bad(key+".hub", "%s: give the hub's public key (base64) or node address (fc..)", s.Hub)
		}
	}
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
