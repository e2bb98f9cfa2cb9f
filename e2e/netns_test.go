package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/packet"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// kernelNode is a kernel-mode tomoe process in its own namespace.
type kernelNode struct {
	*nodeDir
	host *testnet.Host
	proc *testnet.Proc
	body string
	// top, tun and listen are extra lines for the top level and the [tun]
	// and [listen] tables.
	top, tun, listen string
}

func (k *kernelNode) start(t *testing.T) {
	t.Helper()
	k.launch(t)
	k.ready(t)
}

// launch writes the config and starts the process; ready waits for its
// admin API. Several nodes start faster launched together, then waited for.
func (k *kernelNode) launch(t *testing.T) {
	t.Helper()
	k.writeConfig(t)
	k.proc = k.host.Start(t, k.name, tomoeBin, "up", "-c", k.config())
}

// writeConfig writes k's config file from its fields.
func (k *kernelNode) writeConfig(t *testing.T) {
	t.Helper()
	k.writeTop(t, k.top, "[tun]\nmode = \"kernel\"\nname = \"tomoe0\"\n"+k.tun+"[listen]\nudp = \"0.0.0.0:4610\"\n"+k.listen+k.body)
}

func (k *kernelNode) ready(t *testing.T) {
	t.Helper()
	k.waitReady(t, func() bool { return !k.proc.Exited() })
}

func (k *kernelNode) stop(t *testing.T) {
	t.Helper()
	if err := k.proc.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatalf("%s did not shut down cleanly: %v\n%s", k.name, err, k.proc.Output())
	}
}

// metric reads one unlabelled metric from the node's /metrics; a metric
// that is missing fails the test.
func (k *kernelNode) metric(t *testing.T, name string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	text, err := adminapi.NewClient(k.socket()).Metrics(ctx)
	if err != nil {
		t.Fatalf("%s: metrics: %v", k.name, err)
	}
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: metric %s: %q", k.name, name, line)
			}
			return f
		}
	}
	t.Fatalf("%s: no metric %s", k.name, name)
	return 0
}

func (k *kernelNode) endpoint() string { return k.host.IPv4.String() + ":4610" }

func (k *kernelNode) status(t *testing.T) adminapi.Status {
	var st adminapi.Status
	k.cliJSON(t, &st, "status")
	return st
}

