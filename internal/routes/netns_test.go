//go:build linux

package routes

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/tomoe-net/tomoe/internal/testnet"
)

// These tests run as root, each in a fresh network namespace holding a
// real TUN device, tomoe0, and an "uplink", wan0 (a veth), with the host's
// own default routes through it.

const (
	tunName = "tomoe0"
	// answerTimeout bounds every wait.
	answerTimeout = 3 * time.Second
)

var (
	nodeAddr = netip.MustParseAddr("fc12:3456:789a::1")
	ipv4     = netip.MustParseAddr("10.99.0.2")
	siteA    = netip.MustParsePrefix("312:3456:789a:bcde::/64")
	wan4     = netip.MustParseAddr("192.0.2.2")
	wan6     = netip.MustParseAddr("2001:db8::2")
)

// newHost makes the namespace; everything in it goes when the test ends.
func newHost(t *testing.T) (*testnet.Netns, tun.Device) {
	t.Helper()
	testnet.RequireRoot(t)
	ns := testnet.NewNetns(t, "rt")
	var dev tun.Device
	var err error
	ns.Do(func() { dev, err = tun.CreateTUN(tunName, 1280) })
	if err != nil {
		t.Fatalf("create TUN: %v", err)
	}
	t.Cleanup(func() { dev.Close() })
	ns.Run("ip", "link", "add", "wan0", "type", "veth", "peer", "name", "wanpeer")
	ns.Run("ip", "link", "set", "wan0", "up")
	ns.Run("ip", "link", "set", "wanpeer", "up")
	ns.Run("ip", "addr", "add", wan4.String()+"/24", "dev", "wan0")
	ns.Run("ip", "addr", "add", wan6.String()+"/64", "dev", "wan0", "nodad")
	ns.Run("ip", "route", "add", "default", "via", "192.0.2.1")
	ns.Run("ip", "-6", "route", "add", "default", "via", "2001:db8::1")
	return ns, dev
}

// configure runs Configure in ns; the Interface is closed when the test
// ends.
func configure(t *testing.T, ns *testnet.Netns, opts Options) *Interface {
	t.Helper()
	var i *Interface
	var err error
	ns.Do(func() { i, err = Configure(tunName, nodeAddr, 1280, opts) })
	if err != nil {
		t.Fatalf("Configure: %v", err)
	}
	t.Cleanup(func() { i.Close() })
	return i
}

func addRoutes(t *testing.T, i *Interface, ps ...string) {
	t.Helper()
	for _, p := range ps {
		if err := i.AddRoute(netip.MustParsePrefix(p)); err != nil {
			t.Fatalf("AddRoute(%s): %v", p, err)
		}
	}
}

// routeGet is `ip route get dst [args]`: where the kernel sends a packet.
type route struct {
	Dev     string `json:"dev"`
	Table   string `json:"table"`
	Prefsrc string `json:"prefsrc"`
}

func routeGet(ns *testnet.Netns, dst string, args ...string) (route, error) {
	out, err := ns.Try(append([]string{"ip", "-j", "route", "get", dst}, args...)...)
	if err != nil {
		return route{}, fmt.Errorf("%w: %s", err, strings.TrimSpace(out))
	}
	var rs []route
	if err := json.Unmarshal([]byte(out), &rs); err != nil || len(rs) != 1 {
		return route{}, fmt.Errorf("ip route get %s: %q: %v", dst, out, err)
	}
	return rs[0], nil
}

// wantRoute checks that dst (with args, such as "mark 0x4610") goes out
// of dev, from src if src is not empty.
func wantRoute(t *testing.T, ns *testnet.Netns, dst, dev, src string, args ...string) {
	t.Helper()
	what := strings.Join(append([]string{dst}, args...), " ")
	r, err := routeGet(ns, dst, args...)
	if err != nil {
		t.Errorf("route get %s: %v", what, err)
		return
	}
	if r.Dev != dev || (src != "" && r.Prefsrc != src) {
		t.Errorf("route get %s: dev %s src %s (table %s), want dev %s src %s", what, r.Dev, r.Prefsrc, r.Table, dev, src)
	}
}

