package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/l2"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// l2Site is a kernel-mode node with a plain host behind it, on a veth
// (lan0 on the node) that the node attaches to the segment.
type l2Site struct {
	*kernelNode
	lanHost *testnet.Netns
	ip      string // the plain host's address on the segment
}

func newL2Site(t *testing.T, lan *testnet.LAN, name, ip string) *l2Site {
	t.Helper()
	s := &l2Site{kernelNode: &kernelNode{nodeDir: newNodeDir(t, name), host: lan.Hosts[name]}, ip: ip}
	if ip != "" {
		s.lanHost = testnet.NewNetns(t, "h"+name)
		s.host.Veth("lan0", s.lanHost, "eth0")
		s.lanHost.Run("ip", "addr", "add", ip+"/24", "dev", "eth0")
	}
	return s
}

func l2Block(members []*l2Site, hub *l2Site, attach bool) string {
	var ms []string
	for _, m := range members {
		ms = append(ms, strconv.Quote(m.pub().String()))
	}
	b := fmt.Sprintf("[[l2]]\nname = \"office\"\nmembers = [%s]\n", strings.Join(ms, ", "))
	if hub != nil {
		b += fmt.Sprintf("hub = %q\n", hub.pub().String())
	}
	if attach {
		b += "attach = \"lan0\"\n"
	}
	return b
}

func (s *l2Site) pings(ip string) bool {
	_, err := s.lanHost.Try("ping", "-c", "1", "-W", "1", ip)
	return err == nil
}

func (s *l2Site) l2(t *testing.T) adminapi.L2 {
	t.Helper()
	var out adminapi.L2
	s.cliJSON(t, &out, "l2")
	return out
}

