//go:build linux

package l2

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/tomoe-net/tomoe/internal/testnet"
)

// These tests run as root in network namespaces. The nodes share one
// Ethernet (a testnet LAN) standing in for the overlay: their "TUN"
// interface is eth0, carrying fc.. node addresses. Behind each node, a
// plain host on a veth that the node attaches to the segment.

// waitTime allows for the spanning tree: a port of a segment with an
// attached port forwards 4 s after it comes up.
const waitTime = 15 * time.Second

type site struct {
	node *testnet.Host
	host *testnet.Netns
	addr netip.Addr // node address
	ip   string     // the host's address on the segment
	mgr  *Manager
}

// requireL2 skips t unless the kernel has bridges, VXLAN and nftables.
func requireL2(t *testing.T) {
	t.Helper()
	testnet.RequireRoot(t)
	testnet.RequireNftables(t)
	ns := testnet.NewNetns(t, "l2probe")
	if out, err := ns.Try("ip", "link", "add", "v0", "type", "vxlan", "id", "1", "dstport", "4789", "local", "fc00::1", "remote", "fc00::2"); err != nil {
		t.Skipf("skipped: no VXLAN in this kernel: %v\n%s", err, out)
	}
}

// newSites makes the overlay LAN with the named nodes, each with a host
// behind it at 192.168.77.N.
func newSites(t *testing.T, names ...string) map[string]*site {
	t.Helper()
	lan := testnet.NewLAN(t, names...)
	out := map[string]*site{}
	for i, n := range names {
		h := lan.Hosts[n]
		a := netip.MustParseAddr(fmt.Sprintf("fc00::77:%d", i+1))
		h.Run("ip", "addr", "add", a.String()+"/64", "dev", "eth0", "nodad")
		host := testnet.NewNetns(t, "h"+n)
		h.Veth("lan0", host, "eth0")
		ip := fmt.Sprintf("192.168.77.%d", i+1)
		host.Run("ip", "addr", "add", ip+"/24", "dev", "eth0")
		out[n] = &site{node: h, host: host, addr: a, ip: ip}
	}
	return out
}

func (s *site) start(t *testing.T, seg Segment) {
	t.Helper()
	var err error
	s.node.Do(func() { s.mgr, err = Start(Config{TUN: "eth0", Segments: []Segment{seg}}) })
	if err != nil {
		t.Fatalf("Start in %s: %v", s.node.Name, err)
	}
	t.Cleanup(func() { s.stop(t) })
}

func (s *site) stop(t *testing.T) {
	t.Helper()
	if s.mgr == nil {
		return
	}
	var err error
	s.node.Do(func() { err = s.mgr.Close() })
	if err != nil {
		t.Errorf("Close in %s: %v", s.node.Name, err)
	}
	s.mgr = nil
}

func (s *site) status(t *testing.T) Status {
	t.Helper()
	var st []Status
	var err error
	s.node.Do(func() { st, err = s.mgr.Status(nil) })
	if err != nil || len(st) != 1 {
		t.Fatalf("Status in %s: %v %v", s.node.Name, st, err)
	}
	return st[0]
}

func addrs(ss ...*site) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, s.addr)
	}
	return out
}

func pings(from *site, to string) bool {
	_, err := from.host.Try("ping", "-c", "1", "-W", "1", to)
	return err == nil
}

// learned counts the MAC addresses the bridge learned (not its ports' own).
func learned(t *testing.T, ns *testnet.Host, bridge string) int {
	t.Helper()
	out := ns.Run("bridge", "fdb", "show", "br", bridge)
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if l != "" && !strings.Contains(l, "permanent") && !strings.Contains(l, " self") {
			n++
		}
	}
	return n
}