func wantUnreachable(t *testing.T, ns *testnet.Netns, dst string, args ...string) {
	t.Helper()
	what := strings.Join(append([]string{dst}, args...), " ")
	r, err := routeGet(ns, dst, args...)
	if err == nil || !strings.Contains(err.Error(), "Network is unreachable") {
		t.Errorf("route get %s: %+v, %v; want network unreachable", what, r, err)
	}
}

// blockRules returns the ip rules in tomoe's block, as ip prints them,
// each prefixed with its family.
func blockRules(t *testing.T, ns *testnet.Netns) []string {
	t.Helper()
	var out []string
	for _, fam := range []string{"-4", "-6"} {
		for l := range strings.Lines(ns.Run("ip", fam, "rule", "show")) {
			var pref int
			if _, err := fmt.Sscanf(l, "%d:", &pref); err != nil || pref < FirstRulePriority || pref > LastRulePriority {
				continue
			}
			out = append(out, "ipv"+fam[1:]+" "+strings.Join(strings.Fields(l), " "))
		}
	}
	return out
}

func wantBlock(t *testing.T, ns *testnet.Netns, want ...string) {
	t.Helper()
	got := blockRules(t, ns)
	if !slices.Equal(got, want) {
		t.Errorf("ip rules in tomoe's block:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// tableRoutes lists the routes in table t (both families).
func tableRoutes(t *testing.T, ns *testnet.Netns, table string) string {
	t.Helper()
	return ns.Run("ip", "route", "show", "table", table) + ns.Run("ip", "-6", "route", "show", "table", table)
}

// Every route lands in table 4610, none in main; the rules make the
// kernel use them, and let marked sockets past them; without a default
// route in the table there are no other rules; Close removes it all.
// The Interface is used from this goroutine, outside the namespace it was
// configured in.
func TestRoutesInTable(t *testing.T) {
	t.Parallel()
	ns, _ := newHost(t)
	i := configure(t, ns, Options{IPv4: ipv4})
	wantBlock(t, ns,
		"ipv4 4610: not from all fwmark 0x4610 lookup 4610 suppress_prefixlength 0",
		"ipv6 4610: not from all fwmark 0x4610 lookup 4610 suppress_prefixlength 0")
	addRoutes(t, i, siteA.String(), "192.168.10.0/24", "10.99.0.7/32")

	if got, want := fmt.Sprint(i.Routes()), "[10.99.0.7/32 192.168.10.0/24 312:3456:789a:bcde::/64 fc00::/8]"; got != want {
		t.Errorf("Routes() = %s, want %s", got, want)
	}
	if main := tableRoutes(t, ns, "main"); strings.Contains(main, tunName) {
		t.Errorf("the main table routes into %s:\n%s", tunName, main)
	}
	own := tableRoutes(t, ns, "4610")
	for _, want := range []string{"192.168.10.0/24 dev tomoe0 src 10.99.0.2", "10.99.0.7 dev tomoe0 src 10.99.0.2", "fc00::/8 dev tomoe0", "312:3456:789a:bcde::/64 dev tomoe0"} {
		if !strings.Contains(own, want) {
			t.Errorf("table 4610 lacks %q:\n%s", want, own)
		}
	}
	if addrs := ns.Run("ip", "addr", "show", "dev", tunName); !strings.Contains(addrs, "inet 10.99.0.2/32") || !strings.Contains(addrs, "inet6 fc12:3456:789a::1/128") {
		t.Errorf("addresses of %s:\n%s", tunName, addrs)
	}

	wantRoute(t, ns, "fc00::1", tunName, "")
	wantRoute(t, ns, "312:3456:789a:bcde::5", tunName, "")
	wantRoute(t, ns, "192.168.10.5", tunName, "10.99.0.2")
	wantRoute(t, ns, "10.99.0.7", tunName, "10.99.0.2")
	wantRoute(t, ns, "8.8.8.8", "wan0", "192.0.2.2")
	wantRoute(t, ns, "2606:4700::1", "wan0", "")
	// A peer's endpoint inside a tunnelled prefix is still reached
	// outside the tunnel by tomoe's marked sockets.
	wantRoute(t, ns, "192.168.10.5", "wan0", "192.0.2.2", "mark", "0x4610")
	wantRoute(t, ns, "fc00::1", "wan0", "", "mark", "0x4610")

	if err := i.DelRoute(netip.MustParsePrefix("192.168.10.0/24")); err != nil {
		t.Fatalf("DelRoute: %v", err)
	}
	wantRoute(t, ns, "192.168.10.5", "wan0", "192.0.2.2")
	wantBlock(t, ns,
		"ipv4 4610: not from all fwmark 0x4610 lookup 4610 suppress_prefixlength 0",
		"ipv6 4610: not from all fwmark 0x4610 lookup 4610 suppress_prefixlength 0")

	if err := i.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wantBlock(t, ns)
	if own := strings.TrimSpace(tableRoutes(t, ns, "4610")); own != "" {
		t.Errorf("table 4610 after Close:\n%s", own)
	}
	if addrs := ns.Run("ip", "addr", "show", "dev", tunName); strings.Contains(addrs, "inet") {
		t.Errorf("addresses left on %s:\n%s", tunName, addrs)
	}
	if err := i.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := i.AddRoute(siteA); err == nil {
		t.Errorf("AddRoute after Close succeeded")
	}
}

// localAddr returns the source address the kernel picks for a UDP socket
// in ns connected to dst, with or without Mark.
func localAddr(t *testing.T, ns *testnet.Netns, dst netip.Addr, marked bool) netip.Addr {
	t.Helper()
	d := net.Dialer{}
	if marked {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var err error
			if cerr := c.Control(func(fd uintptr) { err = SetSocketMark(fd) }); cerr != nil {
				return cerr
			}
			return err
		}
	}
	var c net.Conn
	var err error
	ns.Do(func() { c, err = d.DialContext(context.Background(), "udp", netip.AddrPortFrom(dst, 53).String()) })
	if err != nil {
		t.Fatalf("connect UDP socket (marked %v) to %v: %v", marked, dst, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
}

// An exit node's default route takes the host's traffic, but not what
// the host's own specific routes cover, and not tomoe's own marked
// sockets; the extra rules come and go with the default route.
func TestExitRoute(t *testing.T) {
	t.Parallel()
	ns, _ := newHost(t)
	i := configure(t, ns, Options{IPv4: ipv4})
	addRoutes(t, i, "0.0.0.0/0", "::/0")
	wantBlock(t, ns,
		"ipv4 4610: not from all fwmark 0x4610 lookup 4610 suppress_prefixlength 0",
		"ipv4 4630: from all lookup main suppress_prefixlength 0",
		"ipv4 4640: not from all fwmark 0x4610 lookup 4610",
		"ipv6 4610: not from all fwmark 0x4610 lookup 4610 suppress_prefixlength 0",
		"ipv6 4630: from all lookup main suppress_prefixlength 0",
		"ipv6 4640: not from all fwmark 0x4610 lookup 4610")

	wantRoute(t, ns, "8.8.8.8", tunName, "10.99.0.2")
	wantRoute(t, ns, "2606:4700::1", tunName, "")
	wantRoute(t, ns, "fc00::1", tunName, "")
	// The host's LAN stays on the LAN.
	wantRoute(t, ns, "192.0.2.7", "wan0", "192.0.2.2")
	wantRoute(t, ns, "2001:db8::7", "wan0", "")
	// The tunnel's own packets to a peer's endpoint do not enter it.
	wantRoute(t, ns, "8.8.8.8", "wan0", "192.0.2.2", "mark", "0x4610")
	wantRoute(t, ns, "2606:4700::1", "wan0", "", "mark", "0x4610")

	// Real sockets: SetSocketMark takes one out of the exit route.
	for _, tc := range []struct {
		dst           netip.Addr
		plain, fwmark netip.Addr
	}{
		{netip.MustParseAddr("8.8.8.8"), ipv4, wan4},
		{netip.MustParseAddr("2606:4700::1"), nodeAddr, wan6},
	} {
		if got := localAddr(t, ns, tc.dst, false); got != tc.plain {
			t.Errorf("socket to %v has source %v, want the overlay address %v", tc.dst, got, tc.plain)
		}
		if got := localAddr(t, ns, tc.dst, true); got != tc.fwmark {
			t.Errorf("marked socket to %v has source %v, want the uplink's %v", tc.dst, got, tc.fwmark)
		}
	}

	if err := i.DelRoute(netip.MustParsePrefix("0.0.0.0/0")); err != nil {
		t.Fatalf("DelRoute: %v", err)
	}
	wantBlock(t, ns,
		"ipv4 4610: not from all fwmark 0x4610 lookup 4610 suppress_prefixlength 0",
		"ipv6 4610: not from all fwmark 0x4610 lookup 4610 suppress_prefixlength 0",
		"ipv6 4630: from all lookup main suppress_prefixlength 0",
		"ipv6 4640: not from all fwmark 0x4610 lookup 4610")
	wantRoute(t, ns, "8.8.8.8", "wan0", "192.0.2.2")
}

// With UIDs, the listed users and root use tomoe's routes; everyone else
// gets "network unreachable" for the overlay, the site space and tunnelled
// prefixes, and keeps the host's default route when there is an exit.
func TestUIDs(t *testing.T) {
	t.Parallel()
	ns, _ := newHost(t)
	i := configure(t, ns, Options{IPv4: ipv4, UIDs: []uint32{65534}})
	addRoutes(t, i, siteA.String(), "192.168.10.0/24", "::/0")
	wantBlock(t, ns,
		"ipv4 4600: from all fwmark 0x4610 goto 4699",
		"ipv4 4610: from all uidrange 0-0 lookup 4610 suppress_prefixlength 0",
		"ipv4 4610: from all uidrange 65534-65534 lookup 4610 suppress_prefixlength 0",
		"ipv4 4620: from all to 192.168.10.0/24 unreachable",
		"ipv4 4699: from all nop",
		"ipv6 4600: from all fwmark 0x4610 goto 4699",
		"ipv6 4610: from all uidrange 0-0 lookup 4610 suppress_prefixlength 0",
		"ipv6 4610: from all uidrange 65534-65534 lookup 4610 suppress_prefixlength 0",
		"ipv6 4620: from all to 300::/8 unreachable",
		"ipv6 4620: from all to fc00::/8 unreachable",
		"ipv6 4630: from all lookup main suppress_prefixlength 0",
		"ipv6 4640: from all uidrange 0-0 lookup 4610",
		"ipv6 4640: from all uidrange 65534-65534 lookup 4610",
		"ipv6 4699: from all nop")

	for _, uid := range []string{"0", "65534"} {
		wantRoute(t, ns, "fc00::1", tunName, "", "uid", uid)
		wantRoute(t, ns, "312:3456:789a:bcde::5", tunName, "", "uid", uid)
		wantRoute(t, ns, "192.168.10.5", tunName, "10.99.0.2", "uid", uid)
		wantRoute(t, ns, "2606:4700::1", tunName, "", "uid", uid)
		wantRoute(t, ns, "8.8.8.8", "wan0", "", "uid", uid) // no IPv4 exit
	}
	wantUnreachable(t, ns, "fc00::1", "uid", "65533")
	wantUnreachable(t, ns, "312:3456:789a:bcde::5", "uid", "65533")
	wantUnreachable(t, ns, "399::1", "uid", "65533") // a site nobody routes
	wantUnreachable(t, ns, "192.168.10.5", "uid", "65533")
	wantRoute(t, ns, "2606:4700::1", "wan0", "", "uid", "65533") // the host's default
	wantRoute(t, ns, "192.0.2.7", "wan0", "", "uid", "65533")
	// Marked packets skip the block altogether.
	wantRoute(t, ns, "fc00::1", "wan0", "", "mark", "0x4610")
	wantRoute(t, ns, "192.168.10.5", "wan0", "", "mark", "0x4610")

	// A real program run by another user is refused at connect.
	if _, err := exec.LookPath("bash"); err == nil {
		var out []byte
		var err error
		ns.Do(func() {
			// The child inherits this thread's namespace.
			cmd := exec.Command("bash", "-c", "exec 3<>/dev/tcp/fc00::1/80")
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65533, Gid: 65533}}
			out, err = cmd.CombinedOutput()
		})
		if err == nil || !strings.Contains(string(out), "Network is unreachable") {
			t.Errorf("uid 65533 connecting to [fc00::1]:80: %v: %s; want network unreachable", err, out)
		}
	}

	if err := i.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wantBlock(t, ns)
}

// Configure replaces what a tomoe that crashed left behind, and leaves
// rules outside its block alone.
func TestConfigureReplacesStaleState(t *testing.T) {
	t.Parallel()
	ns, _ := newHost(t)
	ns.Run("ip", "rule", "add", "pref", "4610", "lookup", "4610")
	ns.Run("ip", "-6", "rule", "add", "pref", "4655", "unreachable")
	ns.Run("ip", "-6", "rule", "add", "pref", "4699", "to", "fc00::/8", "unreachable")
	ns.Run("ip", "rule", "add", "pref", "5210", "lookup", "52")
	ns.Run("ip", "route", "add", "198.51.100.0/24", "dev", "wan0", "table", "4610")
	ns.Run("ip", "route", "add", "throw", "198.18.0.0/15", "table", "4610")
	configure(t, ns, Options{})
	wantBlock(t, ns,
		"ipv4 4610: not from all fwmark 0x4610 lookup 4610 suppress_prefixlength 0",
		"ipv6 4610: not from all fwmark 0x4610 lookup 4610 suppress_prefixlength 0")
	if own := tableRoutes(t, ns, "4610"); strings.Contains(own, "198.51.100.0") || strings.Contains(own, "198.18.0.0") {
		t.Errorf("stale route left in table 4610:\n%s", own)
	}
	if rules := ns.Run("ip", "rule", "show"); !strings.Contains(rules, "5210:") {
		t.Errorf("Configure deleted a rule outside its block:\n%s", rules)
	}
}

// Close works after the TUN device, and the routes with it, are gone.
func TestCloseAfterInterfaceGone(t *testing.T) {
	t.Parallel()
	ns, dev := newHost(t)
	i := configure(t, ns, Options{IPv4: ipv4, UIDs: []uint32{1000}})
	addRoutes(t, i, siteA.String(), "0.0.0.0/0")
	dev.Close()
	testnet.WaitFor(t, answerTimeout, "the TUN interface to go", func() bool {
		_, err := ns.Try("ip", "link", "show", tunName)
		return err != nil
	})
	if err := i.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wantBlock(t, ns)
}

// Configure checks its arguments and undoes what it did when it fails.
func TestConfigureErrors(t *testing.T) {
	t.Parallel()
	if _, err := Configure(tunName, netip.MustParseAddr("10.0.0.1"), 1280, Options{}); err == nil {
		t.Errorf("Configure accepted an IPv4 node address")
	}
	if _, err := Configure(tunName, nodeAddr, 1280, Options{IPv4: nodeAddr}); err == nil {
		t.Errorf("Configure accepted an IPv6 overlay IPv4 address")
	}
	ns, _ := newHost(t)
	var err error
	ns.Do(func() { _, err = Configure("nonesuch0", nodeAddr, 1280, Options{}) })
	if err == nil || !strings.Contains(err.Error(), "nonesuch0") {
		t.Errorf("Configure on a missing interface: %v", err)
	}
	wantBlock(t, ns)
}

// addLAN gives the host a second network, lan0 192.168.1.2/24, with a
// neighbour at 192.168.1.7 in its own namespace.
func addLAN(t *testing.T, ns *testnet.Netns) *testnet.Netns {
	t.Helper()
	home := testnet.NewNetns(t, "home")
	ns.Veth("lan0", home, "eth0")
	ns.Run("ip", "addr", "add", "192.168.1.2/24", "dev", "lan0")
	home.Run("ip", "addr", "add", "192.168.1.7/24", "dev", "eth0")
	return home
}

// Accepted routes never take the host's own networks: an accepted
// 192.168.0.0/16 leaves the host's LAN 192.168.1.0/24 on the LAN (a real
// ping reaches the neighbour there), and a gateway of the host's routes
// outside any connected network (onlink) is routed as the main table
// says; the rest of the prefixes goes into the TUN.
func TestHostNetworksStayOnTheHost(t *testing.T) {
	t.Parallel()
	ns, _ := newHost(t)
	addLAN(t, ns)
	ns.Run("ip", "route", "add", "198.18.0.0/15", "via", "10.77.0.1", "dev", "lan0", "onlink")
	i := configure(t, ns, Options{IPv4: ipv4})
	addRoutes(t, i, "192.168.0.0/16", "10.0.0.0/8")

	wantRoute(t, ns, "192.168.1.7", "lan0", "192.168.1.2")
	wantRoute(t, ns, "192.168.1.1", "lan0", "192.168.1.2")
	wantRoute(t, ns, "192.168.2.5", tunName, "10.99.0.2")
	wantRoute(t, ns, "10.77.0.1", "wan0", "192.0.2.2")
	wantRoute(t, ns, "10.1.2.3", tunName, "10.99.0.2")
	if out, err := ns.Try("ping", "-c", "1", "-W", "2", "192.168.1.7"); err != nil {
		t.Errorf("ping the LAN neighbour with 192.168.0.0/16 routed into the TUN: %v\n%s", err, out)
	}
}

// Host lists the host's networks, its routes' gateways and its addresses,
// none of tomoe's; WatchHost follows them: a host that moves its LAN to
// another prefix gets the old one back into the TUN and keeps the new one
// on the LAN. With UIDs, other users keep the host's LAN too. Close
// removes the throw routes with the rest.
func TestHostNetworksFollowChanges(t *testing.T) {
	t.Parallel()
	ns, _ := newHost(t)
	home := addLAN(t, ns)
	i := configure(t, ns, Options{IPv4: ipv4, UIDs: []uint32{65534}})
	addRoutes(t, i, "192.168.0.0/16", "172.16.0.0/12")
	h := i.Host()
	for _, want := range []string{"192.0.2.0/24", "192.0.2.1/32", "192.168.1.0/24", "2001:db8::/64", "2001:db8::1/128"} {
		if !slices.Contains(h.Networks, netip.MustParsePrefix(want)) {
			t.Errorf("Host().Networks lacks %s: %v", want, h.Networks)
		}
	}
	if got := fmt.Sprint(h.Addrs); got != "[192.0.2.2 192.168.1.2 2001:db8::2]" {
		t.Errorf("Host().Addrs = %s", got)
	}
	for _, p := range h.Networks {
		if p.Contains(ipv4) || p.Contains(nodeAddr) {
			t.Errorf("Host().Networks has tomoe's own %s", p)
		}
	}
	wantThrows := func(want string) {
		t.Helper()
		var got []string
		for l := range strings.Lines(tableRoutes(t, ns, "4610")) {
			if strings.HasPrefix(l, "throw ") {
				got = append(got, strings.Fields(l)[1])
			}
		}
		if fmt.Sprint(got) != want {
			t.Errorf("throw routes in table 4610: %v, want %s", got, want)
		}
	}
	wantThrows("[192.168.1.0/24]")
	for _, uid := range []string{"0", "65534", "65533"} {
		wantRoute(t, ns, "192.168.1.7", "lan0", "192.168.1.2", "uid", uid)
	}
	wantRoute(t, ns, "192.168.2.5", tunName, "10.99.0.2", "uid", "65534")
	wantUnreachable(t, ns, "192.168.2.5", "uid", "65533")

	seen := make(chan Host, 16)
	if err := i.WatchHost(func(h Host, err error) {
		if err != nil {
			t.Errorf("WatchHost: %v", err)
			return
		}
		seen <- h
	}); err != nil {
		t.Fatal(err)
	}
	// The laptop moves: its LAN is now 172.20.0.0/24.
	ns.Run("ip", "addr", "del", "192.168.1.2/24", "dev", "lan0")
	ns.Run("ip", "addr", "add", "172.20.0.2/24", "dev", "lan0")
	home.Run("ip", "addr", "add", "172.20.0.7/24", "dev", "eth0")
	testnet.WaitFor(t, answerTimeout, "WatchHost to see the new LAN", func() bool {
		for {
			select {
			case h := <-seen:
				if slices.Contains(h.Networks, netip.MustParsePrefix("172.20.0.0/24")) && !slices.Contains(h.Networks, netip.MustParsePrefix("192.168.1.0/24")) {
					return true
				}
			default:
				return false
			}
		}
	})
	wantThrows("[172.20.0.0/24]")
	wantRoute(t, ns, "192.168.1.7", tunName, "10.99.0.2")
	wantRoute(t, ns, "172.20.0.7", "lan0", "172.20.0.2")
	wantRoute(t, ns, "172.20.0.7", "lan0", "172.20.0.2", "uid", "65533")
	wantUnreachable(t, ns, "192.168.1.7", "uid", "65533")
	if out, err := ns.Try("ping", "-c", "1", "-W", "2", "172.20.0.7"); err != nil {
		t.Errorf("ping the new LAN's neighbour: %v\n%s", err, out)
	}

	if err := i.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if own := strings.TrimSpace(tableRoutes(t, ns, "4610")); own != "" {
		t.Errorf("table 4610 after Close:\n%s", own)
	}
	wantBlock(t, ns)
}

// The service address (the node's DNS server's) is on the interface and
// reached locally, but deprecated: the kernel picks the node address as
// the source for overlay destinations, even one whose longest match is
// the service address (fc00::1 shares 120 bits with fc00::53, 8 with the
// node address). Close removes it.
func TestServiceAddressIsNeverASource(t *testing.T) {
	t.Parallel()
	ns, _ := newHost(t)
	service := netip.MustParseAddr("fc00::53")
	i := configure(t, ns, Options{IPv4: ipv4, Service: service})
	out := ns.Run("ip", "-6", "addr", "show", "dev", tunName)
	if !strings.Contains(out, "inet6 fc00::53/128") || !strings.Contains(out, "deprecated") {
		t.Fatalf("service address missing or not deprecated:\n%s", out)
	}
	wantRoute(t, ns, "fc00::1", tunName, nodeAddr.String())
	wantRoute(t, ns, "fcff::1", tunName, nodeAddr.String())
	if r, err := routeGet(ns, service.String()); err != nil || r.Table != "local" {
		t.Errorf("route get %s: %+v, %v; want the local table", service, r, err)
	}
	if err := i.Close(); err != nil {
		t.Fatal(err)
	}
	if out := ns.Run("ip", "-6", "addr", "show", "dev", tunName); strings.Contains(out, "fc00::53") {
		t.Fatalf("service address left after Close:\n%s", out)
	}
	var err error
	ns.Do(func() { _, err = Configure(tunName, nodeAddr, 1280, Options{Service: nodeAddr}) })
	if err == nil {
		t.Fatal("Configure took the node address as the service address")
	}
}