// TestL2Segment: two sites (a LAN namespace with a plain host behind a
// kernel-mode node each) and a third node as the hub join one Ethernet
// segment. The hosts, on one /24, reach each other by ARP and ping; a
// DHCP server (dnsmasq) in site a gives b's host an address; a
// broadcast reaches every member (both hosts and the hub's own address on
// the segment); TCP with 1500-byte MTUs at both hosts works across the
// smaller segment MTU (MSS clamping); a node the hub's policy otherwise
// admits but that is not a member cannot join; 10,000 random source MACs
// leave the MAC tables bounded; taking a member out of the hub's config
// (tomoe reload), or out of the segment through the admin API (tomoe l2
// remove), or revoking it, cuts it at once; stopping a node removes its bridge and tunnels and releases the
// attached port.
//
// Serial (main_test.go): it floods 10,000 frames, and expects the MAC
// table full within 10 s of them.
func TestL2Segment(t *testing.T) {
	testnet.RequireRoot(t)
	lan := testnet.NewLAN(t, "a", "b", "hub", "x")
	a := newL2Site(t, lan, "a", "192.168.77.1")
	b := newL2Site(t, lan, "b", "192.168.77.2")
	h := newL2Site(t, lan, "hub", "")
	x := newL2Site(t, lan, "x", "192.168.77.9")
	members := []*l2Site{a, b}
	a.body = peerBlock(h.nodeDir, h.endpoint()) + l2Block(members, h, true)
	b.body = peerBlock(h.nodeDir, h.endpoint()) + l2Block(members, h, true)
	// The hub talks to x (any protocol), but x is no member.
	h.body = peerBlock(a.nodeDir, a.endpoint()) + peerBlock(b.nodeDir, b.endpoint()) + peerBlock(x.nodeDir, x.endpoint()) +
		allowBlock(x.pub().String(), "any", "") + l2Block(members, h, false)
	x.body = peerBlock(h.nodeDir, h.endpoint()) + allowBlock(h.pub().String(), "any", "") + l2Block([]*l2Site{a, b, x}, h, true)
	for _, s := range []*l2Site{a, b, h, x} {
		s.launch(t)
	}
	for _, s := range []*l2Site{a, b, h, x} {
		s.ready(t)
	}
	h.host.Run("ip", "addr", "add", "192.168.77.3/24", "dev", config.DefaultL2Interface)

	testnet.WaitFor(t, 20*time.Second, "a's host pings b's host through the hub", func() bool { return a.pings(b.ip) })
	if !b.pings(a.ip) || !a.pings("192.168.77.3") {
		t.Fatal("b's host -> a's host, or a's host -> the hub's address, does not ping")
	}
	st := h.l2(t)
	if len(st.Segments) != 1 || !st.Segments[0].Hub || len(st.Segments[0].Members) != 2 {
		t.Fatalf("hub's tomoe l2: %+v", st)
	}
	for _, m := range st.Segments[0].Members {
		if m.MACs < 1 || m.Counters.RxFrames == 0 {
			t.Errorf("hub's member %s: %+v, want its host's MAC and frames", m.Address, m)
		}
	}
	// The node notices sessions by polling the device.
	testnet.WaitFor(t, 15*time.Second, "both members up in the hub's tomoe l2", func() bool {
		for _, m := range h.l2(t).Segments[0].Members {
			if !m.Up {
				return false
			}
		}
		return true
	})
	if out := h.cli(t, "l2"); !strings.Contains(out, "segment office") || !strings.Contains(out, a.addr()) || !strings.Contains(out, "up") {
		t.Errorf("tomoe l2:\n%s", out)
	}

	// A broadcast reaches every member.
	b.lanHost.Sysctl("net/ipv4/icmp_echo_ignore_broadcasts", "0")
	h.host.Sysctl("net/ipv4/icmp_echo_ignore_broadcasts", "0")
	testnet.WaitFor(t, 10*time.Second, "a broadcast ping answered by b's host and the hub", func() bool {
		out, _ := a.lanHost.Try("ping", "-b", "-c", "2", "-i", "0.2", "-W", "1", "192.168.77.255")
		return strings.Contains(out, "from "+b.ip+":") && strings.Contains(out, "from 192.168.77.3:")
	})

	// A DHCP server (dnsmasq) in site a gives b's host an address.
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		t.Log("dnsmasq is not installed (apt-get install dnsmasq-base): DHCP across the segment not tested")
	} else {
		a.lanHost.Start(t, "dnsmasq", "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root",
			"--pid-file=", "--dhcp-leasefile="+t.TempDir()+"/leases", "--interface=eth0", "--no-ping",
			"--dhcp-range=192.168.77.100,192.168.77.150,255.255.255.0,1h")
		var lease string
		testnet.WaitFor(t, 15*time.Second, "a DHCP lease for b's host from the server in site a", func() bool {
			var err error
			lease, err = dhcpLease(t, b.lanHost, 2*time.Second)
			return err == nil
		})
		if !strings.HasPrefix(lease, "192.168.77.1") {
			t.Errorf("DHCP lease %s, want one of 192.168.77.100-150", lease)
		}
		t.Logf("b's host got %s by DHCP from the server behind a", lease)
	}

	// TCP between 1500-byte hosts: the segment's MTU is smaller, the MSS
	// clamp makes the hosts send segments that fit.
	tcpAcross(t, a, b, 256<<10)

	// x, a peer of the hub but no member, cannot join: its host reaches
	// no one on the segment, and the hub has no tunnel to it.
	for i := 0; i < 3; i++ {
		if x.pings(a.ip) || x.pings(b.ip) {
			t.Fatal("x's host reached the segment")
		}
	}
	for _, m := range h.l2(t).Segments[0].Members {
		if m.Address == x.addr() {
			t.Fatal("the hub has a tunnel to x")
		}
	}
	if out := a.host.Run("bridge", "fdb", "show", "br", config.DefaultL2Interface); strings.Contains(out, macOf(t, x.lanHost)) {
		t.Errorf("a's bridge learned x's host:\n%s", out)
	}

	// 10,000 random source MACs from a's host: the tables stay bounded.
	floodMACs(t, a.lanHost, 10000)
	testnet.WaitFor(t, 10*time.Second, "a's bridge full", func() bool { return a.l2(t).Segments[0].MACs >= l2.DefaultMaxMACs-8 })
	for _, s := range []*l2Site{a, h, b} {
		if n := s.l2(t).Segments[0].MACs; n > l2.DefaultMaxMACs {
			t.Errorf("%s learned %d MAC addresses, bound %d", s.name, n, l2.DefaultMaxMACs)
		}
	}
	testnet.WaitFor(t, 10*time.Second, "a's host still pings b's host", func() bool { return a.pings(b.ip) })

	// Taking b out of the hub's members (tomoe reload) cuts it at once;
	// putting it back lets it in again.
	hubBody := h.body
	h.body = peerBlock(a.nodeDir, a.endpoint()) + peerBlock(b.nodeDir, b.endpoint()) + peerBlock(x.nodeDir, x.endpoint()) +
		allowBlock(x.pub().String(), "any", "") + l2Block([]*l2Site{a}, h, false)
	h.writeConfig(t)
	var res adminapi.ReloadResult
	h.cliJSON(t, &res, "reload")
	if res.L2 != (adminapi.ReloadCount{Removed: 1}) || len(res.Errors) > 0 {
		t.Fatalf("reload without b: %+v", res)
	}
	if a.pings(b.ip) {
		t.Fatal("b's host still reachable after b left the hub's members")
	}
	if st := h.l2(t); len(st.Segments[0].Members) != 1 {
		t.Errorf("hub's members after b left: %+v", st.Segments[0].Members)
	}
	h.body = hubBody
	h.writeConfig(t)
	res = adminapi.ReloadResult{}
	h.cliJSON(t, &res, "reload")
	if res.L2 != (adminapi.ReloadCount{Added: 1}) {
		t.Fatalf("reload with b again: %+v", res)
	}
	testnet.WaitFor(t, 15*time.Second, "a's host pings b's host again", func() bool { return a.pings(b.ip) })

	// The same through the admin API (tomoe l2 remove/add), kept in
	// services.json.
	h.cli(t, "l2", "remove", "office", b.pub().String())
	if a.pings(b.ip) {
		t.Fatal("b's host still reachable after tomoe l2 remove")
	}
	if st := h.l2(t); len(st.Segments[0].Members) != 1 {
		t.Errorf("hub's members after tomoe l2 remove: %+v", st.Segments[0].Members)
	}
	if data, err := os.ReadFile(filepath.Join(h.dir, "services.json")); err != nil || !strings.Contains(string(data), `"segment": "office"`) {
		t.Errorf("services.json after tomoe l2 remove: %s %v", data, err)
	}
	h.cli(t, "l2", "add", "office", b.addr())
	testnet.WaitFor(t, 15*time.Second, "a's host pings b's host after tomoe l2 add", func() bool { return a.pings(b.ip) })
	if r := run(t, "", "l2", "add", "nosuch", b.addr(), "--socket", h.socket()); r.code == 0 || !strings.Contains(r.stderr, "nosuch") {
		t.Errorf("tomoe l2 add to an unknown segment: exit %d, %s", r.code, r.stderr)
	}

	// Revoking b on the hub cuts it at once.
	h.cli(t, "policy", "revoke", b.pub().String())
	if a.pings(b.ip) || b.pings("192.168.77.3") {
		t.Fatal("b still on the segment after the hub revoked it")
	}

	// Stopping a removes its bridge and tunnels and releases lan0.
	a.stop(t)
	out := a.host.Run("ip", "-d", "link", "show")
	if strings.Contains(out, config.DefaultL2Interface) || strings.Contains(out, "vxlan") || strings.Contains(out, "master") {
		t.Errorf("a's links after stop:\n%s", out)
	}
	if out, _ := a.host.Try("nft", "list", "tables"); strings.Contains(out, l2.TableName) {
		t.Errorf("a's nftables after stop:\n%s", out)
	}
}