func TestSegmentMeshPingAndTeardown(t *testing.T) {
	requireL2(t)
	s := newSites(t, "a", "b", "c")
	a, b, c := s["a"], s["b"], s["c"]
	members := addrs(a, b, c)
	for _, x := range []*site{a, b, c} {
		x.start(t, Plan("office", "tomoe-l2", x.addr, members, netip.Addr{}, "lan0", 1400))
	}
	testnet.WaitFor(t, waitTime, "host a pings host b across the segment", func() bool { return pings(a, b.ip) })
	testnet.WaitFor(t, waitTime, "host a pings host c", func() bool { return pings(a, c.ip) })
	// A broadcast reaches every member's host: each answers a broadcast ping.
	for _, x := range []*site{b, c} {
		x.host.Sysctl("net/ipv4/icmp_echo_ignore_broadcasts", "0")
	}
	testnet.WaitFor(t, waitTime, "a broadcast ping answered by b's and c's hosts", func() bool {
		out, _ := a.host.Try("ping", "-b", "-c", "2", "-i", "0.2", "-W", "1", "192.168.77.255")
		return strings.Contains(out, "from "+b.ip+":") && strings.Contains(out, "from "+c.ip+":")
	})
	st := a.status(t)
	if st.MTU != 1400-Overhead || len(st.Members) != 2 || st.Hub {
		t.Fatalf("status: %+v", st)
	}
	for _, m := range st.Members {
		// The host behind it, and the far bridge's own address.
		if m.MACs < 1 || m.Counters.RxFrames == 0 {
			t.Errorf("member %s: %d MACs, %d frames in; want the host behind it and frames", m.Address, m.MACs, m.Counters.RxFrames)
		}
	}
	if out := a.node.Run("ip", "-d", "link", "show", "dev", st.Members[0].Device); !strings.Contains(out, "isolated on") {
		t.Errorf("a full mesh's tunnel port is not isolated:\n%s", out)
	}

	// The node's host is not on the segment by itself.
	if out := a.node.Run("ip", "-6", "addr", "show", "dev", "tomoe-l2"); strings.Contains(out, "inet6") {
		t.Errorf("the bridge has an IPv6 address of its own:\n%s", out)
	}

	a.stop(t)
	if out := a.node.Run("ip", "-d", "link", "show"); strings.Contains(out, "tomoe-l2") || strings.Contains(out, "vxlan") || strings.Contains(out, "master") {
		t.Errorf("links left after Close:\n%s", out)
	}
	if out, _ := a.node.Try("nft", "list", "tables"); strings.Contains(out, TableName) {
		t.Errorf("nftables tables left after Close:\n%s", out)
	}
	if pings(b, a.ip) {
		t.Error("host a still reachable after its node left the segment")
	}
}

func TestSegmentHub(t *testing.T) {
	requireL2(t)
	s := newSites(t, "a", "b", "h")
	a, b, h := s["a"], s["b"], s["h"]
	members := addrs(a, b)
	for _, x := range []*site{a, b} {
		x.start(t, Plan("office", "tomoe-l2", x.addr, members, h.addr, "lan0", 1400))
	}
	h.start(t, Plan("office", "tomoe-l2", h.addr, members, h.addr, "", 1400))
	testnet.WaitFor(t, waitTime, "host a pings host b through the hub", func() bool { return pings(a, b.ip) })
	if st := a.status(t); len(st.Members) != 1 || st.Members[0].Address != h.addr {
		t.Errorf("a member's tunnels: %+v, want one to the hub", st.Members)
	}
	st := h.status(t)
	if !st.Hub || len(st.Members) != 2 {
		t.Errorf("hub status: %+v", st)
	}
	if out := h.node.Run("ip", "-d", "link", "show", "dev", st.Members[0].Device); strings.Contains(out, "isolated on") {
		t.Errorf("a hub's tunnel port is isolated, it cannot forward:\n%s", out)
	}
}

// TestSegmentStranger: a node that is not a member builds a VXLAN tunnel
// with the ID of a and b's tunnel and sends frames to a: none enters.
func TestSegmentStranger(t *testing.T) {
	requireL2(t)
	s := newSites(t, "a", "b", "x")
	a, b, x := s["a"], s["b"], s["x"]
	members := addrs(a, b)
	for _, n := range []*site{a, b} {
		n.start(t, Plan("office", "tomoe-l2", n.addr, members, netip.Addr{}, "lan0", 1400))
	}
	testnet.WaitFor(t, waitTime, "host a pings host b", func() bool { return pings(a, b.ip) })
	vni := VNI("office", a.addr, b.addr)
	x.node.Run("ip", "link", "add", "evil", "type", "vxlan", "id", strconv.Itoa(int(vni)), "dstport", "4789",
		"local", x.addr.String(), "remote", a.addr.String(), "dev", "eth0")
	x.node.Run("ip", "link", "add", "xbr", "type", "bridge")
	x.node.Run("ip", "link", "set", "evil", "master", "xbr", "up")
	x.node.Run("ip", "link", "set", "lan0", "master", "xbr", "up")
	x.node.Run("ip", "link", "set", "xbr", "up")
	// x's host broadcasts (ARP for a's host) into the stranger's tunnel.
	pings(x, a.ip)
	pings(x, a.ip)
	xmac := macOf(t, x.host)
	if out := a.node.Run("bridge", "fdb", "show", "br", "tomoe-l2"); strings.Contains(out, xmac) {
		t.Fatalf("a's bridge learned the stranger's host %s:\n%s", xmac, out)
	}
	out := a.node.Run("nft", "list", "table", "inet", TableName)
	if !dropped(out) {
		t.Errorf("no stranger's packet counted as dropped:\n%s", out)
	}
}

