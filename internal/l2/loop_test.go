//go:build linux

package l2

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tomoe-net/tomoe/internal/testnet"
)

// TestSegmentLoopThroughLAN: members a and b both attach one physical
// LAN (a namespace with a plain bridge, "sw", which forwards BPDUs as a
// dumb switch does, and a host), so the overlay and that LAN make a ring; c, in the
// same full mesh, attaches its own host. The spanning tree blocks one
// side of the ring: a broadcast sent on the LAN does not come back to it
// (without it, it would go round at the broadcast limit, hundreds of
// times in the window); c's host still reaches the LAN.
// sharedLAN makes one physical LAN that every site in sites attaches as
// "lan1": a namespace with a plain bridge, "sw", which forwards BPDUs as a
// dumb switch does, and a host on it (192.168.77.50/24 on eth0), which
// it returns.
func sharedLAN(t *testing.T, sites ...*site) *testnet.Netns {
	t.Helper()
	shared := testnet.NewNetns(t, "shared")
	shared.Run("ip", "link", "add", "sw", "type", "bridge", "stp_state", "0")
	shared.Run("ip", "link", "set", "sw", "up")
	lanHost := testnet.NewNetns(t, "lanhost")
	lanHost.Veth("eth0", shared, "ph")
	shared.Run("ip", "link", "set", "ph", "master", "sw")
	lanHost.Run("ip", "addr", "add", "192.168.77.50/24", "dev", "eth0")
	for _, x := range sites {
		x.node.Veth("lan1", shared, "p"+x.node.Name)
		shared.Run("ip", "link", "set", "p"+x.node.Name, "master", "sw")
	}
	return lanHost
}

func TestSegmentLoopThroughLAN(t *testing.T) {
	requireL2(t)
	s := newSites(t, "a", "b", "c")
	a, b, c := s["a"], s["b"], s["c"]
	lanHost := sharedLAN(t, a, b)
	members := addrs(a, b, c)
	a.start(t, Plan("office", "tomoe-l2", a.addr, members, netip.Addr{}, "lan1", 1400))
	b.start(t, Plan("office", "tomoe-l2", b.addr, members, netip.Addr{}, "lan1", 1400))
	c.start(t, Plan("office", "tomoe-l2", c.addr, members, netip.Addr{}, "lan0", 1400))

	// Converged: every STP port forwarding or blocking, and one of a's
	// and b's blocking (the ring is open).
	var sa, sb, sc Status
	testnet.WaitFor(t, 30*time.Second, "the spanning tree blocks one side of the ring", func() bool {
		sa, sb, sc = a.status(t), b.status(t), c.status(t)
		settled := func(p string) bool { return p == "forwarding" || p == "blocking" }
		for _, p := range []string{sa.AttachState, sa.OverlayState, sb.AttachState, sb.OverlayState, sc.AttachState, sc.OverlayState} {
			if !settled(p) {
				return false
			}
		}
		return strings.Contains(sa.AttachState+sa.OverlayState+sb.AttachState+sb.OverlayState, "blocking")
	})
	t.Logf("a: attach %s, overlay %s; b: attach %s, overlay %s", sa.AttachState, sa.OverlayState, sb.AttachState, sb.OverlayState)
	if !sa.STP || !sc.STP {
		t.Error("status: STP off on a segment with an attached port")
	}
	// c's STP ports forward: nothing of c closes a ring.
	if sc.AttachState != "forwarding" || sc.OverlayState != "forwarding" {
		t.Errorf("c's ports: attach %s, overlay %s; want both forwarding", sc.AttachState, sc.OverlayState)
	}
	if out := a.node.Run("ip", "-d", "link", "show", "dev", sa.Members[0].Device); !strings.Contains(out, "isolated on") {
		t.Errorf("a full mesh's tunnel is not isolated under STP:\n%s", out)
	}

	// c's host reaches the LAN, a's and b's sides of the mesh alike.
	testnet.WaitFor(t, waitTime, "c's host pings the shared LAN", func() bool { return pings(c, "192.168.77.50") })

	// One broadcast from the LAN, counted where it would come back.
	n := echoes(t, lanHost, "eth0", 3*time.Second)
	if n > 2 {
		t.Fatalf("a broadcast sent on the shared LAN came back %d times in 3 s: a storm", n)
	}
	t.Logf("one broadcast on the LAN ringed by the overlay: seen back %d times in 3 s", n)

	// The control: without the spanning tree, the same broadcast storms.
	// (Turning STP off leaves its ports as they were; ports put into the
	// bridge again forward at once.)
	_, outerVeth, _ := innerNames("tomoe-l2")
	for _, x := range []*site{a, b} {
		x.node.Run("ip", "link", "set", "tomoe-l2", "type", "bridge", "stp_state", "0")
		for _, p := range []string{"lan1", outerVeth} {
			x.node.Run("ip", "link", "set", p, "nomaster")
			x.node.Run("ip", "link", "set", p, "master", "tomoe-l2")
		}
	}
	n = echoes(t, lanHost, "eth0", 3*time.Second)
	if n < 100 {
		t.Errorf("without STP, the broadcast came back %d times in 3 s; the test cannot tell a storm", n)
	} else {
		t.Logf("without STP: seen back %d times in 3 s", n)
	}
}

