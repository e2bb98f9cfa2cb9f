//go:build linux

package firewall

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tomoe-net/tomoe/internal/testnet"
)

// These tests run as root, each in fresh network namespaces, with a veth
// named like the TUN interface standing in for it: the rules only look at
// interface names, and plain kernel forwarding is enough to prove them.

const (
	tun = "tomoe0"
	// answerTimeout bounds every wait for something that should happen.
	answerTimeout = 3 * time.Second
	// silence is how long something that should not happen is waited for.
	silence = 500 * time.Millisecond
)

// requireFirewall skips t unless it can run nftables in a namespace.
func requireFirewall(t *testing.T) {
	t.Helper()
	testnet.RequireRoot(t)
	testnet.RequireNftables(t)
	ns := testnet.NewNetns(t, "nftprobe")
	if out, err := ns.Try("nft", "add", "table", "inet", "probe"); err != nil {
		t.Skipf("skipped: the kernel does not support nftables here: %v\n%s", err, out)
	}
}

// open installs cfg in ns; the table is removed when the test ends.
func open(t *testing.T, ns *testnet.Netns, cfg Config) *Firewall {
	t.Helper()
	var f *Firewall
	var err error
	ns.Do(func() { f, err = Open(cfg) })
	if err != nil {
		t.Fatalf("Open in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// listTable returns `nft list table inet tomoe` in ns, one rule per line
// with runs of blanks collapsed, and whether the table exists.
func listTable(t *testing.T, ns *testnet.Netns) (string, bool) {
	t.Helper()
	out, err := ns.Try("nft", "list", "table", "inet", TableName)
	if err != nil {
		return out, false
	}
	var lines []string
	for l := range strings.Lines(out) {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	return strings.Join(lines, "\n"), true
}

func wantRules(t *testing.T, ns *testnet.Netns, want, notWant []string) {
	t.Helper()
	got, ok := listTable(t, ns)
	if !ok {
		t.Fatalf("table inet %s missing: %s", TableName, got)
	}
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("ruleset lacks %q; it is:\n%s", w, got)
		}
	}
	for _, w := range notWant {
		if strings.Contains(got, w) {
			t.Errorf("ruleset has %q; it is:\n%s", w, got)
		}
	}
}

func fullConfig() Config {
	return Config{
		TUN:            tun,
		NodeAddr:       nodeAddr,
		IPv4:           netip.MustParseAddr("10.99.0.1"),
		Site:           site,
		Masquerade:     []netip.Prefix{netip.MustParsePrefix("192.168.10.0/24"), netip.MustParsePrefix("::/0")},
		ForwardTUNOnly: true,
		Bridges:        []string{"tomoe-l2"},
		ClampMSS:       true,
		Stealth:        true,
		UDPPort:        4610,
		TCPPorts:       []uint16{4611, 443},
	}
}

// The installed rules are the ones documented, as nft reads them back;
// Update replaces them, from any thread, in the namespace Open ran in;
// Close removes the table.
func TestRulesInstallUpdateClose(t *testing.T) {
	t.Parallel()
	requireFirewall(t)
	ns := testnet.NewNetns(t, "fw")
	f := open(t, ns, fullConfig())
	wantRules(t, ns, []string{
		"chain prerouting {\ntype filter hook prerouting priority raw; policy accept;",
		`ip6 saddr fc00::/8 iifname != "tomoe0" iifname != "lo" counter packets 0 bytes 0 drop`,
		`ip6 daddr fc12:3456:789a::1 iifname != "tomoe0" iifname != "lo" counter packets 0 bytes 0 drop`,
		`ip6 saddr 300::/8 ip6 saddr != 312:3456:789a:bcde::/64 iifname != "tomoe0" iifname != "lo" counter packets 0 bytes 0 drop`,
		`ip saddr 10.99.0.1 iifname != "tomoe0" iifname != "lo" counter packets 0 bytes 0 drop`,
		`ip daddr 10.99.0.1 iifname != "tomoe0" iifname != "lo" counter packets 0 bytes 0 drop`,
		"chain postrouting {\ntype nat hook postrouting priority srcnat; policy accept;",
		`iifname "tomoe0" oifname != "tomoe0" ip daddr 192.168.10.0/24 masquerade`,
		`meta nfproto ipv6 iifname "tomoe0" oifname != "tomoe0" masquerade`,
		"chain forward {\ntype filter hook forward priority mangle; policy accept;",
		`iifname "tomoe-l2" oifname "tomoe-l2" accept`,
		`iifname != "tomoe0" oifname != "tomoe0" counter packets 0 bytes 0 drop`,
		`oifname "tomoe0" tcp flags syn / syn,rst tcp option maxseg size set rt mtu`,
		`iifname "tomoe0" tcp flags syn / syn,rst tcp option maxseg size set rt mtu`,
		"chain input {\ntype filter hook input priority filter; policy accept;",
		`iifname "tomoe0" ip daddr != 10.99.0.1 counter packets 0 bytes 0 drop`,
		`iifname "tomoe0" ip6 daddr != fc12:3456:789a::1 ip6 daddr != 312:3456:789a:bcde::/64 counter packets 0 bytes 0 drop`,
		"ct state established,related accept",
		`iifname "lo" accept`,
		`iifname "tomoe0" accept`,
		"udp dport 4610 accept",
		"tcp dport 443 accept",
		"tcp dport 4611 accept",
		"icmpv6 type nd-neighbor-solicit accept",
		"icmpv6 type nd-neighbor-advert accept",
		"icmpv6 type nd-router-advert accept",
		"counter packets 0 bytes 0 drop\n}",
	}, nil)

	// Update from this goroutine, which is not in ns: the Firewall keeps
	// to the namespace it was opened in.
	upd := Config{TUN: "wg1", NodeAddr: nodeAddr, Masquerade: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/20")}}
	if err := f.Update(upd); err != nil {
		t.Fatalf("Update: %v", err)
	}
	wantRules(t, ns, []string{
		`ip6 saddr 300::/8 iifname != "wg1" iifname != "lo" counter packets 0 bytes 0 drop`,
		`iifname "wg1" oifname != "wg1" ip daddr 10.0.0.0/20 masquerade`,
	}, []string{"tomoe0", "192.168.10.0/24", "chain forward", "udp dport 4610 accept", "ip6 saddr != "})

	// A bad config changes nothing.
	if err := f.Update(Config{TUN: "wg1"}); err == nil {
		t.Errorf("Update accepted a config without a node address")
	}
	wantRules(t, ns, []string{`ip daddr 10.0.0.0/20 masquerade`}, nil)

	if err := f.Update(Config{TUN: "wg1", NodeAddr: nodeAddr}); err != nil {
		t.Fatalf("Update: %v", err)
	}
	wantRules(t, ns, []string{"chain prerouting"}, []string{"chain postrouting", "masquerade"})

	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if out, ok := listTable(t, ns); ok {
		t.Fatalf("table left after Close:\n%s", out)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := f.Update(upd); err == nil {
		t.Errorf("Update after Close succeeded")
	}
}

// Open replaces a table that a crashed tomoe left, whatever is in it, and
// Close succeeds when someone else deleted the table already.
func TestOpenReplacesStaleTable(t *testing.T) {
	t.Parallel()
	requireFirewall(t)
	ns := testnet.NewNetns(t, "fw")
	ns.Run("nft", "add", "table", "inet", TableName)
	ns.Run("nft", "add", "chain", "inet", TableName, "stale", "{ type filter hook input priority 0; policy drop; }")
	f := open(t, ns, Config{TUN: tun, NodeAddr: nodeAddr})
	wantRules(t, ns, []string{"chain prerouting"}, []string{"stale", "policy drop"})

	ns.Run("nft", "flush", "ruleset")
	// Update rebuilds the table after a reload of the host's firewall
	// flushed it.
	if err := f.Update(Config{TUN: tun, NodeAddr: nodeAddr, Stealth: true}); err != nil {
		t.Fatalf("Update after flush ruleset: %v", err)
	}
	wantRules(t, ns, []string{"chain prerouting", "chain input"}, nil)
	ns.Run("nft", "delete", "table", "inet", TableName)
	if err := f.Close(); err != nil {
		t.Fatalf("Close with the table gone: %v", err)
	}
}

// fwdLab is remote — gw — lan: remote reaches the LAN behind gw through
// gw's tomoe0, a veth standing in for the TUN interface. remote routes
// everything through gw; lan routes back only when asked to.
type fwdLab struct {
	remote, gw, lan *testnet.Netns
}

var (
	remote4, gwTun4, gwLAN4, lan4 = mustAddr("100.64.0.2"), mustAddr("100.64.0.1"), mustAddr("192.168.10.1"), mustAddr("192.168.10.2")
	remote6, gwTun6, gwLAN6, lan6 = mustAddr("fd64::2"), mustAddr("fd64::1"), mustAddr("fd10::1"), mustAddr("fd10::2")
)

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func newFwdLab(t *testing.T, lanRoutesBack bool) *fwdLab {
	t.Helper()
	l := &fwdLab{remote: testnet.NewNetns(t, "remote"), gw: testnet.NewNetns(t, "gw"), lan: testnet.NewNetns(t, "lan")}
	l.gw.Veth(tun, l.remote, "eth0")
	l.gw.Veth("lan0", l.lan, "eth0")
	l.gw.Forwarding()
	addrs := func(ns *testnet.Netns, dev string, a4, a6 netip.Addr, bits4, bits6 int) {
		ns.Run("ip", "addr", "add", netip.PrefixFrom(a4, bits4).String(), "dev", dev)
		ns.Run("ip", "addr", "add", netip.PrefixFrom(a6, bits6).String(), "dev", dev, "nodad")
	}
	addrs(l.remote, "eth0", remote4, remote6, 24, 64)
	addrs(l.gw, tun, gwTun4, gwTun6, 24, 64)
	addrs(l.gw, "lan0", gwLAN4, gwLAN6, 24, 64)
	addrs(l.lan, "eth0", lan4, lan6, 24, 64)
	l.remote.Run("ip", "route", "add", "default", "via", gwTun4.String())
	l.remote.Run("ip", "-6", "route", "add", "default", "via", gwTun6.String())
	if lanRoutesBack {
		l.lan.Run("ip", "route", "add", "default", "via", gwLAN4.String())
		l.lan.Run("ip", "-6", "route", "add", "default", "via", gwLAN6.String())
	}
	return l
}

// serve accepts TCP connections on ap in ns and hands each to handle,
// until the test ends.
func serve(t *testing.T, ns *testnet.Netns, ap netip.AddrPort, handle func(net.Conn)) {
	t.Helper()
	var ln net.Listener
	var err error
	ns.Do(func() { ln, err = net.Listen("tcp", ap.String()) })
	if err != nil {
		t.Fatalf("listen on %v in %s: %v", ap, ns.Name, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); handle(c) })
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
}

// serveWho answers each connection with the source address it came from,
// as the server sees it.
func serveWho(t *testing.T, ns *testnet.Netns, ap netip.AddrPort) {
	serve(t, ns, ap, func(c net.Conn) {
		from := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		fmt.Fprintln(c, from)
	})
}

func dialTCP(ns *testnet.Netns, to netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	var err error
	ns.Do(func() { c, err = net.DialTimeout("tcp", to.String(), timeout) })
	return c, err
}

// who connects from ns to a serveWho server and returns the source address
// it saw.
func who(ns *testnet.Netns, to netip.AddrPort, timeout time.Duration) (string, error) {
	c, err := dialTCP(ns, to, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(answerTimeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// Traffic from the overlay into an offered prefix reaches the LAN with
// gw's LAN address as its source, so LAN hosts answer without a route back
// to the overlay; traffic to a prefix not masqueraded keeps its source.
func TestMasquerade(t *testing.T) {
	t.Parallel()
	requireFirewall(t)
	tests := []struct {
		name   string
		prefix []netip.Prefix // masqueraded at first
		// later are masqueraded after Update (nil: no update)
		later []netip.Prefix
	}{
		{"offered prefixes", []netip.Prefix{netip.MustParsePrefix("192.168.10.0/24")},
			[]netip.Prefix{netip.MustParsePrefix("192.168.10.0/24"), netip.MustParsePrefix("fd10::/64")}},
		{"exit node", []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l := newFwdLab(t, false)
			srv4, srv6 := netip.AddrPortFrom(lan4, 8080), netip.AddrPortFrom(lan6, 8080)
			serveWho(t, l.lan, srv4)
			serveWho(t, l.lan, srv6)

			// Without masquerading the LAN host cannot answer.
			if got, err := who(l.remote, srv4, silence); err == nil {
				t.Fatalf("before Open, %v answered (saw %s): the lab routes back to the overlay", srv4, got)
			}

			cfg := Config{TUN: tun, NodeAddr: nodeAddr, Masquerade: tt.prefix}
			f := open(t, l.gw, cfg)
			check := func(srv netip.AddrPort, want netip.Addr, masqueraded bool) {
				t.Helper()
				wait := silence
				if masqueraded {
					wait = answerTimeout
				}
				got, err := who(l.remote, srv, wait)
				switch {
				case masqueraded && err != nil:
					t.Errorf("connect to %v with masquerade: %v", srv, err)
				case masqueraded && got != want.String():
					t.Errorf("%v saw the connection from %s, want gw's LAN address %v", srv, got, want)
				case !masqueraded && err == nil:
					t.Errorf("%v answered (saw %s), but %v is not masqueraded", srv, got, srv.Addr())
				}
			}
			check(srv4, gwLAN4, true)
			check(srv6, gwLAN6, covers(tt.prefix, lan6))

			if tt.later != nil {
				cfg.Masquerade = tt.later
				if err := f.Update(cfg); err != nil {
					t.Fatalf("Update: %v", err)
				}
				check(srv4, gwLAN4, true)
				check(srv6, gwLAN6, covers(tt.later, lan6))
			}
		})
	}
}

func covers(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// tcpMSS returns the MSS the kernel uses on c, which the MSS option of
// the peer's SYN caps.
func tcpMSS(c net.Conn) (int, error) {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var mss int
	var serr error
	if err := rc.Control(func(fd uintptr) { mss, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG) }); err != nil {
		return 0, err
	}
	return mss, serr
}

// With ClampMSS, TCP SYNs forwarded into and out of TUN carry an MSS that
// fits TUN's MTU: the SYN-ACK out of TUN shows it to the remote end, the
// SYN in from TUN to the LAN host (rt mtu is the smaller MTU of the routes
// to the packet's destination and back to its source).
func TestClampMSS(t *testing.T) {
	t.Parallel()
	requireFirewall(t)
	l := newFwdLab(t, true)
	const tunMTU = 1280
	l.gw.Run("ip", "link", "set", tun, "mtu", fmt.Sprint(tunMTU))

	// measure connects from remote to the LAN host and returns the MSS
	// each end uses. Each call needs a port of its own.
	measure := func(srv netip.AddrPort) (remote, lan int) {
		t.Helper()
		lanMSS := make(chan int, 1)
		serve(t, l.lan, srv, func(c net.Conn) {
			mss, err := tcpMSS(c)
			if err != nil {
				t.Errorf("LAN host: %v", err)
			}
			lanMSS <- mss
		})
		c, err := dialTCP(l.remote, srv, answerTimeout)
		if err != nil {
			t.Fatalf("connect to %v: %v", srv, err)
		}
		defer c.Close()
		if remote, err = tcpMSS(c); err != nil {
			t.Fatalf("remote: %v", err)
		}
		select {
		case lan = <-lanMSS:
		case <-time.After(answerTimeout):
			t.Fatalf("%v accepted nothing", srv)
		}
		return remote, lan
	}
	families := []struct {
		lan      netip.Addr
		ipHeader int
	}{{lan4, 20}, {lan6, 40}}

	for _, fam := range families {
		remote, lan := measure(netip.AddrPortFrom(fam.lan, 8001))
		if remote < 1400 || lan < 1400 {
			t.Fatalf("%v without clamping: MSS remote %d, LAN host %d; want both from the 1500-byte MTU of their own links", fam.lan, remote, lan)
		}
	}
	open(t, l.gw, Config{TUN: tun, NodeAddr: nodeAddr, ClampMSS: true})
	for _, fam := range families {
		remote, lan := measure(netip.AddrPortFrom(fam.lan, 8002))
		// The MSS in use is the clamped value less TCP options
		// (timestamps take 12 bytes).
		want := tunMTU - fam.ipHeader - 20
		if remote > want || remote < want-40 {
			t.Errorf("%v: remote's MSS is %d; the SYN-ACK out of %s should carry %d", fam.lan, remote, tun, want)
		}
		if lan > want || lan < want-40 {
			t.Errorf("%v: the LAN host's MSS is %d; the SYN in from %s should carry %d", fam.lan, lan, tun, want)
		}
	}
}

// spoofLab is gw with two interfaces: eth0 to a LAN neighbour, and tomoe0
// (standing in for TUN) to a namespace playing the overlay. Both senders
// hold the same extra source addresses: an overlay address, an address in
// another node's site, and one in gw's site.
type spoofLab struct {
	gw, neighbour, overlay *testnet.Netns
	in                     chan string // payloads gw received on udp [::]:7000
}

var (
	spoofOverlay   = mustAddr("fc99::2")
	spoofOtherSite = mustAddr("399:1:2:3::2")
	ownSite        = mustAddr("312:3456:789a:bcde::2")
	gwEth6, nbr6   = mustAddr("fd01::1"), mustAddr("fd01::2")
	gwTUN6, ovl6   = mustAddr("fd02::1"), mustAddr("fd02::2")
)

func newSpoofLab(t *testing.T) *spoofLab {
	t.Helper()
	l := &spoofLab{gw: testnet.NewNetns(t, "gw"), neighbour: testnet.NewNetns(t, "nbr"), overlay: testnet.NewNetns(t, "ovl"), in: make(chan string, 64)}
	l.gw.Veth("eth0", l.neighbour, "eth0")
	l.gw.Veth(tun, l.overlay, "eth0")
	l.gw.Run("ip", "addr", "add", gwEth6.String()+"/64", "dev", "eth0", "nodad")
	l.gw.Run("ip", "addr", "add", gwTUN6.String()+"/64", "dev", tun, "nodad")
	l.gw.Run("ip", "addr", "add", nodeAddr.String()+"/128", "dev", tun, "nodad")
	for _, s := range []struct {
		ns    *testnet.Netns
		own   netip.Addr
		nexth netip.Addr
	}{{l.neighbour, nbr6, gwEth6}, {l.overlay, ovl6, gwTUN6}} {
		s.ns.Run("ip", "addr", "add", s.own.String()+"/64", "dev", "eth0", "nodad")
		for _, a := range []netip.Addr{spoofOverlay, spoofOtherSite, ownSite} {
			s.ns.Run("ip", "addr", "add", a.String()+"/128", "dev", "eth0", "nodad")
		}
		s.ns.Run("ip", "-6", "route", "add", nodeAddr.String(), "via", s.nexth.String())
	}

	var pc net.PacketConn
	var err error
	l.gw.Do(func() { pc, err = net.ListenPacket("udp6", "[::]:7000") })
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			l.in <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return l
}

type spoofCase struct {
	name     string
	from     *testnet.Netns
	src, dst netip.Addr
	pass     bool
}

// run sends every case's datagram (tagged with its name and phase) and
// reports those whose arrival at gw differs from pass.
func (l *spoofLab) run(t *testing.T, phase string, cases []spoofCase) {
	t.Helper()
	for _, c := range cases {
		var conn *net.UDPConn
		var err error
		c.from.Do(func() {
			conn, err = net.DialUDP("udp6", net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.src, 0)), net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.dst, 7000)))
		})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		// Three copies: the first may wait for neighbour discovery.
		for range 3 {
			conn.Write([]byte(phase + ": " + c.name))
		}
		conn.Close()
	}
	got := map[string]bool{}
	allPassed := func() bool {
		for _, c := range cases {
			if c.pass && !got[phase+": "+c.name] {
				return false
			}
		}
		return true
	}
	// Wait for what should pass, then a while longer for what should not.
	deadline := time.After(answerTimeout)
wait:
	for !allPassed() {
		select {
		case s := <-l.in:
			got[s] = true
		case <-deadline:
			break wait
		}
	}
	quiet := time.After(silence)
	for {
		select {
		case s := <-l.in:
			got[s] = true
			continue
		case <-quiet:
		}
		break
	}
	for _, c := range cases {
		if arrived := got[phase+": "+c.name]; arrived != c.pass {
			t.Errorf("%s: %s (from %v to %v): arrived %v, want %v", phase, c.name, c.src, c.dst, arrived, c.pass)
		}
	}
}

// Overlay identities must come in through TUN: from any other interface,
// packets from an overlay address, to the node address, or from another
// node's site prefix are dropped, while the same packets through TUN, and
// gw's own site prefix from the LAN, pass.
func TestAntiSpoof(t *testing.T) {
	t.Parallel()
	requireFirewall(t)
	l := newSpoofLab(t)
	cases := func(filtered bool) []spoofCase {
		return []spoofCase{
			{"LAN: plain", l.neighbour, nbr6, gwEth6, true},
			{"LAN: from an overlay address", l.neighbour, spoofOverlay, gwEth6, !filtered},
			{"LAN: to the node address", l.neighbour, nbr6, nodeAddr, !filtered},
			{"LAN: from another node's site", l.neighbour, spoofOtherSite, gwEth6, !filtered},
			{"LAN: from gw's own site", l.neighbour, ownSite, gwEth6, true},
			{"TUN: from an overlay address", l.overlay, spoofOverlay, nodeAddr, true},
			{"TUN: to the node address", l.overlay, ovl6, nodeAddr, true},
			{"TUN: from another node's site", l.overlay, spoofOtherSite, nodeAddr, true},
			// The overlay reaches only the overlay addresses of the host.
			{"TUN: to a host address", l.overlay, spoofOverlay, gwTUN6, !filtered},
		}
	}
	// Without the firewall the host takes them all: the test can see a
	// spoofed packet arrive.
	l.run(t, "before", cases(false))
	open(t, l.gw, Config{TUN: tun, NodeAddr: nodeAddr, Site: site})
	l.run(t, "after", cases(true))
	out, _ := listTable(t, l.gw)
	for l := range strings.Lines(out) {
		if strings.Contains(l, "drop") && strings.Contains(l, "counter packets 0 ") && !strings.Contains(l, "meta nfproto ipv4") {
			t.Errorf("a drop rule counted nothing: %s", l)
		}
	}
}

// In stealth mode a closed port on a physical interface gives no sign of
// life (no RST, no ICMP port unreachable), tomoe's ports still answer, and
// connections the host opens still work.
func TestStealth(t *testing.T) {
	t.Parallel()
	requireFirewall(t)
	gw, prober := testnet.NewNetns(t, "gw"), testnet.NewNetns(t, "prober")
	gw.Veth("eth0", prober, "eth0")
	gw.Run("ip", "addr", "add", "10.1.0.1/24", "dev", "eth0")
	gw.Run("ip", "addr", "add", "fd01::1/64", "dev", "eth0", "nodad")
	prober.Run("ip", "addr", "add", "10.1.0.2/24", "dev", "eth0")
	prober.Run("ip", "addr", "add", "fd01::2/64", "dev", "eth0", "nodad")
	const udpPort, tcpPort, closed = 4610, 4611, 81

	// tomoe's UDP port echoes; the TCP port answers "hi".
	var pc net.PacketConn
	var err error
	gw.Do(func() { pc, err = net.ListenPacket("udp", fmt.Sprintf(":%d", udpPort)) })
	if err != nil {
		t.Fatal(err)
	}
	echoDone := make(chan struct{})
	go func() {
		defer close(echoDone)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-echoDone })
	serve(t, gw, netip.AddrPortFrom(netip.IPv6Unspecified(), tcpPort), func(c net.Conn) { fmt.Fprintln(c, "hi") })
	// Something on the prober for gw to connect out to.
	serve(t, prober, netip.AddrPortFrom(netip.IPv6Unspecified(), 8000), func(c net.Conn) { fmt.Fprintln(c, "hi") })

	gws := []netip.Addr{mustAddr("10.1.0.1"), mustAddr("fd01::1")}
	probers := []netip.Addr{mustAddr("10.1.0.2"), mustAddr("fd01::2")}

	// Without stealth a closed port answers at once.
	for _, a := range gws {
		if _, err := dialTCP(prober, netip.AddrPortFrom(a, closed), answerTimeout); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("before Open, TCP to closed %v:%d: %v, want connection refused", a, closed, err)
		}
		if err := udpProbe(prober, netip.AddrPortFrom(a, closed)); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("before Open, UDP to closed %v:%d: %v, want connection refused (ICMP port unreachable)", a, closed, err)
		}
	}

	open(t, gw, Config{TUN: tun, NodeAddr: nodeAddr, Stealth: true, UDPPort: udpPort, TCPPorts: []uint16{tcpPort}})
	// IPv6 must resolve neighbours afresh through the filter.
	gw.Run("ip", "-6", "neigh", "flush", "all")
	prober.Run("ip", "-6", "neigh", "flush", "all")

	var wg sync.WaitGroup
	for i, a := range gws {
		wg.Go(func() {
			if _, err := dialTCP(prober, netip.AddrPortFrom(a, closed), silence); !isTimeout(err) {
				t.Errorf("stealth: TCP to closed %v:%d: %v, want a timeout (no RST)", a, closed, err)
			}
		})
		wg.Go(func() {
			if err := udpProbe(prober, netip.AddrPortFrom(a, closed)); !isTimeout(err) {
				t.Errorf("stealth: UDP to closed %v:%d: %v, want no answer (no ICMP port unreachable)", a, closed, err)
			}
		})
		wg.Go(func() {
			if err := udpEcho(prober, netip.AddrPortFrom(a, udpPort)); err != nil {
				t.Errorf("stealth: UDP to tomoe's port %v:%d: %v", a, udpPort, err)
			}
		})
		wg.Go(func() {
			if got, err := who(prober, netip.AddrPortFrom(a, tcpPort), answerTimeout); err != nil || got != "hi" {
				t.Errorf("stealth: TCP to accepted port %v:%d: %q, %v", a, tcpPort, got, err)
			}
		})
		wg.Go(func() {
			if got, err := who(gw, netip.AddrPortFrom(probers[i], 8000), answerTimeout); err != nil || got != "hi" {
				t.Errorf("stealth: gw's own connection to %v:8000: %q, %v", probers[i], got, err)
			}
		})
	}
	wg.Wait()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// udpProbe sends to ap from ns and waits for silence for an answer: an
// ICMP port unreachable shows as ECONNREFUSED on a connected socket.
func udpProbe(ns *testnet.Netns, ap netip.AddrPort) error {
	_, err := udpExchange(ns, ap, silence)
	return err
}

func udpEcho(ns *testnet.Netns, ap netip.AddrPort) error {
	got, err := udpExchange(ns, ap, answerTimeout)
	if err == nil && got != "ping" {
		err = fmt.Errorf("echo %q", got)
	}
	return err
}

func udpExchange(ns *testnet.Netns, ap netip.AddrPort, wait time.Duration) (string, error) {
	var c *net.UDPConn
	var err error
	ns.Do(func() { c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ap)) })
	if err != nil {
		return "", err
	}
	defer c.Close()
	deadline := time.Now().Add(wait)
	buf := make([]byte, 1500)
	for {
		// Resend: the first datagram may wait for neighbour discovery.
		if _, err := c.Write([]byte("ping")); err != nil {
			return "", err
		}
		next := time.Now().Add(200 * time.Millisecond)
		if next.After(deadline) {
			next = deadline
		}
		c.SetReadDeadline(next)
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
		if !isTimeout(err) || time.Now().After(deadline) {
			return "", err
		}
	}
}