func dropped(nft string) bool {
	for _, l := range strings.Split(nft, "\n") {
		if strings.Contains(l, "drop") && !strings.Contains(l, "packets 0 ") {
			return true
		}
	}
	return false
}

func macOf(t *testing.T, ns *testnet.Netns) string {
	t.Helper()
	ifc := ""
	ns.Do(func() {
		i, err := net.InterfaceByName("eth0")
		if err == nil {
			ifc = i.HardwareAddr.String()
		}
	})
	if ifc == "" {
		t.Fatal("no eth0")
	}
	return ifc
}

// TestSegmentMACFlood: 10,000 frames from random source MACs leave the
// bridges' tables bounded, at both ends.
func TestSegmentMACFlood(t *testing.T) {
	requireL2(t)
	s := newSites(t, "a", "b")
	a, b := s["a"], s["b"]
	const bound = 256
	for _, n := range []*site{a, b} {
		seg := Plan("office", "tomoe-l2", n.addr, addrs(a, b), netip.Addr{}, "lan0", 1400)
		seg.MaxMACs = bound
		n.start(t, seg)
	}
	testnet.WaitFor(t, waitTime, "host a pings host b", func() bool { return pings(a, b.ip) })
	// To an unknown unicast address: flooded across the segment.
	sendFrames(t, a.host, "eth0", 10000, []byte{0x02, 0, 0, 0x77, 0x77, 0x77})
	var la, lb int
	testnet.WaitFor(t, waitTime, "both bridges full", func() bool {
		la, lb = learned(t, a.node, "tomoe-l2"), learned(t, b.node, "tomoe-l2")
		return la >= bound-4 && lb >= bound-4
	})
	// Learning stops at the bound; the host's own traffic still flows.
	if la > bound || lb > bound {
		t.Errorf("learned %d at a and %d at b, bound %d", la, lb, bound)
	}
	if st := a.status(t); st.MACs > bound {
		t.Errorf("status counts %d MACs, bound %d", st.MACs, bound)
	}
	t.Logf("after 10,000 random source MACs: %d learned at a, %d at b (bound %d)", la, lb, bound)
}