// echoes sends one broadcast frame out of ifname in ns and counts the
// copies of it that come back in during d.
func echoes(t *testing.T, ns *testnet.Netns, ifname string, d time.Duration) int {
	t.Helper()
	const etype = 0x88b6 // IEEE local experimental
	var count int
	ns.Do(func() {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(etype)))
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(etype), Ifindex: ifc.Index}); err != nil {
			t.Fatal(err)
		}
		marker := make([]byte, 16)
		rand.Read(marker)
		frame := make([]byte, 60)
		copy(frame[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		copy(frame[6:12], ifc.HardwareAddr)
		binary.BigEndian.PutUint16(frame[12:14], etype)
		copy(frame[14:], marker)
		if err := unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifc.Index, Halen: 6}); err != nil {
			t.Fatal(err)
		}
		// A measurement window, not a wait for a condition: how many
		// copies arrive in d.
		end := time.Now().Add(d)
		buf := make([]byte, 2048)
		for time.Now().Before(end) {
			tv := unix.NsecToTimeval(max(int64(time.Until(end)), int64(time.Millisecond)))
			unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
			k, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			if k >= 30 && bytes.Equal(buf[14:30], marker) {
				count++
			}
		}
	})
	return count
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestAttachRefused: an attached port that would loop the segment into
// itself or take a port from its owner is refused before anything is
// made, with an error naming the key.
func TestAttachRefused(t *testing.T) {
	requireL2(t)
	s := newSites(t, "a", "b")
	a, b := s["a"], s["b"]
	a.node.Run("ip", "link", "add", "br9", "type", "bridge")
	a.node.Run("ip", "link", "add", "d1", "type", "veth", "peer", "name", "d1p")
	a.node.Run("ip", "link", "set", "d1", "master", "br9")
	a.node.Run("ip", "link", "add", "d2", "type", "veth", "peer", "name", "d2p")
	members := addrs(a, b)
	for _, tc := range []struct{ attach, want string }{
		{"eth0", "overlay interface"},
		{"nosuch", "must exist"},
		{"lo", "loopback"},
		{"br9", "is a bridge"},
		{"d1", "already a port of br9"},
	} {
		var err error
		a.node.Do(func() {
			_, err = Start(Config{TUN: "eth0", Segments: []Segment{Plan("office", "tomoe-l2", a.addr, members, netip.Addr{}, tc.attach, 1400)}})
		})
		if err == nil || !strings.Contains(err.Error(), `attach = "`+tc.attach+`"`) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("attach %s: %v, want an error naming attach = %q and %q", tc.attach, err, tc.attach, tc.want)
		}
		if _, err := a.node.Try("ip", "link", "show", "tomoe-l2"); err == nil {
			t.Fatalf("attach %s: the bridge was left behind", tc.attach)
		}
	}
	// Another segment's bridge and its inner ports are tomoe's.
	seg1 := Plan("office", "tomoe-l2", a.addr, members, netip.Addr{}, "d2", 1400)
	a.start(t, seg1)
	inner, outerVeth, _ := innerNames("tomoe-l2")
	for _, other := range []string{"tomoe-l2", inner, outerVeth, seg1.Tunnels()[0].Device} {
		seg2 := Plan("lab", "l2-lab", a.addr, members, netip.Addr{}, other, 1400)
		var err error
		a.node.Do(func() { err = a.mgr.Update([]Segment{seg1, seg2}) })
		if err == nil || !strings.Contains(err.Error(), `attach = "`+other+`"`) {
			t.Errorf("attach %s (tomoe's): %v", other, err)
		}
	}
	if st := a.status(t); st.Name != "office" || len(st.Members) != 1 {
		t.Errorf("the running segment after refused updates: %+v", st)
	}
}