// TestL2Mesh: two sites, no hub: each node has a tunnel to the other
// (isolated: a full mesh needs no forwarding between tunnels); the hosts
// ping each other, and `tomoe l2` shows the member up with its MAC.
func TestL2Mesh(t *testing.T) {
	parallel(t, 15*time.Second)
	testnet.RequireRoot(t)
	lan := testnet.NewLAN(t, "a", "b")
	a := newL2Site(t, lan, "a", "192.168.78.1")
	b := newL2Site(t, lan, "b", "192.168.78.2")
	// a also offers a route: tomoe then turns forwarding on, and its
	// firewall drops forwarded packets that do not cross the TUN
	// interface, but not bridged ones (br_netfilter hands them to the
	// same hook).
	a.body = peerBlock(b.nodeDir, b.endpoint()) + offerBlock("10.99.0.0/24", false) + l2Block([]*l2Site{a, b}, nil, true)
	b.body = peerBlock(a.nodeDir, a.endpoint()) + l2Block([]*l2Site{a, b}, nil, true)
	a.launch(t)
	b.launch(t)
	a.ready(t)
	b.ready(t)
	testnet.WaitFor(t, 20*time.Second, "a's host pings b's host", func() bool { return a.pings(b.ip) })
	testnet.WaitFor(t, 15*time.Second, "b up in a's tomoe l2", func() bool {
		st := a.l2(t)
		return len(st.Segments) == 1 && len(st.Segments[0].Members) == 1 && st.Segments[0].Members[0].Up
	})
	st := a.l2(t).Segments[0]
	if st.Hub || st.Members[0].Address != b.addr() || st.Members[0].MACs < 1 || st.MTU != 1400-l2.Overhead {
		t.Errorf("a's segment: %+v", st)
	}
	if out := a.host.Run("ip", "-d", "link", "show", "dev", st.Members[0].Device); !strings.Contains(out, "isolated on") {
		t.Errorf("a full mesh's tunnel is not isolated:\n%s", out)
	}
	tcpAcross(t, a, b, 64<<10)
}

