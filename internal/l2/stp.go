//go:build linux

package l2

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Loops. A member's tunnels are safe by construction (split horizon in a
// full mesh, a star on a hub); what can close a loop is an attached port:
// two members attaching one physical LAN, or a cable between two attached
// LANs, make the overlay and the outside one ring, around which a
// broadcast would go for ever.
//
// The kernel's spanning tree (802.1D) breaks such rings, but run on a
// bridge whose ports are the tunnels themselves it would see every
// triangle of a full mesh as a ring and block one side of it, which split
// horizon turns into a hole (the two ends would reach each other through
// a third member, which does not forward between tunnels). So a segment
// with an attached port has two bridges: the segment's (the attached port
// and one end of a veth pair, running STP) and an inner one (the tunnels
// and the veth's other end, no STP, the tunnels isolated as before). The
// inner bridge passes BPDUs between the veth and every tunnel, and never
// between two tunnels, so each member's STP sees the overlay as one shared
// Ethernet with every other member with an attached port on it, as it
// is. A ring through the outside then shows as BPDUs of another member
// arriving both through the overlay and through the attached port, and
// STP blocks one of the two: then frames between that LAN and the overlay
// cross at one member only. A member without an attached port runs no
// STP and is a plain station on that Ethernet; so is a hub without one,
// whose bridge forwards BPDUs between its members.

// STP timers, the kernel's minimums (net/bridge/br_private.h
// BR_MIN_FORWARD_DELAY, BR_MIN_HELLO_TIME, BR_MIN_MAX_AGE), in
// centiseconds (USER_HZ): a new port forwards after twice forwardDelay
// (listening, then learning), 4 s; a lost root is noticed after maxAge.
const (
	stpForwardDelay = 200
	stpHelloTime    = 100
	stpMaxAge       = 600
)

// Port states (IFLA_BRPORT_STATE, BR_STATE_*).
var portStateNames = map[uint8]string{0: "disabled", 1: "listening", 2: "learning", 3: "forwarding", 4: "blocking"}

// newBridge creates a bridge named name that learns at most maxMACs
// addresses, forgets them after ageing (centiseconds), has no address of
// its own and is marked as this package's (alias).
func newBridge(name, alias string, mtu int, ageing uint32, maxMACs int) (netlink.Link, error) {
	snoop := false
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}, AgeingTime: &ageing, MulticastSnooping: &snoop}
	if err := netlink.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("create bridge %s: %w", name, err)
	}
	bl, err := netlink.LinkByName(name)
	if err != nil {
		netlink.LinkDel(br)
		return nil, fmt.Errorf("bridge %s: %w", name, err)
	}
	if err := netlink.LinkSetAlias(bl, alias); err != nil {
		return bl, fmt.Errorf("bridge %s: %w", name, err)
	}
	// This host is not on the segment unless given an address: no IPv6
	// link-local address (through which every host of every site would
	// reach what listens here on all addresses), no router solicitations.
	if err := netlink.LinkSetIP6AddrGenMode(bl, nl.IN6_ADDR_GEN_MODE_NONE); err != nil {
		return bl, fmt.Errorf("bridge %s: no IPv6 link-local address: %w", name, err)
	}
	if err := setBridgeAttrs(bl.Attrs().Index, map[uint16]uint32{unix.IFLA_BR_FDB_MAX_LEARNED: uint32(maxMACs)}); err != nil {
		return bl, fmt.Errorf("bridge %s: bound the MAC table (fdb_max_learned, Linux 6.7 or later): %w", name, err)
	}
	return bl, nil
}

