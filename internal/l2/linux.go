//go:build linux

package l2

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// alias marks the interfaces this package creates, so that what a crashed
// run left behind is recognised (and replaced) and nothing else is touched.
const aliasPrefix = "tomoe l2 "

// Manager holds the segments this node set up.
type Manager struct {
	tun      string
	tunIndex int

	mu     sync.Mutex // guards segs and closed
	segs   []*segment
	fw     *rules
	closed bool
}

type segment struct {
	Segment
	bridge  netlink.Link // the segment's bridge
	ports   netlink.Link // the bridge the tunnels are ports of: bridge, or inner
	inner   netlink.Link // with an attached port: the tunnels' bridge (stp.go)
	veth    string       // with an attached port: the veth end in bridge
	tunnels []Tunnel
	attach  *attached
}

// attached remembers what an attached port was before it joined, to give
// it back as it was.
type attached struct {
	name   string
	index  int // the port is found by index: it may have been renamed
	master int
	up     bool
}

// Start creates every segment: bridge, tunnels, attached port and the
// nftables rules. On an error nothing it created is left.
func Start(cfg Config) (*Manager, error) {
	tun, err := netlink.LinkByName(cfg.TUN)
	if err != nil {
		return nil, fmt.Errorf("l2: overlay interface %s: %w", cfg.TUN, err)
	}
	m := &Manager{tun: cfg.TUN, tunIndex: tun.Attrs().Index}
	if err := checkVNIs(cfg.Segments); err != nil {
		return nil, err
	}
	if err := sweep(); err != nil {
		return nil, err
	}
	// The rules before the tunnels: no tunnel's VXLAN ID is ever without
	// them (the kernel's VXLAN socket takes packets from anyone).
	fw, err := installRules(cfg.TUN, cfg.Segments)
	if err != nil {
		return nil, err
	}
	m.fw = fw
	for _, s := range cfg.Segments {
		seg, err := m.create(s)
		if seg != nil {
			m.segs = append(m.segs, seg)
		}
		if err != nil {
			m.Close()
			return nil, err
		}
	}
	return m, nil
}

// checkVNIs refuses two tunnels with one VXLAN ID (the kernel would).
func checkVNIs(segs []Segment) error {
	seen := map[uint32]string{}
	for _, s := range segs {
		for _, t := range s.Tunnels() {
			if other, dup := seen[t.VNI]; dup {
				return fmt.Errorf("l2: segment %s: the tunnel to %s has the same VXLAN ID (%d) as one of segment %s; rename one of the segments", s.Name, t.Remote, t.VNI, other)
			}
			seen[t.VNI] = s.Name
		}
	}
	return nil
}

// Update changes the segments to segs while they run: a segment whose
// bridge, attached port, role, MTU and limits are unchanged keeps its
// bridge (and what it learned), gaining and losing tunnels; any other is
// made anew; segments no longer in segs go. The nftables rules are
// replaced twice, each in one step: first by those of the running and the
// new tunnels together, then, after the tunnels that went are gone, by
// the new ones'.
func (m *Manager) Update(segs []Segment) error {
	if err := checkVNIs(segs); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("l2: closed")
	}
	// First the rules of the running tunnels and of the new ones
	// together, so that no tunnel, coming or going, is without its rule
	// while the devices change; the new ones alone at the end.
	union := slices.Clone(segs)
	for _, s := range m.segs {
		union = append(union, s.Segment)
	}
	fw, err := installRules(m.tun, union)
	if err != nil {
		return err
	}
	if m.fw != nil {
		m.fw.conn.CloseLasting()
	}
	m.fw = fw
	var errs []error
	old := map[string]*segment{}
	for _, s := range m.segs {
		old[s.Name] = s
	}
	var kept []*segment
	for _, s := range segs {
		o := old[s.Name]
		delete(old, s.Name)
		if o != nil && o.sameShape(s) {
			errs = append(errs, o.retunnel(s, m.tunIndex)...)
			kept = append(kept, o)
			continue
		}
		if o != nil {
			errs = append(errs, o.remove()...)
		}
		seg, err := m.create(s)
		if err != nil {
			errs = append(errs, err)
			if seg != nil {
				errs = append(errs, seg.remove()...)
			}
			continue
		}
		kept = append(kept, seg)
	}
	for _, o := range m.segs {
		if old[o.Name] == o {
			errs = append(errs, o.remove()...)
		}
	}
	m.segs = kept
	var now []Segment
	for _, s := range kept {
		now = append(now, s.Segment)
	}
	fw, err = installRules(m.tun, now)
	if err != nil {
		errs = append(errs, err)
	} else {
		if m.fw != nil {
			m.fw.conn.CloseLasting()
		}
		m.fw = fw
	}
	return errors.Join(errs...)
}