// tcpAcross sends n bytes from from's host to to's host over TCP and reads
// them back.
func tcpAcross(t *testing.T, from, to *l2Site, n int) {
	t.Helper()
	var ln net.Listener
	var err error
	to.lanHost.Do(func() { ln, err = net.Listen("tcp4", to.ip+":7000") })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go testnet.Echo(ln)
	var c net.Conn
	from.lanHost.Do(func() { c, err = net.DialTimeout("tcp4", to.ip+":7000", 5*time.Second) })
	if err != nil {
		t.Fatalf("tcp to %s: %v", to.ip, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	line := strings.Repeat("x", 8000) + "\n"
	go func() {
		for sent := 0; sent < n; sent += len(line) {
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
	}()
	got := 0
	buf := make([]byte, 64<<10)
	for got < n {
		k, err := c.Read(buf)
		if err != nil {
			t.Fatalf("tcp across the segment: %d of %d bytes echoed: %v", got, n, err)
		}
		got += k
	}
}

func macOf(t *testing.T, ns *testnet.Netns) string {
	t.Helper()
	var mac string
	ns.Do(func() {
		if i, err := net.InterfaceByName("eth0"); err == nil {
			mac = i.HardwareAddr.String()
		}
	})
	if mac == "" {
		t.Fatal("no eth0")
	}
	return mac
}

// floodMACs writes n frames from random unicast source MACs to an unknown
// unicast destination (flooded across the segment) from eth0 in ns.
func floodMACs(t *testing.T, ns *testnet.Netns, n int) {
	t.Helper()
	ns.Do(func() {
		ifc, err := net.InterfaceByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Ifindex: ifc.Index, Halen: 6}
		frame := make([]byte, 60)
		copy(frame, []byte{0x02, 0, 0, 0x77, 0x77, 0x77})
		frame[12], frame[13] = 0x88, 0xb5 // local experimental EtherType
		for i := 0; i < n; i++ {
			rand.Read(frame[6:12])
			frame[6] = frame[6]&^1 | 2
			if err := unix.Sendto(fd, frame, 0, to); err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
		}
	})
}

// dhcpLease asks for an address from eth0 in ns (DHCP discover, offer,
// request, ack, with the broadcast flag) and returns the address the
// server acknowledged.
func dhcpLease(t *testing.T, ns *testnet.Netns, timeout time.Duration) (string, error) {
	t.Helper()
	var pc net.PacketConn
	var mac net.HardwareAddr
	var err error
	ns.Do(func() {
		var ifc *net.Interface
		if ifc, err = net.InterfaceByName("eth0"); err != nil {
			return
		}
		mac = ifc.HardwareAddr
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
				if serr == nil {
					serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, "eth0")
				}
			}); err != nil {
				return err
			}
			return serr
		}}
		pc, err = lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:68")
	})
	if err != nil {
		return "", err
	}
	defer pc.Close()
	xid := [4]byte{0x74, 0x6f, 0x6d, 0x6f}
	msg := func(typ byte, opts ...byte) []byte {
		b := make([]byte, 240, 300)
		b[0], b[1], b[2] = 1, 1, 6 // BOOTREQUEST, Ethernet
		copy(b[4:8], xid[:])
		b[10] = 0x80 // broadcast the answer: the client has no address yet
		copy(b[28:34], mac)
		copy(b[236:240], []byte{99, 130, 83, 99})
		b = append(b, 53, 1, typ)
		b = append(b, opts...)
		return append(b, 255)
	}
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: 67}
	// read waits for a reply of type want to our xid; it returns yiaddr
	// and the server identifier.
	read := func(want byte) (net.IP, []byte, error) {
		buf := make([]byte, 1500)
		pc.SetReadDeadline(time.Now().Add(timeout))
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return nil, nil, err
			}
			b := buf[:n]
			if n < 240 || b[0] != 2 || [4]byte(b[4:8]) != xid {
				continue
			}
			var typ byte
			var server []byte
			for o := b[240:]; len(o) >= 2 && o[0] != 255; {
				if o[0] == 0 {
					o = o[1:]
					continue
				}
				l := int(o[1])
				if len(o) < 2+l {
					break
				}
				switch o[0] {
				case 53:
					if l == 1 {
						typ = o[2]
					}
				case 54:
					server = append([]byte(nil), o[2:2+l]...)
				}
				o = o[2+l:]
			}
			if typ == want {
				return net.IP(append([]byte(nil), b[16:20]...)), server, nil
			}
		}
	}
	if _, err := pc.WriteTo(msg(1), bcast); err != nil {
		return "", err
	}
	offered, server, err := read(2)
	if err != nil {
		return "", fmt.Errorf("no DHCP offer: %w", err)
	}
	req := append([]byte{50, 4}, offered.To4()...)
	req = append(req, 54, byte(len(server)))
	req = append(req, server...)
	if _, err := pc.WriteTo(msg(3, req...), bcast); err != nil {
		return "", err
	}
	acked, _, err := read(5)
	if err != nil {
		return "", fmt.Errorf("no DHCP ack for %s: %w", offered, err)
	}
	return acked.String(), nil
}