// addInner makes the segment's inner bridge, for its tunnels, joined to
// its bridge by a veth pair, and turns STP on on its bridge.
func (s *segment) addInner(ageing uint32, maxMACs int) error {
	inner, outerVeth, innerVeth := innerNames(s.Bridge)
	for _, n := range []string{inner, outerVeth, innerVeth} {
		if err := removeStale(n); err != nil {
			return err
		}
	}
	il, err := newBridge(inner, aliasPrefix+s.Name, s.MTU, ageing, maxMACs)
	if il != nil {
		s.inner = il
	}
	if err != nil {
		return err
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: outerVeth, MTU: s.MTU, MasterIndex: s.bridge.Attrs().Index}, PeerName: innerVeth}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth %s-%s: %w", outerVeth, innerVeth, err)
	}
	s.veth = outerVeth
	for _, n := range []string{outerVeth, innerVeth} {
		l, err := netlink.LinkByName(n)
		if err != nil {
			return fmt.Errorf("veth %s: %w", n, err)
		}
		if n == innerVeth {
			if err := netlink.LinkSetMTU(l, s.MTU); err != nil {
				return fmt.Errorf("veth %s: MTU %d: %w", n, s.MTU, err)
			}
			if err := netlink.LinkSetMasterByIndex(l, il.Attrs().Index); err != nil {
				return fmt.Errorf("veth %s: %w", n, err)
			}
		}
		if err := netlink.LinkSetAlias(l, aliasPrefix+s.Name); err != nil {
			return fmt.Errorf("veth %s: %w", n, err)
		}
		if err := netlink.LinkSetIP6AddrGenMode(l, nl.IN6_ADDR_GEN_MODE_NONE); err != nil {
			return fmt.Errorf("veth %s: no IPv6 link-local address: %w", n, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("veth %s: up: %w", n, err)
		}
	}
	if err := netlink.LinkSetUp(il); err != nil {
		return fmt.Errorf("bridge %s: up: %w", inner, err)
	}
	err = setBridgeAttrs(s.bridge.Attrs().Index, map[uint16]uint32{
		unix.IFLA_BR_FORWARD_DELAY: stpForwardDelay,
		unix.IFLA_BR_HELLO_TIME:    stpHelloTime,
		unix.IFLA_BR_MAX_AGE:       stpMaxAge,
	})
	if err == nil {
		err = setBridgeAttrs(s.bridge.Attrs().Index, map[uint16]uint32{unix.IFLA_BR_STP_STATE: 1})
	}
	if err != nil {
		return fmt.Errorf("bridge %s: spanning tree: %w", s.Bridge, err)
	}
	return nil
}

// setBridgeAttrs sets u32 bridge attributes (IFLA_BR_*) of the bridge
// with index index; the netlink library cannot set most of them.
func setBridgeAttrs(index int, attrs map[uint16]uint32) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	for k, v := range attrs {
		data.AddRtAttr(int(k), nl.Uint32Attr(v))
	}
	req.AddData(info)
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// portStates returns the STP state of every bridge port, by index.
func portStates() (map[int]string, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
	req.AddData(nl.NewIfInfomsg(unix.AF_BRIDGE))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, 0)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, err
	}
	out := map[int]string{}
	for _, m := range msgs {
		ans := nl.DeserializeIfInfomsg(m)
		attrs, err := nl.ParseRouteAttr(m[ans.Len():])
		if err != nil {
			continue
		}
		for _, a := range attrs {
			if a.Attr.Type&^unix.NLA_F_NESTED != unix.IFLA_PROTINFO {
				continue
			}
			infos, err := nl.ParseRouteAttr(a.Value)
			if err != nil {
				continue
			}
			for _, i := range infos {
				if i.Attr.Type == unix.IFLA_BRPORT_STATE && len(i.Value) == 1 {
					out[int(ans.Index)] = portStateNames[i.Value[0]]
				}
			}
		}
	}
	return out, nil
}

// checkAttach refuses, before anything is created, an attached port that
// would loop the segment into itself or into the overlay, or take a port
// from its owner: the overlay interface, a bridge (this segment's,
// another's, or anyone's), an interface this package made (another
// segment's bridge or tunnel), a port of another bridge or bond, the
// loopback. It must exist.
func (m *Manager) checkAttach(s Segment) error {
	key := fmt.Sprintf("attach = %q", s.Attach)
	l, err := netlink.LinkByName(s.Attach)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return fmt.Errorf("%s: no such interface: it must exist when the node starts (or is reloaded)", key)
		}
		return fmt.Errorf("%s: %w", key, err)
	}
	a := l.Attrs()
	switch {
	case a.Index == m.tunIndex || s.Attach == m.tun:
		return fmt.Errorf("%s is the overlay interface the tunnels run over: the segment would carry itself", key)
	case a.Flags&net.FlagLoopback != 0:
		return fmt.Errorf("%s is the loopback interface: attach an Ethernet port", key)
	case len(a.Alias) >= len(aliasPrefix) && a.Alias[:len(aliasPrefix)] == aliasPrefix:
		return fmt.Errorf("%s is an interface of segment %s (a bridge, a tunnel or a veth tomoe made): attach a physical port", key, a.Alias[len(aliasPrefix):])
	case l.Type() == "bridge":
		return fmt.Errorf("%s is a bridge: attach one of its ports instead (taken out of it), or a physical port; a bridge in a bridge makes loops", key)
	case a.MasterIndex != 0:
		owner := fmt.Sprintf("index %d", a.MasterIndex)
		if ml, err := netlink.LinkByIndex(a.MasterIndex); err == nil {
			owner = ml.Attrs().Name
		}
		return fmt.Errorf("%s is already a port of %s: release it first (ip link set %s nomaster)", key, owner, s.Attach)
	}
	return nil
}
