// Package l2 owns tomoe's virtual Ethernet segments (kernel mode, Linux):
// for each segment a Linux bridge, and one point-to-point VXLAN tunnel per
// far end, between this node's overlay address and the far end's, over
// the TUN interface. The frames therefore travel inside WireGuard (which
// encrypts them and proves who sent them) and through the policy filter
// (which admits a tunnel's packets only from the segment's members).
//
// The kernel does the switching: the bridge learns MAC addresses (at most
// MaxMACs, then it learns no more until entries age out), floods unknown
// and broadcast frames, and never sends a frame back out of the port it
// came in on. In a full mesh the tunnel ports are isolated (split
// horizon): a frame from one member is never forwarded to another, each
// member reaching every other directly, so there is no loop. On a hub the
// tunnel ports are not isolated: the hub forwards between its members,
// which each have one tunnel only, to the hub.
//
// Loops through the outside (two members attaching the same physical LAN,
// or a cable between two attached LANs) are the kernel's spanning tree's
// to break: a segment with an attached port runs STP (802.1D) on its
// bridge. Its tunnels then hang off a second, inner bridge, joined to
// the segment's bridge by a veth pair, so that STP sees the overlay as one
// shared Ethernet (as it is: every member reaches every other directly)
// and never blocks one tunnel of a full mesh, which split horizon would
// make a hole; it blocks an attached port (or this node's way into the
// overlay) that closes a loop. See stp.go.
//
// Each tunnel has its own VXLAN ID, derived from the segment name and the
// two node addresses, so both ends agree on it without configuration, and
// an nftables table (inet tomoe-l2) accepts a tunnel's packets only from
// its far end's address, through the TUN interface: not from the LAN, and
// not from another member with the same ID. Nothing outlives Close: the
// bridge, the tunnels and the table go, an attached port is released.
package l2

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Overhead is what VXLAN over IPv6 adds to an Ethernet frame's payload:
// the inner Ethernet header (14), VXLAN (8), UDP (8) and IPv6 (40).
const Overhead = 14 + 8 + 8 + 40

// DefaultMaxMACs bounds the MAC addresses a segment's bridge learns; past
// it, frames from new addresses still pass (flooded when sent to), but no
// memory is taken for them.
const DefaultMaxMACs = 4096

// DefaultAgeing is how long (seconds) a learned MAC address stays without
// traffic from it.
const DefaultAgeing = 300

// MaxTunnels bounds the tunnels of one segment on this node: a member
// list naming a group of 10,000 nodes makes at most this many VXLAN
// devices (the kernel, and the bridge's flooding of every broadcast to
// every tunnel, would not bear more); Plan keeps the first MaxTunnels far
// ends and reports the rest as left out.
const MaxTunnels = 256

// DefaultBroadcastPPS is the rate of broadcast and multicast frames one
// port may send into the segment, a second (bursts of as many), beyond
// which they are dropped: a storm from one site cannot fill the others'
// tunnels.
const DefaultBroadcastPPS = 1000

// Segment is one segment as this node sets it up.
type Segment struct {
	Name   string     // the segment's name, the same on every member
	Bridge string     // the bridge interface
	Self   netip.Addr // this node's address
	// Remotes are the far ends of this node's tunnels: every other member
	// (full mesh), the members (on the hub), or the hub.
	Remotes []netip.Addr
	// Hub: this node is the hub and forwards between its tunnels.
	Hub bool
	// Attach is a physical interface put into the segment ("" none).
	Attach string
	// MTU is the segment's MTU (the TUN interface's minus Overhead).
	MTU int
	// MaxMACs, Ageing (seconds) and BroadcastPPS: 0 means the default.
	MaxMACs, Ageing, BroadcastPPS int
	// LeftOut counts the far ends Plan did not make tunnels to, past
	// MaxTunnels.
	LeftOut int
}

// Plan returns the segment for this node (self): with a hub, the hub has a
// tunnel to each member and a member one to the hub; without, every member
// one to each other. tunMTU is the TUN interface's MTU. Members past
// MaxTunnels (after self and duplicates are skipped) are left out
// (Segment.LeftOut): the caller orders them by preference.
func Plan(name, bridge string, self netip.Addr, members []netip.Addr, hub netip.Addr, attach string, tunMTU int) Segment {
	s := Segment{Name: name, Bridge: bridge, Self: self, Attach: attach, MTU: tunMTU - Overhead}
	switch {
	case hub.IsValid() && hub != self:
		s.Remotes = []netip.Addr{hub}
	default:
		s.Hub = hub.IsValid()
		seen := make(map[netip.Addr]bool, min(len(members), MaxTunnels+1))
		for _, m := range members {
			if m == self || seen[m] {
				continue
			}
			if len(s.Remotes) == MaxTunnels {
				s.LeftOut++
				continue
			}
			seen[m] = true
			s.Remotes = append(s.Remotes, m)
		}
	}
	return s
}