// TestL2GroupMembers: a hub segment whose members are an organisation's
// group (members = ["group:acme/office"]). The hub builds a tunnel to each
// node whose valid office certificate it holds (learned from the member's
// first handshake), and to no other: x, with a sales certificate, gets
// none until `tomoe l2 add office name:x.acme`, and loses it with `tomoe
// l2 remove`. `tomoe l2 --json` shows which identities matched. A member that
// starts later joins without a restart of the hub; a revoked member is cut
// at once and its tunnel goes.
func TestL2GroupMembers(t *testing.T) {
	parallel(t, 50*time.Second)
	testnet.RequireRoot(t)
	lan := testnet.NewLAN(t, "a", "b", "c", "hub", "x")
	a := newL2Site(t, lan, "a", "192.168.79.1")
	b := newL2Site(t, lan, "b", "192.168.79.2")
	c := newL2Site(t, lan, "c", "192.168.79.3")
	x := newL2Site(t, lan, "x", "192.168.79.9")
	h := newL2Site(t, lan, "hub", "")
	acme := newOrgKey(t, t.TempDir(), "acme")
	segment := func(attach bool) string {
		s := fmt.Sprintf("[[l2]]\nname = \"office\"\nmembers = [\"group:acme/office\"]\nhub = %q\n", h.pub().String())
		if attach {
			s += "attach = \"lan0\"\n"
		}
		return s
	}
	for _, m := range []struct {
		s            *l2Site
		name, groups string
	}{{a, "a.acme", "office"}, {b, "b.acme", "office"}, {x, "x.acme", "sales"}} {
		m.s.body = peerBlock(h.nodeDir, h.endpoint()) + acme.block(acme.sign(t, m.s.nodeDir, m.name, m.groups), "") + segment(true)
	}
	// The hub verifies acme's certificates and holds none; it knows a, b
	// and x as static peers, c not at all.
	h.body = peerBlock(a.nodeDir, a.endpoint()) + peerBlock(b.nodeDir, b.endpoint()) + peerBlock(x.nodeDir, x.endpoint()) +
		acme.block("", "") + segment(false)
	for _, s := range []*l2Site{a, b, x, h} {
		s.launch(t)
	}
	for _, s := range []*l2Site{a, b, x, h} {
		s.ready(t)
	}
	testnet.WaitFor(t, 30*time.Second, "a's host pings b's host through the hub", func() bool { return a.pings(b.ip) })

	tunnels := func() map[string]adminapi.L2Member {
		out := map[string]adminapi.L2Member{}
		for _, m := range h.l2(t).Segments[0].Members {
			out[m.Address] = m
		}
		return out
	}
	seg := h.l2(t).Segments[0]
	if !seg.Hub || len(seg.Members) != 2 || len(seg.CertMembers) != 1 || seg.CertMembers[0].Member != "group:acme/office" || len(seg.CertMembers[0].Matched) != 2 {
		t.Fatalf("hub's segment: %+v", seg)
	}
	for _, m := range seg.Members {
		if len(m.MatchedBy) != 1 || m.MatchedBy[0] != "group:acme/office" || len(m.CertNames) != 1 {
			t.Errorf("hub's tunnel to %s: matched by %v, names %v", m.Address, m.MatchedBy, m.CertNames)
		}
	}
	if m := tunnels()[a.addr()]; len(m.CertNames) != 1 || m.CertNames[0] != "a.acme" {
		t.Errorf("hub's tunnel to a: %+v", m)
	}
	if out := h.cli(t, "l2"); !strings.Contains(out, "group:acme/office: 2 with a tunnel") {
		t.Errorf("tomoe l2:\n%s", out)
	}

	// x (sales) talks to the hub, and its certificate is held there, but
	// it gets no tunnel, and its host reaches no one on the segment.
	x.pings(a.ip)
	testnet.WaitFor(t, 15*time.Second, "the hub holds x's certificate", func() bool {
		for _, p := range h.peerList(t) {
			if p.Address == x.addr() && p.CertName == "x.acme" {
				return true
			}
		}
		return false
	})
	if _, ok := tunnels()[x.addr()]; ok || x.pings(a.ip) || x.pings(b.ip) {
		t.Fatal("x, not in the group, is on the segment")
	}

	// x by name, through the admin API: a tunnel at once; removed, cut at
	// once.
	h.cli(t, "l2", "add", "office", "name:x.acme")
	testnet.WaitFor(t, 20*time.Second, "x's host pings a's host after tomoe l2 add name:x.acme", func() bool { return x.pings(a.ip) })
	if m := tunnels()[x.addr()]; len(m.MatchedBy) != 1 || m.MatchedBy[0] != "name:x.acme" {
		t.Errorf("hub's tunnel to x: %+v", m)
	}
	h.cli(t, "l2", "remove", "office", "name:x.acme")
	if x.pings(a.ip) {
		t.Fatal("x's host still reaches the segment after tomoe l2 remove name:x.acme")
	}
	if _, ok := tunnels()[x.addr()]; ok {
		t.Error("the hub's tunnel to x is still there after tomoe l2 remove")
	}

	// c starts now, unknown to the hub: its first handshake brings its
	// certificate, and the hub a tunnel to it, without a restart.
	c.body = peerBlock(h.nodeDir, h.endpoint()) + acme.block(acme.sign(t, c.nodeDir, "c.acme", "office,lab"), "") + segment(true)
	c.start(t)
	testnet.WaitFor(t, 30*time.Second, "a's host pings c's host, which joined later", func() bool { return a.pings(c.ip) })
	if m, ok := tunnels()[c.addr()]; !ok || m.MatchedBy[0] != "group:acme/office" {
		t.Errorf("hub's tunnel to c: %+v", m)
	}

	// b's certificate is revoked (by its node key), the list pushed to the
	// hub: b is cut at once, and its tunnel goes.
	crl := filepath.Join(t.TempDir(), "acme.crl")
	mustRun(t, "cert", "revoke", "--org-key", acme.file, "--out", crl, b.pub().String())
	h.cli(t, "org", "crl", "push", crl)
	if a.pings(b.ip) || b.pings(c.ip) {
		t.Fatal("b still on the segment after its certificate was revoked")
	}
	testnet.WaitFor(t, 5*time.Second, "the hub's tunnel to b gone", func() bool {
		_, ok := tunnels()[b.addr()]
		return !ok
	})
	if st := h.l2(t).Segments[0]; len(st.Members) != 2 || len(st.CertMembers[0].Matched) != 2 {
		t.Errorf("hub's segment after b's revocation: %+v", st)
	}
	if !a.pings(c.ip) {
		t.Error("a's host lost c's host when b was revoked")
	}
}

