package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/tomoe-net/tomoe/internal/packet"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// dnsQuery is a DNS query for name and type, with ID 0x7777.
func dnsQuery(t *testing.T, name string, typ dnsmessage.Type) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 0x7777, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET})
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// askDNS sends query from ns to server over UDP and returns the answer's
// header, or false if none came within d.
func askDNS(t *testing.T, ns *testnet.Netns, server netip.AddrPort, query []byte, d time.Duration) (dnsmessage.Header, bool) {
	t.Helper()
	var c net.Conn
	var err error
	ns.Do(func() { c, err = net.Dial("udp", server.String()) })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(query)
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return dnsmessage.Header{}, false
	}
	var p dnsmessage.Parser
	h, err := p.Start(buf[:n])
	if err != nil {
		t.Fatalf("answer from %s does not parse: %v", server, err)
	}
	return h, true
}

// etcNetns guards the creation and removal of /etc/netns, which the
// namespaces of tests running in parallel share: without it, one test's
// cleanup could remove the directory between another's creating it and
// creating its NAME directory in it.
var etcNetns sync.Mutex

// resolvConf gives ns a resolv.conf naming server: `ip netns exec`, which
// runs every command of ns, bind-mounts /etc/netns/NAME/resolv.conf over
// /etc/resolv.conf.
func resolvConf(t *testing.T, ns *testnet.Netns, server string) {
	t.Helper()
	etc := filepath.Join("/etc/netns", ns.Name)
	etcNetns.Lock()
	err := os.MkdirAll(etc, 0o755)
	etcNetns.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		etcNetns.Lock()
		defer etcNetns.Unlock()
		os.RemoveAll(etc)
		os.Remove("/etc/netns") // only if no one else uses it
	})
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver "+server+"\noptions timeout:1 attempts:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// Issue 12, names: a kernel-mode node answers DNS for its peers' names
// under .tomoe on fc00::53, which the host's resolver (here resolv.conf)
// asks; programs then reach peers by name. Nothing else reaches that
// server: not a LAN neighbour, not a peer through the tunnel (even one
// whose every packet the policy allows).
func TestDNSNames(t *testing.T) {
	parallel(t, 25*time.Second)
	testnet.RequireRoot(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("skipped: curl is not installed")
	}
	lan := testnet.NewLAN(t, "a", "web1", "evil")
	a := &kernelNode{nodeDir: newNodeDir(t, "a"), host: lan.Hosts["a"]}
	web1 := &kernelNode{nodeDir: newNodeDir(t, "web1"), host: lan.Hosts["web1"]}
	evilH := lan.Hosts["evil"]
	evil := newNodeDir(t, "evil") // its key drives a plain WireGuard device below
	evilEndpoint := netip.AddrPortFrom(evilH.IPv4, 4610)

	// Both are members of organisation acme, as a.acme and web1.acme;
	// web1's certificate carries its (explicit) overlay IPv4 address.
	orgKey := filepath.Join(a.dir, "acme.key")
	orgPub := strings.TrimSpace(mustRun(t, "org", "init", "--name", "acme", "--out", orgKey))
	mustRun(t, "cert", "sign", "--org-key", orgKey, "--node", a.pub().String(), "--name", "a.acme", "--out", filepath.Join(a.dir, "acme.cert"))
	mustRun(t, "cert", "sign", "--org-key", orgKey, "--node", web1.pub().String(), "--name", "web1.acme", "--ipv4", "10.99.0.7", "--out", filepath.Join(web1.dir, "acme.cert"))
	orgBlock := func(k *kernelNode) string {
		return fmt.Sprintf("[[orgs]]\nname = \"acme\"\npublic_key = %q\ncert = %q\n", orgPub, filepath.Join(k.dir, "acme.cert"))
	}

	a.tun = "ipv4 = \"auto\"\n"
	web1.tun = "ipv4 = \"10.99.0.7\"\n"
	// evil is a static peer of a whose every packet the policy admits.
	a.body = peerBlock(web1.nodeDir, web1.endpoint()) + peerBlock(evil, evilEndpoint.String()) +
		acceptBlock(web1.addr(), "10.99.0.0/24") + allowBlock(evil.addr(), "any", "") +
		allowBlock(web1.addr(), "icmp", "") + // routes are taken from peers the policy admits
		orgBlock(a)
	web1.body = peerBlock(a.nodeDir, a.endpoint()) + acceptBlock("*", "100.64.0.0/10") + allowBlock(a.addr(), "tcp", "8080") +
		orgBlock(web1)

	a.start(t)
	web1.start(t)
	// An HTTP server on web1, on all its addresses: curl may try the
	// IPv4 address first (glibc sorts 10.99.0.7 before a ULA).
	var hl net.Listener
	var err error
	web1.host.Do(func() { hl, err = net.Listen("tcp", ":8080") })
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello from web1\n") })}
	go hs.Serve(hl)
	t.Cleanup(func() { hs.Close() })

	st := a.status(t)
	if st.DNS != "fc00::53" {
		t.Fatalf("status dns = %q, want fc00::53", st.DNS)
	}
	if st.DNSResolved {
		t.Error("status says registered with systemd-resolved, which does not run in a test namespace")
	}
	if out := a.cli(t, "status"); !strings.Contains(out, "dns:          fc00::53 port 53") {
		t.Errorf("tomoe status does not show the DNS server:\n%s", out)
	}
	resolvConf(t, a.host.Netns, "fc00::53")
	server := netip.MustParseAddrPort("[fc00::53]:53")

	t.Run("certificate names, own included", func(t *testing.T) {
		// The certificates travel once a session is up. (Under -race on a
		// busy machine, the first greeting was seen lost to crossing
		// handshakes, and resent 24 s later: hence the long waits.)
		testnet.WaitFor(t, 60*time.Second, "a knows web1's certificate", func() bool {
			out, err := a.host.Try("getent", "ahosts", "web1.acme.tomoe")
			return err == nil && strings.Contains(out, web1.addr())
		})
		out, err := a.host.Try("getent", "ahosts", "a.acme.tomoe")
		if err != nil || !strings.Contains(out, a.addr()) || !strings.Contains(out, a.ipv4(t)) {
			t.Errorf("getent ahosts a.acme.tomoe (a's own name): %v\n%s", err, out)
		}
	})

	t.Run("getent and curl by name", func(t *testing.T) {
		out, err := a.host.Try("getent", "ahosts", "web1.tomoe")
		if err != nil || !strings.Contains(out, web1.addr()) {
			t.Fatalf("getent ahosts web1.tomoe: %v\n%s", err, out)
		}
		out, err = a.host.Try("getent", "ahosts", "WEB1.Tomoe")
		if err != nil || !strings.Contains(out, web1.addr()) {
			t.Errorf("getent ahosts WEB1.Tomoe: %v\n%s", err, out)
		}
		out, err = a.host.Try("curl", "-sS", "--max-time", "10", "http://web1.tomoe:8080/")
		if err != nil || out != "hello from web1\n" {
			out, _ := a.host.Try("curl", "-sSv", "--max-time", "10", "http://web1.tomoe:8080/")
			t.Logf("again, verbosely:\n%s", out)
			t.Fatalf("curl http://web1.tomoe:8080/: %v\n%s", err, out)
		}
		// A name nobody has does not exist.
		if out, err := a.host.Try("getent", "ahosts", "nobody.tomoe"); err == nil {
			t.Errorf("getent ahosts nobody.tomoe found something:\n%s", out)
		}
	})

	t.Run("A records once the peer's IPv4 is installed", func(t *testing.T) {
		// web1's address is its certificate's and an installed route to it.
		for _, name := range []string{"web1.tomoe", "web1.acme.tomoe"} {
			testnet.WaitFor(t, 60*time.Second, "a installs web1's IPv4 and answers it for "+name, func() bool {
				out, err := a.host.Try("getent", "ahostsv4", name)
				return err == nil && strings.Contains(out, "10.99.0.7")
			})
		}
		// and the other way round: web1 answers a's derived address, as
		// its "*" rule installed it, for a's certificate name.
		resolvConf(t, web1.host.Netns, "fc00::53")
		testnet.WaitFor(t, 60*time.Second, "web1 answers a's derived IPv4", func() bool {
			out, err := web1.host.Try("getent", "ahostsv4", "a.acme.tomoe")
			return err == nil && strings.Contains(out, a.ipv4(t))
		})
	})

	t.Run("other names are refused, unknown ones do not exist", func(t *testing.T) {
		h, ok := askDNS(t, a.host.Netns, server, dnsQuery(t, "example.com.", dnsmessage.TypeA), 5*time.Second)
		if !ok || h.RCode != dnsmessage.RCodeRefused {
			t.Errorf("example.com: %v %v, want REFUSED", h.RCode, ok)
		}
		h, ok = askDNS(t, a.host.Netns, server, dnsQuery(t, "nope.tomoe.", dnsmessage.TypeAAAA), 5*time.Second)
		if !ok || h.RCode != dnsmessage.RCodeNameError {
			t.Errorf("nope.tomoe: %v %v, want NXDOMAIN", h.RCode, ok)
		}
		if out, err := a.host.Try("getent", "ahosts", "example.com"); err == nil {
			t.Errorf("getent ahosts example.com resolved through the node:\n%s", out)
		}
	})

	t.Run("a LAN neighbour cannot ask", func(t *testing.T) {
		// evil's host routes fc00::53 to a's LAN address: Linux would take
		// the packet for an address it has on any interface, but the
		// server's sockets are bound to tomoe0.
		evilH.Run("ip", "-6", "route", "add", "fc00::53/128", "via", a.host.IPv6.String())
		defer evilH.Run("ip", "-6", "route", "del", "fc00::53/128")
		if h, ok := askDNS(t, evilH.Netns, server, dnsQuery(t, "web1.tomoe.", dnsmessage.TypeAAAA), 2*time.Second); ok {
			t.Fatalf("a LAN neighbour got an answer: %+v", h)
		}
		var c net.Conn
		var err error
		evilH.Do(func() { c, err = net.DialTimeout("tcp", server.String(), 2*time.Second) })
		if err == nil {
			c.Close()
			t.Fatal("a LAN neighbour connected to the DNS server over TCP")
		}
	})

	t.Run("a peer cannot ask through the tunnel", func(t *testing.T) {
		// evil is a plain WireGuard device that routes all of fc00::/8 to
		// a, so it can send what no tomoe would: packets to fc00::53.
		tt := tuntest.NewChannelTUN()
		var dev *device.Device
		raw, pub := evil.key.Raw(), a.pub()
		evilH.Do(func() {
			dev = device.NewDevice(tt.TUN(), conn.NewStdNetBind(), device.NewLogger(device.LogLevelSilent, ""))
			err = dev.IpcSet(fmt.Sprintf("private_key=%x\nlisten_port=%d\npublic_key=%x\nendpoint=%s\nallowed_ip=fc00::/8\n",
				raw[:], evilEndpoint.Port(), pub[:], a.endpoint()))
			if err == nil {
				err = dev.Up()
			}
			// The device's own goroutine also brings it up, on the
			// channel TUN's "up" event, from a thread outside this
			// namespace: if it came first, the sockets are not evil's.
			// Opening them again here puts them in evil's namespace.
			if err == nil {
				err = dev.BindUpdate()
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		src := evil.pub().Address()
		// The tunnel works, and a's policy lets evil's packets in: a UDP
		// datagram to a's own address arrives.
		heard := a.listenUDP(t, 9)
		tt.Outbound <- packet.UDP(src, a.pub().Address(), 40000, 9, []byte("through the tunnel"))
		select {
		case <-heard:
		case <-time.After(30 * time.Second): // a lost initiation is retried after 5 s
			wg, _ := dev.IpcGet()
			t.Fatalf("a datagram through the tunnel did not arrive\nevil's device:\n%s\na's peers:\n%s", wg, a.cli(t, "peers"))
		}

		before := a.status(t).Counters.NotLocal
		dnsAddr := netip.MustParseAddr("fc00::53")
		tt.Outbound <- packet.UDP(src, dnsAddr, 40001, 53, dnsQuery(t, "web1.tomoe.", dnsmessage.TypeAAAA))
		tt.Outbound <- packet.TCP(src, dnsAddr, 40002, 53, packet.TCPSyn, nil)
		deadline := time.After(3 * time.Second)
		for done := false; !done; {
			select {
			case pkt := <-tt.Inbound:
				var p packet.Parsed
				if p.Decode(pkt) == nil && p.Src == dnsAddr {
					t.Fatalf("the DNS server answered a peer through the tunnel: %x", pkt)
				}
			case <-deadline:
				done = true
			}
		}
		if after := a.status(t).Counters.NotLocal; after < before+2 {
			t.Errorf("a's filter counted %d packets for an address not its own, want at least 2 more than %d", after, before)
		}
	})
}

// tun.dns = false: no DNS server, no address for it.
func TestDNSOff(t *testing.T) {
	parallel(t, 5*time.Second)
	testnet.RequireRoot(t)
	lan := testnet.NewLAN(t, "quiet")
	k := &kernelNode{nodeDir: newNodeDir(t, "quiet"), host: lan.Hosts["quiet"], tun: "dns = false\n"}
	k.start(t)
	if st := k.status(t); st.DNS != "" {
		t.Errorf("status dns = %q with tun.dns = false", st.DNS)
	}
	if out := k.host.Run("ip", "-6", "addr", "show", "dev", "tomoe0"); strings.Contains(out, "fc00::53") {
		t.Errorf("fc00::53 on tomoe0 with tun.dns = false:\n%s", out)
	}
	if out := k.host.Run("ss", "-uln"); strings.Contains(out, ":53 ") {
		t.Errorf("something listens on port 53 with tun.dns = false:\n%s", out)
	}
}