// sameShape reports whether s differs from the running segment in its
// tunnels and limits only (the broadcast limit is in the rules, the MAC
// table's bound is set on the running bridges).
func (s *segment) sameShape(n Segment) bool {
	return s.Bridge == n.Bridge && s.Attach == n.Attach && s.Hub == n.Hub && s.MTU == n.MTU &&
		s.Ageing == n.Ageing && s.Self == n.Self
}

// retunnel deletes the tunnels n no longer has and adds its new ones, and
// sets the MAC table's bound if it changed.
func (s *segment) retunnel(n Segment, tunIndex int) []error {
	var errs []error
	if s.MaxMACs != n.MaxMACs {
		maxMACs := n.MaxMACs
		if maxMACs <= 0 {
			maxMACs = DefaultMaxMACs
		}
		for _, b := range []netlink.Link{s.bridge, s.inner} {
			if b == nil {
				continue
			}
			if err := setBridgeAttrs(b.Attrs().Index, map[uint16]uint32{unix.IFLA_BR_FDB_MAX_LEARNED: uint32(maxMACs)}); err != nil {
				errs = append(errs, fmt.Errorf("l2: segment %s: bridge %s: mac_limit %d: %w", s.Name, b.Attrs().Name, maxMACs, err))
			}
		}
	}
	want := n.Tunnels()
	var keep []Tunnel
	for _, t := range s.tunnels {
		if slices.Contains(want, t) {
			keep = append(keep, t)
			continue
		}
		if l, err := netlink.LinkByName(t.Device); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("l2: delete %s: %w", t.Device, err))
				keep = append(keep, t)
			}
		}
	}
	s.tunnels = keep
	for _, t := range want {
		if slices.Contains(s.tunnels, t) {
			continue
		}
		if err := s.addTunnel(t, tunIndex); err != nil {
			errs = append(errs, fmt.Errorf("l2: segment %s: %w", s.Name, err))
		}
	}
	s.Segment = n
	return errs
}

// sweep deletes every interface a crashed run of this package left
// (marked by the alias), whether or not a segment of this run has its
// name: a stale VXLAN tunnel has no nftables rule any more (the tables
// are replaced), so anyone reaching UDP 4789 on any address of the host
// could put frames on it, and a stale bridge keeps an attached port.
func sweep() error {
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("l2: list interfaces: %w", err)
	}
	var errs []error
	for _, l := range links {
		a := l.Attrs()
		if len(a.Alias) < len(aliasPrefix) || a.Alias[:len(aliasPrefix)] != aliasPrefix {
			continue
		}
		// One end of a veth pair goes with the other.
		if _, err := netlink.LinkByIndex(a.Index); err != nil {
			continue
		}
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("l2: delete %s left by an earlier run: %w", a.Name, err))
		}
	}
	return errors.Join(errs...)
}

// removeStale deletes name if this package made it in an earlier run; it
// fails if name exists and is someone else's.
func removeStale(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	if len(l.Attrs().Alias) < len(aliasPrefix) || l.Attrs().Alias[:len(aliasPrefix)] != aliasPrefix {
		return fmt.Errorf("interface %s exists and was not made by tomoe: choose another name (l2.interface) or delete it", name)
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s left by an earlier run: %w", name, err)
	}
	return nil
}