// TestSTPRootFromOverlay: a member with no attached port (b) sends
// configuration BPDUs claiming the best bridge ID there is (priority 0)
// into the segment. a, which attaches a LAN, should not make a remote
// member the root of its spanning tree: it would then announce that root
// on its attached LAN, whose switches (running STP with the usual
// priority 32768) would re-root their own tree towards it, and b could
// re-shape or, stopping and starting, repeatedly re-converge (black-hole
// for the forward delays) the attached LAN's topology.
func TestSTPRootFromOverlay(t *testing.T) {
	t.Skip("known, not fixed (README Virtual Ethernet, Loops: the spanning tree trusts every member): STP has no authentication, and a member's BPDUs through its tunnel can make it the root of an attaching member's bridge")
	requireL2(t)
	s := newSites(t, "a", "b")
	a, b := s["a"], s["b"]
	members := addrs(a, b)
	a.start(t, Plan("office", "tomoe-l2", a.addr, members, netip.Addr{}, "lan0", 1400))
	b.start(t, Plan("office", "tomoe-l2", b.addr, members, netip.Addr{}, "", 1400))
	testnet.WaitFor(t, waitTime, "a's way into the overlay forwards", func() bool { return a.status(t).OverlayState == "forwarding" })

	// Claiming priority 0, with timers of 20 s max age, 2 s hello, 15 s
	// forward delay.
	bpdu := configBPDU([]byte{0x02, 0, 0, 0, 0, 0x01}, 20, 2, 15)

	rx := func() uint64 { return a.status(t).Members[0].Counters.RxFrames }
	before := rx()
	testnet.WaitFor(t, 10*time.Second, "b's forged BPDUs reach a's bridge", func() bool {
		sendRaw(t, b.node.Netns, "tomoe-l2", bpdu)
		return rx() >= before+3
	})
	out := a.node.Run("ip", "-d", "link", "show", "dev", "tomoe-l2")
	if !strings.Contains(out, " root_port 0 ") {
		t.Errorf("a's bridge took its root through the overlay from b, which has no attached port (its bridge runs no STP): the BPDUs were forged, and a announces that root on its attached LAN")
	}
	if !strings.Contains(out, " forward_delay 200 ") || !strings.Contains(out, " max_age 600 ") {
		t.Errorf("a's bridge took the forged BPDUs' timers (forward delay 15 s, max age 20 s; a member may send up to 255 s):\n%s", out)
	}
}

// sendRaw sends frame out of ifname in ns.
func sendRaw(t *testing.T, ns *testnet.Netns, ifname string, frame []byte) {
	t.Helper()
	withPacketSocket(t, ns, ifname, func(fd int, to *unix.SockaddrLinklayer) {
		if err := unix.Sendto(fd, frame, 0, to); err != nil {
			t.Fatal(err)
		}
	})
}