// TestL2GroupMesh: a full mesh of group:acme/office. Each member learns
// the other's certificate from a session (the node greets its static
// peers when a mesh names members by certificate: nothing else makes the
// two talk), then both build the tunnel and the hosts ping.
func TestL2GroupMesh(t *testing.T) {
	parallel(t, 15*time.Second)
	testnet.RequireRoot(t)
	lan := testnet.NewLAN(t, "a", "b")
	a := newL2Site(t, lan, "a", "192.168.80.1")
	b := newL2Site(t, lan, "b", "192.168.80.2")
	acme := newOrgKey(t, t.TempDir(), "acme")
	segment := "[[l2]]\nname = \"office\"\nmembers = [\"group:acme/office\"]\nattach = \"lan0\"\n"
	a.body = peerBlock(b.nodeDir, b.endpoint()) + acme.block(acme.sign(t, a.nodeDir, "a.acme", "office"), "") + segment
	b.body = peerBlock(a.nodeDir, a.endpoint()) + acme.block(acme.sign(t, b.nodeDir, "b.acme", "office"), "") + segment
	a.launch(t)
	b.launch(t)
	a.ready(t)
	b.ready(t)
	t.Cleanup(func() {
		if t.Failed() {
			for _, x := range []*l2Site{a, b} {
				t.Logf("%s: l2 %s\npeers %s\norgs %s", x.name, x.cli(t, "l2", "--json"), x.cli(t, "peers"), x.cli(t, "org", "status"))
			}
		}
	})
	testnet.WaitFor(t, 30*time.Second, "a's host pings b's host", func() bool { return a.pings(b.ip) })
	for _, x := range []struct{ s, other *l2Site }{{a, b}, {b, a}} {
		seg := x.s.l2(t).Segments[0]
		if seg.Hub || len(seg.Members) != 1 || seg.Members[0].Address != x.other.addr() || len(seg.Members[0].MatchedBy) != 1 || seg.Members[0].MatchedBy[0] != "group:acme/office" {
			t.Errorf("%s's segment: %+v", x.s.name, seg)
		}
		if !seg.STP || seg.AttachState != "forwarding" || seg.OverlayState != "forwarding" {
			t.Errorf("%s's spanning tree: stp %v, attach %s, overlay %s", x.s.name, seg.STP, seg.AttachState, seg.OverlayState)
		}
	}
}