func (m *Manager) create(s Segment) (*segment, error) {
	if s.MTU < 576 {
		return nil, fmt.Errorf("l2: segment %s: MTU %d is too small (tun.mtu less %d bytes of VXLAN over IPv6)", s.Name, s.MTU, Overhead)
	}
	if err := removeStale(s.Bridge); err != nil {
		return nil, fmt.Errorf("l2: segment %s: %w", s.Name, err)
	}
	if s.Attach != "" {
		if err := m.checkAttach(s); err != nil {
			return nil, fmt.Errorf("l2: segment %s: %w", s.Name, err)
		}
	}
	ageing := uint32(max(s.Ageing, 0))
	if ageing == 0 {
		ageing = DefaultAgeing
	}
	ageing *= 100 // centiseconds (USER_HZ)
	maxMACs := s.MaxMACs
	if maxMACs <= 0 {
		maxMACs = DefaultMaxMACs
	}
	seg := &segment{Segment: s}
	fail := func(format string, args ...any) (*segment, error) {
		return seg, fmt.Errorf("l2: segment %s: "+format, append([]any{s.Name}, args...)...)
	}
	bl, err := newBridge(s.Bridge, aliasPrefix+s.Name, s.MTU, ageing, maxMACs)
	if bl == nil {
		return nil, fmt.Errorf("l2: segment %s: %w", s.Name, err)
	}
	seg.bridge = bl
	if err != nil {
		return fail("%w", err)
	}
	seg.ports = bl
	if s.Attach != "" {
		if err := seg.addInner(ageing, maxMACs); err != nil {
			return fail("%w", err)
		}
		seg.ports = seg.inner
	}
	for _, t := range s.Tunnels() {
		if err := seg.addTunnel(t, m.tunIndex); err != nil {
			return fail("%w", err)
		}
	}
	if s.Attach != "" {
		l, err := netlink.LinkByName(s.Attach)
		if err != nil {
			return fail("attach = %q: %w", s.Attach, err)
		}
		seg.attach = &attached{name: s.Attach, index: l.Attrs().Index, master: l.Attrs().MasterIndex, up: l.Attrs().Flags&net.FlagUp != 0}
		if err := netlink.LinkSetMasterByIndex(l, bl.Attrs().Index); err != nil {
			return fail("attach = %q: %w", s.Attach, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fail("attach = %q: up: %w", s.Attach, err)
		}
	}
	// The bridge's MTU follows its smallest port's unless set: an attached
	// port keeps its own (1500 on a LAN); the tunnels carry s.MTU.
	if err := netlink.LinkSetMTU(bl, s.MTU); err != nil {
		return fail("bridge %s: MTU %d: %w", s.Bridge, s.MTU, err)
	}
	if err := netlink.LinkSetUp(bl); err != nil {
		return fail("bridge %s: up: %w", s.Bridge, err)
	}
	return seg, nil
}

// addTunnel creates t as a port of the segment's bridge.
func (s *segment) addTunnel(t Tunnel, tunIndex int) error {
	if err := removeStale(t.Device); err != nil {
		return err
	}
	vx := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: t.Device, MTU: s.MTU, MasterIndex: s.ports.Attrs().Index},
		VxlanId:   int(t.VNI), VtepDevIndex: tunIndex,
		SrcAddr: net.IP(s.Self.AsSlice()), Group: net.IP(t.Remote.AsSlice()),
		Port: vxlanPort, Learning: false, UDPCSum: true,
		// One source port: the overlay needs no flow entropy (it is
		// all one WireGuard session), and the policy's connection
		// table holds one flow per tunnel instead of one per inner
		// flow. The range is [PortLow, PortHigh).
		PortLow: vxlanPort, PortHigh: vxlanPort + 1,
	}
	if err := netlink.LinkAdd(vx); err != nil {
		return fmt.Errorf("tunnel %s to %s: %w", t.Device, t.Remote, err)
	}
	s.tunnels = append(s.tunnels, t)
	l, err := netlink.LinkByName(t.Device)
	if err != nil {
		return fmt.Errorf("tunnel %s: %w", t.Device, err)
	}
	if err := netlink.LinkSetAlias(l, aliasPrefix+s.Name); err != nil {
		return fmt.Errorf("tunnel %s: %w", t.Device, err)
	}
	if err := netlink.LinkSetIP6AddrGenMode(l, nl.IN6_ADDR_GEN_MODE_NONE); err != nil {
		return fmt.Errorf("tunnel %s: no IPv6 link-local address: %w", t.Device, err)
	}
	// Split horizon: in a full mesh a frame from one tunnel never goes
	// out of another (every member reaches every other directly).
	if err := netlink.LinkSetIsolated(l, !s.Hub); err != nil {
		return fmt.Errorf("tunnel %s: isolate: %w", t.Device, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("tunnel %s: up: %w", t.Device, err)
	}
	return nil
}