// listenTCP starts a line-echo server on the node's overlay address,
// inside its namespace.
func (k *kernelNode) listenTCP(t *testing.T, port int) {
	t.Helper()
	var ln net.Listener
	var err error
	k.host.Do(func() { ln, err = net.Listen("tcp6", fmt.Sprintf("[%s]:%d", k.addr(), port)) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go testnet.Echo(ln)
}

// dialTCP connects from k's namespace.
func (k *kernelNode) dialTCP(to string, port int, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	var err error
	k.host.Do(func() { c, err = net.DialTimeout("tcp6", fmt.Sprintf("[%s]:%d", to, port), timeout) })
	return c, err
}

// listenUDP collects datagrams arriving at the node's overlay address.
func (k *kernelNode) listenUDP(t *testing.T, port int) <-chan string {
	t.Helper()
	var pc net.PacketConn
	var err error
	k.host.Do(func() { pc, err = net.ListenPacket("udp6", fmt.Sprintf("[%s]:%d", k.addr(), port)) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	ch := make(chan string, 16)
	go func() {
		buf := make([]byte, 2000)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			ch <- from.String() + " " + string(buf[:n])
		}
	}()
	return ch
}

// sendRaw sends an IP packet with a header we wrote, source included,
// from k's namespace: the kernel routes it into tomoe0 like any other.
func (k *kernelNode) sendRaw(t *testing.T, pkt []byte, dst netip.Addr) {
	t.Helper()
	k.host.Do(func() {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			t.Errorf("raw socket: %v", err)
			return
		}
		defer unix.Close(fd)
		if err := unix.Sendto(fd, pkt, 0, &unix.SockaddrInet6{Addr: dst.As16()}); err != nil {
			t.Errorf("raw send: %v", err)
		}
	})
}

func expectNone(t *testing.T, ch <-chan string, d time.Duration, what string) {
	t.Helper()
	select {
	case s := <-ch:
		t.Fatalf("%s arrived: %q", what, s)
	case <-time.After(d):
	}
}

func expectOne(t *testing.T, ch <-chan string, d time.Duration, want string) {
	t.Helper()
	select {
	case s := <-ch:
		if !strings.Contains(s, want) {
			t.Fatalf("got %q, want %q", s, want)
		}
	case <-time.After(d):
		t.Fatalf("%q did not arrive within %v", want, d)
	}
}

// Three kernel-mode nodes with real TUN devices on one Ethernet segment
// (a Linux bridge). alice allows bob tcp/7 and icmp, carol udp/9; bob and
// carol allow nobody. Everyone knows everyone as a static peer.
func TestKernelModeNetwork(t *testing.T) {
	parallel(t, 40*time.Second)
	testnet.RequireRoot(t)
	lan := testnet.NewLAN(t, "alice", "bob", "carol")
	nodes := map[string]*kernelNode{}
	for _, name := range []string{"alice", "bob", "carol"} {
		nodes[name] = &kernelNode{nodeDir: newNodeDir(t, name), host: lan.Hosts[name]}
	}
	alice, bob, carol := nodes["alice"], nodes["bob"], nodes["carol"]
	mesh := func(self *kernelNode) string {
		var b strings.Builder
		for _, o := range []*kernelNode{alice, bob, carol} {
			if o != self {
				b.WriteString(peerBlock(o.nodeDir, o.endpoint()))
			}
		}
		return b.String()
	}
	alice.body = mesh(alice) + allowBlock(bob.pub().String(), "tcp", "7") + allowBlock(bob.addr(), "icmp", "") + allowBlock(carol.addr(), "udp", "9")
	bob.body = mesh(bob)
	carol.body = mesh(carol)
	for _, n := range []*kernelNode{alice, bob, carol} {
		n.start(t)
	}
	alice.listenTCP(t, 7)
	alice.listenTCP(t, 8)
	bob.listenTCP(t, 7)
	udp9 := alice.listenUDP(t, 9)

	t.Run("only overlay routes point at the TUN", func(t *testing.T) {
		// tomoe's routes live in its own table (4610), selected by ip rules.
		routes := bob.host.Run("ip", "-6", "route", "show", "table", "4610", "dev", "tomoe0")
		for _, want := range []string{"fc00::/8", alice.pub().SitePrefix().String(), carol.pub().SitePrefix().String()} {
			if !strings.Contains(routes, want) {
				t.Errorf("missing route %s:\n%s", want, routes)
			}
		}
		for _, line := range strings.Split(strings.TrimSpace(routes), "\n") {
			if !strings.HasPrefix(line, "fc00::/8") && !strings.HasPrefix(line, bob.addr()+" ") && !strings.HasPrefix(line, "3") {
				t.Errorf("unexpected route on tomoe0: %q", line)
			}
		}
		if strings.Contains(routes, "default") {
			t.Errorf("unexpected routes on tomoe0:\n%s", routes)
		}
		if out := bob.host.Run("ip", "-4", "route", "show", "table", "all"); strings.Contains(out, "tomoe0") {
			t.Errorf("IPv4 routes changed:\n%s", out)
		}
		if out := bob.host.Run("ip", "-6", "route", "show", "table", "main"); strings.Contains(out, "tomoe0") && !strings.Contains(out, "fe80") {
			t.Errorf("main table has tomoe routes:\n%s", out)
		}
	})

	t.Run("allowed flows work", func(t *testing.T) {
		c, err := bob.dialTCP(alice.addr(), 7, 10*time.Second)
		if err != nil {
			t.Fatalf("bob -> alice:7: %v", err)
		}
		defer c.Close()
		if err := testnet.RoundTrip(c, "hello over a kernel TUN", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		// The system's own ping, through the TUN.
		if out, err := bob.host.Try("ping", "-6", "-c", "2", "-W", "3", alice.addr()); err != nil {
			t.Fatalf("ping6 bob -> alice: %v\n%s", err, out)
		}
		// And tomoe's ping through the admin API.
		out := bob.cli(t, "ping", alice.addr(), "-c", "2", "-i", "100ms")
		if !strings.Contains(out, "2 received") {
			t.Fatalf("tomoe ping: %s", out)
		}
		carol.sendRaw(t, packet.UDP(netip.MustParseAddr(carol.addr()), netip.MustParseAddr(alice.addr()), 5000, 9, []byte("genuine from carol")), netip.MustParseAddr(alice.addr()))
		expectOne(t, udp9, 10*time.Second, "genuine from carol")
	})

	t.Run("metrics count the packets read ahead from the TUN", func(t *testing.T) {
		// 50 echo requests sent without waiting for replies queue up on
		// bob's TUN faster than one read a packet takes them.
		testnet.WaitFor(t, 20*time.Second, "bob's tomoe_tun_read_ahead_packets_total above 0", func() bool {
			bob.host.Try("ping", "-6", "-c", "50", "-l", "50", "-W", "1", alice.addr())
			return bob.metric(t, "tomoe_tun_read_ahead_packets_total") > 0
		})
		if v := bob.metric(t, "tomoe_tun_malformed_frames_total"); v != 0 {
			t.Errorf("tomoe_tun_malformed_frames_total = %v, want 0", v)
		}
	})

	t.Run("disallowed flows fail in both directions", func(t *testing.T) {
		if c, err := bob.dialTCP(alice.addr(), 8, 2*time.Second); err == nil {
			c.Close()
			t.Fatal("bob -> alice:8 connected; only port 7 is allowed")
		}
		if c, err := carol.dialTCP(alice.addr(), 7, 2*time.Second); err == nil {
			c.Close()
			t.Fatal("carol -> alice:7 connected; carol may only send udp/9")
		}
		if c, err := alice.dialTCP(bob.addr(), 7, 2*time.Second); err == nil {
			c.Close()
			t.Fatal("alice -> bob:7 connected; bob allows nobody")
		}
		if out, err := carol.host.Try("ping", "-6", "-c", "1", "-W", "2", bob.addr()); err == nil {
			t.Fatalf("carol pinged bob:\n%s", out)
		}
		if st := bob.status(t); st.Counters.Denied == 0 {
			t.Fatalf("bob counted no denied packets: %+v", st.Counters)
		}
		// Nothing so far was a forgery: the kernel's own chatter on the
		// interface must not count as spoofing.
		for _, n := range []*kernelNode{alice, bob, carol} {
			if st := n.status(t); st.Counters.Spoofed != 0 {
				t.Errorf("%s counted %d spoofed packets before any forgery", n.name, st.Counters.Spoofed)
			}
		}
	})

	t.Run("a packet with another node's source address never arrives", func(t *testing.T) {
		before := carol.status(t).Counters.Spoofed
		forged := packet.UDP(netip.MustParseAddr(bob.addr()), netip.MustParseAddr(alice.addr()), 5000, 9, []byte("forged as bob"))
		for i := 0; i < 3; i++ {
			carol.sendRaw(t, forged, netip.MustParseAddr(alice.addr()))
		}
		expectNone(t, udp9, 2*time.Second, "a datagram forged with bob's address")
		if after := carol.status(t).Counters.Spoofed; after < before+3 {
			t.Fatalf("carol's spoofed counter went %d -> %d", before, after)
		}
	})

	t.Run("a live revoke stops an established TCP connection", func(t *testing.T) {
		c, err := bob.dialTCP(alice.addr(), 7, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := testnet.RoundTrip(c, "before", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		out := alice.cli(t, "policy", "revoke", bob.pub().String())
		if !strings.Contains(out, "sessions cut: 1") {
			t.Fatalf("revoke: %s", out)
		}
		if err := testnet.RoundTrip(c, "after", 3*time.Second); err == nil {
			t.Fatal("the established connection still carries data after the revoke")
		}
		if c2, err := bob.dialTCP(alice.addr(), 7, 2*time.Second); err == nil {
			c2.Close()
			t.Fatal("bob opened a new connection after the revoke")
		}
	})

	t.Run("policy survives a restart", func(t *testing.T) {
		alice.cli(t, "policy", "allow", carol.addr(), "--proto", "tcp", "--ports", "7")
		alice.stop(t)
		alice.start(t)
		// alice's echo server kept its socket: the address is hers again.
		var rules []adminapi.Rule
		alice.cliJSON(t, &rules, "policy", "list")
		var carolTCP, bobAny bool
		for _, r := range rules {
			if r.Address != nil && *r.Address == carol.addr() && r.Proto == "tcp" && r.Ports == "7" && r.Source == "api" {
				carolTCP = true
			}
			if r.Address != nil && *r.Address == bob.addr() {
				bobAny = true
			}
		}
		if !carolTCP || bobAny {
			t.Fatalf("rules after restart (want carol's tcp/7, and bob still revoked although the file names him): %+v", rules)
		}
		// carol still holds her old session with alice; alice answers its
		// unknown index with a handshake, so this takes one round trip,
		// not WireGuard's 15 s.
		c, err := carol.dialTCP(alice.addr(), 7, 5*time.Second)
		if err != nil {
			t.Fatalf("carol -> alice:7 after restart: %v", err)
		}
		defer c.Close()
		if err := testnet.RoundTrip(c, "after restart", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if c, err := bob.dialTCP(alice.addr(), 7, 2*time.Second); err == nil {
			c.Close()
			t.Fatal("revoked bob connected after alice's restart")
		}
	})

	t.Run("shutdown leaves no device, address or route", func(t *testing.T) {
		for _, n := range []*kernelNode{alice, bob, carol} {
			n.stop(t)
			if out, err := n.host.Try("ip", "link", "show", "tomoe0"); err == nil {
				t.Errorf("%s: tomoe0 still exists:\n%s", n.name, out)
			}
			routes := n.host.Run("ip", "-6", "route", "show", "table", "all")
			for _, bad := range []string{"fc00::/8", "tomoe0", alice.pub().SitePrefix().Addr().String()} {
				if strings.Contains(routes, bad) {
					t.Errorf("%s: route left behind (%s):\n%s", n.name, bad, routes)
				}
			}
			if addrs := n.host.Run("ip", "-6", "addr"); strings.Contains(addrs, n.addr()) {
				t.Errorf("%s: address left behind:\n%s", n.name, addrs)
			}
		}
	})
}
