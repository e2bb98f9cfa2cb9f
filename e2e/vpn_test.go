package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

func offerBlock(prefix string, masquerade bool) string {
	return fmt.Sprintf("[[routes.offer]]\nprefix = %q\nmasquerade = %v\n", prefix, masquerade)
}

func acceptBlock(from, prefix string) string {
	return fmt.Sprintf("[[routes.accept]]\nfrom = %q\nprefix = %q\n", from, prefix)
}

// whoami answers each connection with the address it came from, then
// echoes.
func whoami(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			fmt.Fprintf(c, "%s\n", c.RemoteAddr())
			io.Copy(c, c)
		}()
	}
}

func serveWhoami(t *testing.T, ns *testnet.Netns, network, addr string) {
	t.Helper()
	var ln net.Listener
	var err error
	ns.Do(func() { ln, err = net.Listen(network, addr) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go whoami(ln)
}

// askWhoami connects from ns to addr and returns the address the server
// saw us come from.
func askWhoami(ns *testnet.Netns, addr string, timeout time.Duration) (string, error) {
	var c net.Conn
	var err error
	ns.Do(func() { c, err = net.DialTimeout("tcp", addr, timeout) })
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func hostOf(s string) string {
	h, _, err := net.SplitHostPort(s)
	if err != nil {
		return s
	}
	return h
}

// asUser runs a command in ns as uid:gid uid.
func asUser(ns *testnet.Netns, uid int, name string, args ...string) (string, error) {
	full := append([]string{"netns", "exec", ns.Name, "setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups", name}, args...)
	out, err := exec.Command("ip", full...).CombinedOutput()
	return string(out), err
}

func routesOf(k *kernelNode, t *testing.T) adminapi.Routes {
	var r adminapi.Routes
	k.cliJSON(t, &r, "routes")
	return r
}

func tableHas(ns *testnet.Netns, family, prefix string) bool {
	out, _ := ns.Try("ip", family, "route", "show", "table", "4610")
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, prefix+" ") {
			return true
		}
	}
	return false
}

// TestVPN is a small VPN in a NAT lab: a gateway (gw) with an office LAN
// holding a plain host, an exit node (exit) with "the internet" (inet)
// behind it, a remote node behind NAT, another node (other) that the
// gateway's policy does not let use its routes, and a scanner.
//
// Serial (main_test.go): the scanner floods, two full TCP port scans at
// 20,000 packets a second.
func TestVPN(t *testing.T) {
	testnet.RequireRoot(t)
	testnet.RequireNftables(t)
	lab := testnet.NewNATLab(t)
	gwH, exitH, otherH, scanH := lab.AddHost("gw"), lab.AddHost("exit"), lab.AddHost("other"), lab.AddHost("scan")
	home := lab.AddSite("home", testnet.EndpointIndependent)

	office := testnet.NewNetns(t, "office")
	gwH.Run("ip", "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", office.Name)
	gwH.Run("ip", "addr", "add", "192.168.10.1/24", "dev", "lan0")
	gwH.Run("ip", "addr", "add", "fd10::1/64", "dev", "lan0", "nodad")
	gwH.Run("ip", "link", "set", "lan0", "up")
	office.Run("ip", "addr", "add", "192.168.10.5/24", "dev", "eth0")
	office.Run("ip", "addr", "add", "fd10::5/64", "dev", "eth0", "nodad")
	office.Run("ip", "link", "set", "eth0", "up")
	office.Run("ip", "-6", "route", "add", "fc00::/8", "via", "fd10::1")
	serveWhoami(t, office, "tcp", ":7")

	inet := testnet.NewNetns(t, "inet")
	exitH.Run("ip", "link", "add", "wan1", "type", "veth", "peer", "name", "eth0", "netns", inet.Name)
	exitH.Run("ip", "addr", "add", "198.51.100.1/24", "dev", "wan1")
	exitH.Run("ip", "link", "set", "wan1", "up")
	inet.Run("ip", "addr", "add", "198.51.100.7/24", "dev", "eth0")
	inet.Run("ip", "link", "set", "eth0", "up")
	serveWhoami(t, inet, "tcp", ":7")
	// A service of the exit host itself, on every address.
	serveWhoami(t, exitH.Netns, "tcp", ":7")

	gw := &kernelNode{nodeDir: newNodeDir(t, "gw"), host: gwH}
	exit := &kernelNode{nodeDir: newNodeDir(t, "exit"), host: exitH}
	other := &kernelNode{nodeDir: newNodeDir(t, "other"), host: otherH}
	remote := &kernelNode{nodeDir: newNodeDir(t, "remote"), host: home.Host}
	us := newNodeDir(t, "us") // a userspace node run by an unprivileged user

	gw.tun = "ipv4 = \"auto\"\n"
	gw.listen = "stealth = true\n"
	gw.body = offerBlock("192.168.10.0/24", true) + offerBlock("fd10::/64", false) + offerBlock("172.16.0.0/24", false) +
		acceptBlock("*", "100.64.0.0/10") +
		allowBlock(remote.pub().String(), "tcp", "7,80-81") + allowBlock(remote.addr(), "icmp", "") +
		allowBlock(other.addr(), "icmp", "") + allowBlock(us.pub().String(), "tcp", "80") +
		"[[expose]]\nport = 80\ntarget = \"127.0.0.1:8080\"\n"
	exit.body = offerBlock("0.0.0.0/0", true) + acceptBlock("*", "100.64.0.0/10") + allowBlock(remote.addr(), "tcp", "7")
	remote.top = "allowed_local_users = [\"65534\"]\n"
	remote.tun = "ipv4 = \"auto\"\n"
	remote.body = peerBlock(gw.nodeDir, gw.endpoint()) + peerBlock(exit.nodeDir, exit.endpoint()) +
		acceptBlock(gw.addr(), "192.168.0.0/16") + acceptBlock(gw.addr(), "fd10::/64") + allowBlock(gw.addr(), "icmp", "")
	other.tun = "ipv4 = \"auto\"\n"
	other.body = peerBlock(gw.nodeDir, gw.endpoint()) + acceptBlock(gw.addr(), "192.168.0.0/16") + allowBlock(gw.addr(), "icmp", "")

	// The exposed service: an HTTP server that listens on gw's loopback only.
	var hl net.Listener
	var err error
	gwH.Do(func() { hl, err = net.Listen("tcp", "127.0.0.1:8080") })
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello from the office web server\n") })}
	go hs.Serve(hl)
	t.Cleanup(func() { hs.Close() })

	for _, k := range []*kernelNode{gw, exit, remote, other} {
		k.start(t)
	}
	gw.listenTCP(t, 7)

	t.Run("offered routes are installed only where accepted", func(t *testing.T) {
		testnet.WaitFor(t, 15*time.Second, "remote installs gw's routes", func() bool {
			return tableHas(remote.host.Netns, "-4", "192.168.10.0/24") && tableHas(remote.host.Netns, "-6", "fd10::/64")
		})
		if tableHas(remote.host.Netns, "-4", "172.16.0.0/24") {
			t.Error("172.16.0.0/24 is offered but not accepted, yet routed")
		}
		states := map[string]string{}
		for _, l := range routesOf(remote, t).Learned {
			states[l.Prefix] = l.State
		}
		if states["172.16.0.0/24"] != "not_accepted" || states["192.168.10.0/24"] != "installed" {
			t.Errorf("remote's learned routes: %v", states)
		}
		// The host's main table is untouched.
		if out := remote.host.Run("ip", "-4", "route", "show", "table", "main"); strings.Contains(out, "tomoe0") {
			t.Errorf("main table changed:\n%s", out)
		}
		// gw learnt that remote accepted its LAN.
		testnet.WaitFor(t, 10*time.Second, "gw sees remote's acceptance", func() bool {
			for _, o := range routesOf(gw, t).Offered {
				if o.Prefix == "192.168.10.0/24" && strings.Contains(strings.Join(o.AcceptedBy, ","), remote.addr()) {
					return true
				}
			}
			return false
		})
	})

	t.Run("a LAN host through the gateway, masqueraded", func(t *testing.T) {
		from, err := askWhoami(remote.host.Netns, "192.168.10.5:7", 10*time.Second)
		if err != nil {
			t.Fatalf("remote -> 192.168.10.5:7: %v", err)
		}
		if hostOf(from) != "192.168.10.1" {
			t.Errorf("the LAN host saw %s, want the gateway's 192.168.10.1", from)
		}
	})

	t.Run("withdrawn live, offered again without masquerade, with a return route", func(t *testing.T) {
		gw.cli(t, "routes", "withdraw", "192.168.10.0/24")
		testnet.WaitFor(t, 5*time.Second, "remote removes the withdrawn route", func() bool {
			return !tableHas(remote.host.Netns, "-4", "192.168.10.0/24")
		})
		gw.cli(t, "routes", "offer", "192.168.10.0/24")
		office.Run("ip", "route", "add", "100.64.0.0/10", "via", "192.168.10.1")
		testnet.WaitFor(t, 5*time.Second, "remote installs the route again", func() bool {
			return tableHas(remote.host.Netns, "-4", "192.168.10.0/24")
		})
		from, err := askWhoami(remote.host.Netns, "192.168.10.5:7", 10*time.Second)
		if err != nil {
			t.Fatalf("remote -> 192.168.10.5:7: %v", err)
		}
		if want := remote.ipv4(t); hostOf(from) != want {
			t.Errorf("the LAN host saw %s, want remote's own %s", from, want)
		}
	})

	t.Run("IPv6 LAN and the site prefix; oversize IPv6 gets Packet Too Big", func(t *testing.T) {
		from, err := askWhoami(remote.host.Netns, "[fd10::5]:7", 10*time.Second)
		if err != nil {
			t.Fatalf("remote -> [fd10::5]:7: %v", err)
		}
		if hostOf(from) != remote.addr() {
			t.Errorf("the LAN host saw %s, want remote's node address", from)
		}
		site := gw.pub().SitePrefix().Addr()
		siteGW, siteHost := site.Next(), site.Next().Next().Next().Next().Next()
		gwH.Run("ip", "-6", "addr", "add", siteGW.String()+"/64", "dev", "lan0", "nodad")
		office.Run("ip", "-6", "addr", "add", siteHost.String()+"/64", "dev", "eth0", "nodad")
		if out, err := remote.host.Try("ping", "-6", "-c", "2", "-W", "3", siteHost.String()); err != nil {
			t.Errorf("ping a device behind gw by its site address: %v\n%s", err, out)
		}
		out, _ := office.Try("ping", "-6", "-c", "1", "-W", "3", "-M", "do", "-s", "1452", remote.addr())
		if !strings.Contains(out, "mtu=1400") && !strings.Contains(strings.ToLower(out), "too big") {
			t.Errorf("a 1500-byte IPv6 packet into the overlay did not get Packet Too Big:\n%s", out)
		}
	})

	t.Run("the gateway's policy decides who uses its routes", func(t *testing.T) {
		testnet.WaitFor(t, 15*time.Second, "other installs gw's route", func() bool {
			return tableHas(other.host.Netns, "-4", "192.168.10.0/24")
		})
		before := gw.status(t).Counters.Denied
		if _, err := askWhoami(other.host.Netns, "192.168.10.5:7", 3*time.Second); err == nil {
			t.Fatal("other reached the office LAN although gw's policy allows it only icmp")
		}
		if after := gw.status(t).Counters.Denied; after <= before {
			t.Errorf("gw's filter did not count other's forwarded packets as denied (%d -> %d): were they dropped earlier?", before, after)
		}
	})

	t.Run("exposed service", func(t *testing.T) {
		get := func(k *kernelNode, port int) (string, error) {
			var c net.Conn
			var err error
			k.host.Do(func() { c, err = net.DialTimeout("tcp6", fmt.Sprintf("[%s]:%d", gw.addr(), port), 5*time.Second) })
			if err != nil {
				return "", err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: gw\r\n\r\n")
			b, err := io.ReadAll(c)
			return string(b), err
		}
		if body, err := get(remote, 80); err != nil || !strings.Contains(body, "hello from the office web server") {
			t.Fatalf("remote -> gw:80: %v %q", err, body)
		}
		if body, err := get(other, 80); err == nil && strings.Contains(body, "hello") {
			t.Fatal("other reached the exposed service; gw's policy does not allow it")
		}
		gw.cli(t, "expose", "add", "81", "127.0.0.1:8080")
		if body, err := get(remote, 81); err != nil || !strings.Contains(body, "hello") {
			t.Fatalf("live-exposed :81: %v %q", err, body)
		}
		gw.cli(t, "expose", "remove", "81")
		if _, err := get(remote, 81); err == nil {
			t.Fatal("removed service still reachable")
		}
		// Nothing listens on a physical interface: every TCP listener is on
		// loopback, the node address, or bound to the TUN (the DNS server
		// on fc00::53).
		for _, line := range strings.Split(strings.TrimSpace(gwH.Run("ss", "-Hltn")), "\n") {
			f := strings.Fields(line)
			if len(f) < 4 {
				continue
			}
			local := f[3]
			if !strings.HasPrefix(local, "127.0.0.1:") && !strings.Contains(local, gw.addr()) && !strings.Contains(local, "]%tomoe0:") {
				t.Errorf("gw listens on %s", local)
			}
		}
	})

	t.Run("userspace node without root: SOCKS5, HTTP CONNECT and a port forward", func(t *testing.T) {
		os.Chown(us.dir, 65534, 65534)
		os.Chown(filepath.Join(us.dir, "node.key"), 65534, 65534)
		us.write(t, "[tun]\nmode = \"userspace\"\n[listen]\nudp = \"0.0.0.0:0\"\n"+peerBlock(gw.nodeDir, gw.endpoint())+
			"[proxy]\nsocks5 = \"127.0.0.1:1080\"\nhttp = \"127.0.0.1:8118\"\n"+
			"[[connect]]\nlocal = \"127.0.0.1:18080\"\nremote = \"["+gw.addr()+"]:80\"\n"+
			"[[connect]]\nlocal = \""+filepath.Join(us.dir, "gw.sock")+"\"\nremote = \"gw:80\"\n")
		os.Chown(us.config(), 65534, 65534)
		cmd := exec.Command("ip", "netns", "exec", home.Host.Name, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
			"env", "HOME="+us.dir, tomoeBin, "up", "-c", us.config())
		proc := testnet.StartCmd(t, "us", cmd)
		us.waitReady(t, func() bool { return !proc.Exited() })
		curl := func(uid int, args ...string) (string, error) {
			return asUser(home.Host.Netns, uid, "curl", append([]string{"-sS", "--max-time", "10"}, args...)...)
		}
		url := "http://[" + gw.addr() + "]:80/"
		for _, args := range [][]string{
			{"--socks5-hostname", "127.0.0.1:1080", url},
			{"--socks5-hostname", "127.0.0.1:1080", "http://gw.tomoe/"},
			{"-p", "-x", "http://127.0.0.1:8118", url},
			{"http://127.0.0.1:18080/"},
			{"--unix-socket", filepath.Join(us.dir, "gw.sock"), "http://gw/"},
		} {
			out, err := curl(65534, args...)
			if err != nil || !strings.Contains(out, "hello from the office web server") {
				t.Errorf("curl %v as the node's user: %v\n%s", args, err, out)
			}
		}
		// Another local user may not use the loopback proxy.
		if out, err := curl(65533, "--socks5-hostname", "127.0.0.1:1080", url); err == nil {
			t.Errorf("another user used the SOCKS5 proxy:\n%s", out)
		}
		if err := proc.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
			t.Errorf("userspace node did not stop cleanly: %v\n%s", err, proc.Output())
		}
	})

	t.Run("only allowed local users reach the overlay", func(t *testing.T) {
		probe := func(uid int, host string, port int) (string, error) {
			return asUser(home.Host.Netns, uid, "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%d && echo connected", host, port))
		}
		if out, err := probe(65534, gw.addr(), 7); err != nil || !strings.Contains(out, "connected") {
			t.Errorf("allowed user: %v\n%s", err, out)
		}
		for _, dst := range []string{gw.addr(), "192.168.10.5"} {
			out, err := probe(65533, dst, 7)
			if err == nil || !strings.Contains(out, "Network is unreachable") {
				t.Errorf("another user -> %s: %v\n%s", dst, err, out)
			}
		}
	})

	t.Run("exit node carries the default route; the tunnel keeps working", func(t *testing.T) {
		remote.cli(t, "routes", "accept", "--from", exit.addr(), "0.0.0.0/0")
		testnet.WaitFor(t, 15*time.Second, "remote installs the exit's default route", func() bool {
			return tableHas(remote.host.Netns, "-4", "default")
		})
		from, err := askWhoami(remote.host.Netns, "198.51.100.7:7", 10*time.Second)
		if err != nil {
			t.Fatalf("remote -> the internet through exit: %v", err)
		}
		if hostOf(from) != "198.51.100.1" {
			t.Errorf("the internet host saw %s, want exit's 198.51.100.1", from)
		}
		// The underlay to the peers still goes out of the physical
		// interface: unmarked traffic to exit's endpoint goes into the
		// TUN, tomoe's own (marked) traffic does not.
		if out := remote.host.Run("ip", "route", "get", exitH.IPv4.String()); !strings.Contains(out, "tomoe0") {
			t.Errorf("the exit route does not capture unmarked traffic to 203.0.113.0/24: %s", out)
		}
		if out := remote.host.Run("ip", "route", "get", exitH.IPv4.String(), "mark", "0x4610"); strings.Contains(out, "tomoe0") {
			t.Errorf("tomoe's own traffic to exit is routed into the TUN: %s", out)
		}
		time.Sleep(2 * time.Second)
		for _, addr := range []string{"192.168.10.5:7", "198.51.100.7:7"} {
			if _, err := askWhoami(remote.host.Netns, addr, 5*time.Second); err != nil {
				t.Errorf("after the exit route: remote -> %s: %v", addr, err)
			}
		}
		// The exit forwards, but its own addresses (public and LAN), and
		// the service listening on them, are not the overlay's.
		for _, addr := range []string{exitH.IPv4.String() + ":7", "198.51.100.1:7"} {
			if from, err := askWhoami(remote.host.Netns, addr, 2*time.Second); err == nil {
				t.Errorf("remote reached the exit host's own service at %s through the exit route (it saw %s)", addr, from)
			}
		}
		c, err := remote.dialTCP(gw.addr(), 7, 5*time.Second)
		if err != nil {
			t.Fatalf("overlay to gw with the exit route on: %v", err)
		}
		c.Close()
		// No longer accepted: the default route goes at once.
		remote.cli(t, "routes", "unaccept", "--from", exit.addr(), "0.0.0.0/0")
		if tableHas(remote.host.Netns, "-4", "default") {
			t.Error("the exit's default route is still installed after unaccept")
		}
		if out := remote.host.Run("ip", "route", "get", exitH.IPv4.String()); strings.Contains(out, "tomoe0") {
			t.Errorf("after unaccept, traffic still goes into the TUN: %s", out)
		}
	})

	t.Run("silent to scans", func(t *testing.T) {
		// gw has listen.stealth: nothing answers. other has not: the
		// kernel answers closed ports, but nothing is open, and tomoe's
		// UDP port answers nothing.
		tcp := scanH.Run("nmap", "-n", "-Pn", "-sS", "-p-", "--min-rate", "20000", "--max-retries", "1", gwH.IPv4.String())
		t.Logf("TCP scan of gw:\n%s", tcp)
		if !strings.Contains(tcp, "65535 filtered") || strings.Contains(tcp, " open ") {
			t.Errorf("TCP scan of the stealth gateway:\n%s", tcp)
		}
		udp := scanH.Run("nmap", "-n", "-Pn", "-sU", "-p", "4610,9,53", "--max-retries", "1", gwH.IPv4.String())
		if strings.Contains(udp, "closed") || strings.Contains(udp, " open ") {
			t.Errorf("UDP probes of the stealth gateway:\n%s", udp)
		}
		tcp = scanH.Run("nmap", "-n", "-Pn", "-sS", "-p-", "--min-rate", "20000", "--max-retries", "1", otherH.IPv4.String())
		if strings.Contains(tcp, " open ") {
			t.Errorf("TCP scan of a plain node found open ports:\n%s", tcp)
		}
		udp = scanH.Run("nmap", "-n", "-Pn", "-sU", "-p", "4610", "--max-retries", "1", otherH.IPv4.String())
		if !strings.Contains(udp, "4610/udp open|filtered") {
			t.Errorf("tomoe's UDP port answered a probe:\n%s", udp)
		}
	})

	t.Run("shutdown leaves no route, rule or firewall table", func(t *testing.T) {
		for _, k := range []*kernelNode{remote, gw} {
			k.stop(t)
			if out, _ := k.host.Try("ip", "route", "show", "table", "4610"); strings.TrimSpace(out) != "" {
				t.Errorf("%s: table 4610 left:\n%s", k.name, out)
			}
			for _, fam := range []string{"-4", "-6"} {
				if out := k.host.Run("ip", fam, "rule"); strings.Contains(out, "4610") || strings.Contains(out, "0x4610") {
					t.Errorf("%s: rules left:\n%s", k.name, out)
				}
			}
			if out, err := k.host.Try("nft", "list", "table", "inet", "tomoe"); err == nil {
				t.Errorf("%s: firewall table left:\n%s", k.name, out)
			}
		}
	})
}