// innerNames are the inner bridge's and the veth pair's interface names
// (segment side, inner side) of the segment whose bridge is bridge.
func innerNames(bridge string) (inner, outerVeth, innerVeth string) {
	h := sha256.Sum256([]byte("tomoe-l2-inner-v1\x00" + bridge))
	tag := fmt.Sprintf("%02x%02x%02x", h[0], h[1], h[2])
	return "l2i" + tag, "l2p" + tag, "l2q" + tag
}

// Bridges are the segment's bridges: its own, and with an attached port
// the inner one its tunnels are ports of.
func (s Segment) Bridges() []string {
	if s.Attach == "" {
		return []string{s.Bridge}
	}
	inner, _, _ := innerNames(s.Bridge)
	return []string{s.Bridge, inner}
}

// Tunnel is one VXLAN tunnel of a segment.
type Tunnel struct {
	Remote netip.Addr
	VNI    uint32
	Device string
}

// Tunnels returns the segment's tunnels.
func (s Segment) Tunnels() []Tunnel {
	out := make([]Tunnel, 0, len(s.Remotes))
	for _, r := range s.Remotes {
		v := VNI(s.Name, s.Self, r)
		out = append(out, Tunnel{Remote: r, VNI: v, Device: fmt.Sprintf("l2v%06x", v)})
	}
	return out
}

// VNI is the VXLAN ID of the tunnel between a and b in segment name: the
// same at both ends, different (but for a 1 in 2^24 chance) for each pair.
func VNI(name string, a, b netip.Addr) uint32 {
	if b.Less(a) {
		a, b = b, a
	}
	h := sha256.New()
	h.Write([]byte("tomoe-l2-vni-v1\x00"))
	h.Write([]byte(name))
	h.Write([]byte{0})
	a16, b16 := a.As16(), b.As16()
	h.Write(a16[:])
	h.Write(b16[:])
	v := binary.BigEndian.Uint32(h.Sum(nil)) >> 8
	if v == 0 {
		v = 1
	}
	return v
}

// Status is a segment's state, for `tomoe l2`.
type Status struct {
	Name    string         `json:"name"`
	Bridge  string         `json:"interface"`
	Hub     bool           `json:"hub"`
	Attach  string         `json:"attach,omitempty"`
	MTU     int            `json:"mtu"`
	MaxMACs int            `json:"max_macs"`
	MACs    int            `json:"macs"` // learned on every port
	Members []MemberStatus `json:"members"`
	// AttachMACs and the attached port's counters.
	AttachMACs int      `json:"attach_macs,omitempty"`
	AttachStat Counters `json:"attach_counters,omitzero"`
	// STP: the bridge runs the spanning tree (it has an attached port);
	// AttachState and OverlayState are the STP states of the attached
	// port and of this node's way into the overlay (the veth to the
	// tunnels): "forwarding", "blocking" (it would close a loop),
	// "listening", "learning" or "disabled".
	STP          bool   `json:"stp,omitempty"`
	AttachState  string `json:"attach_state,omitempty"`
	OverlayState string `json:"overlay_state,omitempty"`
	// BroadcastPPS is the broadcast limit of each port, frames a second.
	BroadcastPPS int `json:"broadcast_limit"`
	// LeftOut counts members left without a tunnel (past MaxTunnels).
	LeftOut int `json:"left_out,omitempty"`
}

// MemberStatus is one tunnel's state.
type MemberStatus struct {
	Address netip.Addr `json:"address"`
	Device  string     `json:"device"`
	VNI     uint32     `json:"vni"`
	// Up: the overlay has a live session with the far end.
	Up       bool     `json:"up"`
	MACs     int      `json:"macs"` // learned behind this tunnel
	Counters Counters `json:"counters"`
}

// Counters are a port's frame counters (from the bridge's point of view:
// Rx came from the port into the segment, Tx went out of it).
type Counters struct {
	RxFrames  uint64 `json:"rx_frames"`
	RxBytes   uint64 `json:"rx_bytes"`
	TxFrames  uint64 `json:"tx_frames"`
	TxBytes   uint64 `json:"tx_bytes"`
	RxDropped uint64 `json:"rx_dropped"`
	TxDropped uint64 `json:"tx_dropped"`
}

// Config is what Start needs.
type Config struct {
	TUN      string // the overlay interface the tunnels run over
	Segments []Segment
}