func (s *segment) remove() []error {
	var errs []error
	// The attached port by index, and only while it is still a port of
	// this bridge: renamed, its old name may be another interface's.
	if s.attach != nil && s.bridge != nil {
		if l, err := netlink.LinkByIndex(s.attach.index); err == nil && l.Attrs().MasterIndex == s.bridge.Attrs().Index {
			if err := netlink.LinkSetNoMaster(l); err != nil {
				errs = append(errs, fmt.Errorf("l2: release %s: %w", s.attach.name, err))
			}
			if !s.attach.up {
				netlink.LinkSetDown(l)
			}
		}
	}
	for _, t := range s.tunnels {
		if l, err := netlink.LinkByName(t.Device); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("l2: delete %s: %w", t.Device, err))
			}
		}
	}
	if s.veth != "" {
		if l, err := netlink.LinkByName(s.veth); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("l2: delete %s: %w", s.veth, err))
			}
		}
	}
	for _, b := range []netlink.Link{s.inner, s.bridge} {
		if b == nil {
			continue
		}
		if err := netlink.LinkDel(b); err != nil {
			errs = append(errs, fmt.Errorf("l2: delete %s: %w", b.Attrs().Name, err))
		}
	}
	return errs
}

// Close removes every segment and the rules, and releases attached ports.
// It is safe to call more than once.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	var errs []error
	// The tunnels before their rules.
	for _, s := range m.segs {
		errs = append(errs, s.remove()...)
	}
	if m.fw != nil {
		if err := m.fw.close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Status reports each segment; up says whether the overlay has a live
// session with a node address.
func (m *Manager) Status(up func(netip.Addr) bool) ([]Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errors.New("l2: closed")
	}
	fdb, err := netlink.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		return nil, fmt.Errorf("l2: read the bridges' MAC tables: %w", err)
	}
	learned := map[int]int{} // by port index
	for _, n := range fdb {
		if n.Flags&netlink.NTF_SELF != 0 || n.State&(netlink.NUD_PERMANENT|netlink.NUD_NOARP) != 0 {
			continue // the port's own address, or a tunnel's own table
		}
		learned[n.LinkIndex]++
	}
	states, err := portStates()
	if err != nil {
		return nil, fmt.Errorf("l2: read the bridges' port states: %w", err)
	}
	out := make([]Status, 0, len(m.segs))
	for _, s := range m.segs {
		maxMACs := s.MaxMACs
		if maxMACs <= 0 {
			maxMACs = DefaultMaxMACs
		}
		pps := s.BroadcastPPS
		if pps <= 0 {
			pps = DefaultBroadcastPPS
		}
		st := Status{Name: s.Name, Bridge: s.Bridge, Hub: s.Hub, Attach: s.Attach, MTU: s.MTU, MaxMACs: maxMACs, Members: []MemberStatus{},
			BroadcastPPS: pps, LeftOut: s.LeftOut, STP: s.inner != nil}
		if s.veth != "" {
			if l, err := netlink.LinkByName(s.veth); err == nil {
				st.OverlayState = states[l.Attrs().Index]
			}
		}
		for _, t := range s.tunnels {
			ms := MemberStatus{Address: t.Remote, Device: t.Device, VNI: t.VNI, Up: up != nil && up(t.Remote)}
			if l, err := netlink.LinkByName(t.Device); err == nil {
				ms.MACs = learned[l.Attrs().Index]
				ms.Counters = counters(l)
			}
			st.MACs += ms.MACs
			st.Members = append(st.Members, ms)
		}
		if s.Attach != "" {
			if l, err := netlink.LinkByName(s.Attach); err == nil {
				st.AttachMACs = learned[l.Attrs().Index]
				st.AttachStat = counters(l)
				st.AttachState = states[l.Attrs().Index]
				st.MACs += st.AttachMACs
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// counters gives a port's counters; a tunnel's rx is what came from the
// far end into the segment, as for a physical port.
func counters(l netlink.Link) Counters {
	st := l.Attrs().Statistics
	if st == nil {
		return Counters{}
	}
	return Counters{RxFrames: st.RxPackets, RxBytes: st.RxBytes, TxFrames: st.TxPackets, TxBytes: st.TxBytes, RxDropped: st.RxDropped, TxDropped: st.TxDropped}
}