// configBPDU is an 802.1D configuration BPDU from bridge (a MAC) claiming
// to be the root with priority 0, with timers in seconds.
func configBPDU(bridge []byte, maxAge, hello, fwd uint16) []byte {
	f := make([]byte, 60)
	copy(f[0:6], []byte{0x01, 0x80, 0xc2, 0, 0, 0})
	copy(f[6:12], bridge)
	binary.BigEndian.PutUint16(f[12:14], 38)
	copy(f[14:17], []byte{0x42, 0x42, 0x03})
	c := f[17:]
	copy(c[5:13], append([]byte{0, 0}, bridge...))
	copy(c[17:25], append([]byte{0, 0}, bridge...))
	binary.BigEndian.PutUint16(c[25:27], 0x8001)
	binary.BigEndian.PutUint16(c[29:31], maxAge*256)
	binary.BigEndian.PutUint16(c[31:33], hello*256)
	binary.BigEndian.PutUint16(c[33:35], fwd*256)
	return f
}

// TestSTPLoopForgedByMember: as in TestSegmentLoopThroughLAN, a and b
// attach one LAN and the spanning tree blocks one side of the ring. A
// third member, c, sends forged BPDUs (root priority 0) through its
// tunnel to a only. a takes its root through the overlay and announces it
// on the LAN; b then takes its root through the LAN, and, hearing no
// better BPDU on the overlay (a sends none on its root port, c's went to
// a only), makes itself designated there: every port forwards, and the
// ring is closed by one member's forged frames.
func TestSTPLoopForgedByMember(t *testing.T) {
	t.Skip("known, not fixed (README Virtual Ethernet, Loops: the spanning tree trusts every member): isolated tunnels let a member tell two attaching members different things; the fix is to copy each BPDU from a tunnel to every other tunnel, as a shared Ethernet would")
	requireL2(t)
	s := newSites(t, "a", "b", "c")
	a, b, c := s["a"], s["b"], s["c"]
	lanHost := sharedLAN(t, a, b)
	members := addrs(a, b, c)
	a.start(t, Plan("office", "tomoe-l2", a.addr, members, netip.Addr{}, "lan1", 1400))
	b.start(t, Plan("office", "tomoe-l2", b.addr, members, netip.Addr{}, "lan1", 1400))
	c.start(t, Plan("office", "tomoe-l2", c.addr, members, netip.Addr{}, "", 1400))
	testnet.WaitFor(t, 30*time.Second, "the spanning tree blocks one side of the ring", func() bool {
		sa, sb := a.status(t), b.status(t)
		return strings.Contains(sa.AttachState+sa.OverlayState+sb.AttachState+sb.OverlayState, "blocking")
	})
	var toA string
	for _, m := range c.status(t).Members {
		if m.Address == a.addr {
			toA = m.Device
		}
	}
	bpdu := configBPDU([]byte{0x02, 0, 0, 0, 0, 0x01}, 6, 1, 2)
	forwarding := func() bool {
		sa, sb := a.status(t), b.status(t)
		for _, p := range []string{sa.AttachState, sa.OverlayState, sb.AttachState, sb.OverlayState} {
			if p != "forwarding" {
				return false
			}
		}
		return true
	}
	// The property: c's frames do not open the ring. c sends a BPDU each
	// hello (1 s, its own timer, not a wait) for as long as the spanning
	// tree needs to act on them (c's max age and twice its forward delay,
	// and a margin): a and b must not both forward all the while.
	hello := time.NewTicker(time.Second)
	defer hello.Stop()
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end) && !forwarding(); <-hello.C {
		sendRaw(t, c.node.Netns, toA, bpdu)
	}
	if forwarding() {
		n := echoes(t, lanHost, "eth0", 3*time.Second)
		t.Errorf("c's forged BPDUs (to a only) put every port of a and b forwarding: the ring through the LAN is closed; one broadcast came back %d times in 3 s", n)
	}
}