// TestSegmentUpdate: members join and leave a running full mesh; a
// segment that changes only in its tunnels keeps its bridge.
func TestSegmentUpdate(t *testing.T) {
	requireL2(t)
	s := newSites(t, "a", "b", "c")
	a, b, c := s["a"], s["b"], s["c"]
	plan := func(x *site, members ...*site) Segment {
		return Plan("office", "tomoe-l2", x.addr, addrs(members...), netip.Addr{}, "lan0", 1400)
	}
	a.start(t, plan(a, a, b))
	b.start(t, plan(b, a, b, c))
	c.start(t, plan(c, a, b, c))
	testnet.WaitFor(t, waitTime, "host a pings host b", func() bool { return pings(a, b.ip) })
	if pings(a, c.ip) {
		t.Fatal("host a reaches host c before c is a's member")
	}
	bridgeIndex := func() string { return strings.Fields(a.node.Run("ip", "-o", "link", "show", "tomoe-l2"))[0] }
	idx := bridgeIndex()
	update := func(seg Segment) {
		t.Helper()
		var err error
		a.node.Do(func() { err = a.mgr.Update([]Segment{seg}) })
		if err != nil {
			t.Fatal(err)
		}
	}
	update(plan(a, a, b, c))
	testnet.WaitFor(t, waitTime, "host a pings host c after c joined", func() bool { return pings(a, c.ip) })
	update(plan(a, a, c))
	if pings(a, b.ip) {
		t.Error("host a still reaches host b after b left")
	}
	if !pings(a, c.ip) {
		t.Error("host a lost host c when b left")
	}
	if got := bridgeIndex(); got != idx {
		t.Errorf("the bridge was made anew (%s, was %s) for a change of members", got, idx)
	}
	if st := a.status(t); len(st.Members) != 1 || st.Members[0].Address != c.addr {
		t.Errorf("members after b left: %+v", st.Members)
	}
	out := a.node.Run("nft", "list", "table", "inet", TableName)
	if strings.Contains(out, b.addr.String()) {
		t.Errorf("the rules still accept b's tunnel:\n%s", out)
	}
	// New limits apply to the running bridge: the MAC table's bound on it,
	// the broadcast limit in the rules.
	seg := plan(a, a, c)
	seg.MaxMACs, seg.BroadcastPPS = 300, 77
	update(seg)
	if got := bridgeIndex(); got != idx {
		t.Errorf("the bridge was made anew (%s, was %s) for new limits", got, idx)
	}
	var bound uint32
	a.node.Do(func() { bound = fdbMaxLearned(t, "tomoe-l2") })
	if bound != 300 {
		t.Errorf("fdb_max_learned %d after the update, want 300", bound)
	}
	if out := a.node.Run("nft", "list", "table", "bridge", TableName); !strings.Contains(out, "limit rate over 77/second") {
		t.Errorf("broadcast limit not updated:\n%s", out)
	}
	if !pings(a, c.ip) {
		t.Error("host a lost host c when the limits changed")
	}

	// A new bridge name makes the segment anew.
	seg = plan(a, a, b, c)
	seg.Bridge = "l2-office"
	update(seg)
	testnet.WaitFor(t, waitTime, "host a pings host b on the new bridge", func() bool { return pings(a, b.ip) })
	if _, err := a.node.Try("ip", "link", "show", "tomoe-l2"); err == nil {
		t.Error("the old bridge is still there")
	}
}

// TestSegmentBroadcastLimit: a broadcast storm from one site's LAN is cut
// to the segment's rate before it enters the tunnels; unicast is not.
func TestSegmentBroadcastLimit(t *testing.T) {
	requireL2(t)
	s := newSites(t, "a", "b")
	a, b := s["a"], s["b"]
	const pps = 100
	for _, n := range []*site{a, b} {
		seg := Plan("office", "tomoe-l2", n.addr, addrs(a, b), netip.Addr{}, "lan0", 1400)
		seg.BroadcastPPS = pps
		n.start(t, seg)
	}
	testnet.WaitFor(t, waitTime, "host a pings host b", func() bool { return pings(a, b.ip) })
	sent := func() uint64 { return a.status(t).Members[0].Counters.TxFrames }
	before := sent()
	start := time.Now()
	const n = 3000
	sendFrames(t, a.host, "eth0", n, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	elapsed := time.Since(start)
	got := sent() - before
	limit := uint64(pps + float64(pps)*elapsed.Seconds() + 20) // burst, rate, the pings' own frames
	if got > limit {
		t.Errorf("%d of %d broadcast frames entered the tunnel in %v; the limit allows %d", got, n, elapsed, limit)
	}
	t.Logf("broadcast storm: %d frames sent in %v, %d entered the tunnel (limit %d/s)", n, elapsed.Round(time.Millisecond), got, pps)
	before = sent()
	sendFrames(t, a.host, "eth0", n, []byte{0x02, 0, 0, 0x77, 0x77, 0x77})
	testnet.WaitFor(t, waitTime, "unknown unicast flooded unlimited", func() bool { return sent()-before >= n })
}

// sendFrames writes n frames to dst from random unicast sources.
func sendFrames(t *testing.T, ns *testnet.Netns, ifname string, n int, dst []byte) {
	t.Helper()
	withPacketSocket(t, ns, ifname, func(fd int, to *unix.SockaddrLinklayer) {
		frame := make([]byte, 60)
		copy(frame[0:6], dst)
		frame[12], frame[13] = 0x88, 0xb5
		for i := 0; i < n; i++ {
			rand.Read(frame[6:12])
			frame[6] = frame[6]&^1 | 2
			if err := unix.Sendto(fd, frame, 0, to); err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
		}
	})
}

// withPacketSocket runs send in ns with a raw packet socket and the
// address of ifname to send frames out of it.
func withPacketSocket(t *testing.T, ns *testnet.Netns, ifname string, send func(fd int, to *unix.SockaddrLinklayer)) {
	t.Helper()
	ns.Do(func() {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		send(fd, &unix.SockaddrLinklayer{Ifindex: ifc.Index, Halen: 6})
	})
}

// fdbMaxLearned reads the bridge's bound on learned MAC addresses
// (IFLA_BR_FDB_MAX_LEARNED), which iproute2 before 6.7 does not show.
func fdbMaxLearned(t *testing.T, bridge string) uint32 {
	t.Helper()
	l, err := netlink.LinkByName(bridge)
	if err != nil {
		t.Fatal(err)
	}
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(l.Attrs().Index)
	req.AddData(msg)
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("RTM_GETLINK %s: %v", bridge, err)
	}
	attrs, err := nl.ParseRouteAttr(msgs[0][unix.SizeofIfInfomsg:])
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range attrs {
		if a.Attr.Type&^unix.NLA_F_NESTED != unix.IFLA_LINKINFO {
			continue
		}
		info, _ := nl.ParseRouteAttr(a.Value)
		for _, i := range info {
			if i.Attr.Type&^unix.NLA_F_NESTED != nl.IFLA_INFO_DATA {
				continue
			}
			data, _ := nl.ParseRouteAttr(i.Value)
			for _, d := range data {
				if d.Attr.Type == unix.IFLA_BR_FDB_MAX_LEARNED && len(d.Value) == 4 {
					return binary.NativeEndian.Uint32(d.Value)
				}
			}
		}
	}
	t.Fatalf("%s: no fdb_max_learned", bridge)
	return 0
}

// TestStaleSegmentAfterCrash: after a crash (no Close), a restart whose
// config no longer has the segment leaves none of its devices: a stale
// VXLAN device has no nftables rule any more (the table is replaced), so
// anyone who reaches UDP 4789 on any address of the host could put
// frames on it, and a stale bridge keeps an attached port.
func TestStaleSegmentAfterCrash(t *testing.T) {
	requireL2(t)
	s := newSites(t, "a", "b")
	a, b := s["a"], s["b"]
	members := addrs(a, b)
	old := Plan("old", "tomoe-old", a.addr, members, netip.Addr{}, "lan0", 1400)
	var err error
	a.node.Do(func() { _, err = Start(Config{TUN: "eth0", Segments: []Segment{old}}) })
	if err != nil {
		t.Fatal(err)
	}
	// The process dies: no Close. The next run has another segment only.
	a.start(t, Plan("new", "tomoe-new", a.addr, members, netip.Addr{}, "", 1400))
	out := a.node.Run("ip", "-d", "-o", "link", "show")
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "alias tomoe l2 old") || strings.Contains(l, "master tomoe-old") {
			t.Errorf("left by the crashed run and still there: %s", strings.Join(strings.Fields(l)[:2], " "))
		}
	}
}

// TestAttachRenamedReleasesOnlyItsOwn: the attached port is renamed while
// the segment runs, and another interface (a port of another bridge, up)
// takes its old name. Stopping the segment gives back the port it
// attached, and leaves the other interface alone: still in its bridge,
// still up.
func TestAttachRenamedReleasesOnlyItsOwn(t *testing.T) {
	requireL2(t)
	s := newSites(t, "a", "b")
	a, b := s["a"], s["b"]
	a.node.Run("ip", "link", "add", "d2", "type", "veth", "peer", "name", "d2p")
	a.node.Run("ip", "link", "add", "br9", "type", "bridge")
	a.node.Run("ip", "link", "add", "x1", "type", "veth", "peer", "name", "x1p")
	a.node.Run("ip", "link", "set", "x1", "master", "br9")
	a.node.Run("ip", "link", "set", "x1", "up")
	a.start(t, Plan("office", "tomoe-l2", a.addr, addrs(a, b), netip.Addr{}, "d2", 1400))
	a.node.Run("ip", "link", "set", "d2", "name", "d2renamed")
	a.node.Run("ip", "link", "set", "x1", "name", "d2")
	a.stop(t)
	out := a.node.Run("ip", "link", "show", "dev", "d2")
	if !strings.Contains(out, "master br9") || !strings.Contains(out, ",UP") {
		t.Errorf("stopping the segment took another interface, which now has the attached port's old name, out of its bridge or down:\n%s", out)
	}
	if out := a.node.Run("ip", "link", "show", "dev", "d2renamed"); strings.Contains(out, "master") {
		t.Errorf("the attached port (renamed) was not given back:\n%s", out)
	}
}
