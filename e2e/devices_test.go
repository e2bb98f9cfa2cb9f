package e2e

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// wgQuick is a wg-quick file as the WireGuard apps read it: its
// [Interface] keys that only wg-quick knows (Address, DNS, MTU) apart
// from the rest, which `wg setconf` takes.
type wgQuick struct {
	address []string
	mtu     string
	setconf string // the file without wg-quick's own keys
	allowed []string
	peerKey string
	endpt   string
}

func parseWGQuick(t *testing.T, s string) wgQuick {
	t.Helper()
	var q wgQuick
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			b.WriteString(line + "\n")
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("wg-quick line %q is not key = value", line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		list := func() []string {
			var out []string
			for _, x := range strings.Split(v, ",") {
				out = append(out, strings.TrimSpace(x))
			}
			return out
		}
		switch k {
		case "Address":
			q.address = append(q.address, list()...)
			continue
		case "MTU":
			q.mtu = v
			continue
		case "DNS", "Table", "PreUp", "PostUp", "PreDown", "PostDown", "SaveConfig":
			continue
		case "AllowedIPs":
			q.allowed = append(q.allowed, list()...)
		case "PublicKey":
			q.peerKey = v
		case "Endpoint":
			q.endpt = v
		}
		b.WriteString(line + "\n")
	}
	q.setconf = b.String()
	return q
}

// wgDevice brings up Debian's wireguard-go in h as interface ifc (a
// name of its own: wireguard-go's control socket, /var/run/wireguard/IFC.sock,
// is shared by every namespace), configured from a
// wg-quick file alone (what wg-quick itself would do, by hand).
func wgDevice(t *testing.T, h *testnet.Host, ifc, conf string) wgQuick {
	t.Helper()
	q := parseWGQuick(t, conf)
	wg := h.Start(t, "wireguard-go", "wireguard-go", "-f", ifc)
	t.Cleanup(func() { wg.Stop(syscall.SIGTERM, 5*time.Second) })
	testnet.WaitFor(t, 10*time.Second, "wireguard-go's interface", func() bool {
		_, err := h.Try("ip", "link", "show", ifc)
		return err == nil
	})
	f := filepath.Join(t.TempDir(), ifc+".conf")
	if err := os.WriteFile(f, []byte(q.setconf), 0o600); err != nil {
		t.Fatal(err)
	}
	h.Run("wg", "setconf", ifc, f)
	for _, a := range q.address {
		h.Run("ip", "addr", "add", a, "dev", ifc, "nodad")
	}
	if q.mtu != "" {
		h.Run("ip", "link", "set", ifc, "mtu", q.mtu)
	}
	h.Run("ip", "link", "set", ifc, "up")
	for _, p := range q.allowed {
		if strings.Contains(p, ":") {
			h.Run("ip", "-6", "route", "replace", p, "dev", ifc)
		} else {
			h.Run("ip", "route", "replace", p, "dev", ifc)
		}
	}
	return q
}

// dialFrom connects from h, optionally from a given local address.
func dialFrom(h *testnet.Host, local, to string, port int, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	var err error
	h.Do(func() {
		d := net.Dialer{Timeout: timeout}
		if local != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
		}
		c, err = d.Dial("tcp6", fmt.Sprintf("[%s]:%d", to, port))
	})
	return c, err
}

// TestHostedDevice: a plain WireGuard device (Debian's wireguard-go and
// wg, configured from the file `tomoe device add` printed, nothing else)
// joins through its home node H and is a first-class identity: N1, which
// lists it under H's devices and allows its key, answers it; N2, which
// allows H but not the device, refuses it; N1 reaches the device as H's
// policy allows; a peer of N1 that claims the device's address is
// dropped; `tomoe device remove` cuts it at once.
func TestHostedDevice(t *testing.T) {
	parallel(t, 40*time.Second)
	testnet.RequireRoot(t)
	for _, bin := range []string{"wireguard-go", "wg"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not installed (Debian: apt-get install wireguard-go wireguard-tools)", bin)
		}
	}
	lan := testnet.NewLAN(t, "home", "n1", "n2", "phone", "fake")
	home := &kernelNode{nodeDir: newNodeDir(t, "home"), host: lan.Hosts["home"]}
	n1 := &kernelNode{nodeDir: newNodeDir(t, "n1"), host: lan.Hosts["n1"]}
	n2 := &kernelNode{nodeDir: newNodeDir(t, "n2"), host: lan.Hosts["n2"]}
	fake := newNodeDir(t, "fake") // a plain WireGuard peer of n1 that will claim the device's address
	fakeH := lan.Hosts["fake"]
	phoneH := lan.Hosts["phone"]

	// The home node first: the device's key exists only once it is added.
	home.body = peerBlock(n1.nodeDir, n1.endpoint()) + peerBlock(n2.nodeDir, n2.endpoint())
	home.start(t)

	// Bad input and its exit statuses, one line each.
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"device", "add", "bad name!"}, 2},
		{[]string{"device", "add"}, 2},
		{[]string{"device", "add", "x", "--endpoint", "nohostport"}, 2},
		{[]string{"device", "remove", "nosuch"}, 1},
		{[]string{"device", "frobnicate"}, 2},
	} {
		r := run(t, "", append(c.args, "--socket", home.socket())...)
		if r.code != c.code || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || r.stdout != "" {
			t.Errorf("tomoe %v: exit %d (want %d), stdout %q, stderr %q", c.args, r.code, c.code, r.stdout, r.stderr)
		}
	}

	// No --endpoint: the home's one LAN IPv4 address and listen port.
	conf := home.cli(t, "device", "add", "phone")
	if strings.Contains(conf, "Endpoint = "+home.endpoint()+"\n") == false {
		t.Fatalf("the config does not name the home's endpoint %s:\n%s", home.endpoint(), conf)
	}
	if r := run(t, "", "device", "add", "phone", "--socket", home.socket()); r.code != 1 || !strings.Contains(r.stderr, "taken") {
		t.Errorf("a second device named phone: exit %d, %q", r.code, r.stderr)
	}
	var devs []adminapi.Device
	home.cliJSON(t, &devs, "device", "list")
	if len(devs) != 1 || devs[0].Name != "phone" {
		t.Fatalf("device list: %+v", devs)
	}
	dev := devs[0]
	// The private key is printed, never kept: the home's directory does
	// not hold it, and the device list file is 0600.
	priv := ""
	for _, l := range strings.Split(conf, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && strings.TrimSpace(k) == "PrivateKey" {
			priv = strings.TrimSpace(v)
		}
	}
	if priv == "" {
		t.Fatalf("no PrivateKey in\n%s", conf)
	}
	filepath.Walk(home.dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), priv) {
				t.Errorf("%s holds the device's private key", p)
			}
		}
		return nil
	})
	if fi, err := os.Stat(filepath.Join(home.dir, "devices.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("devices.json: %v, mode %v", err, fi.Mode())
	}

	// n1 and n2 list the device on home's entry; n1 allows its key, n2
	// allows only home (which must not cover the device). fake is n1's
	// peer too, allowed, so that what it sends from its own address
	// arrives: only the device's address is refused from it.
	hostedBy := func(to *kernelNode) string {
		return peerBlock(to.nodeDir, to.endpoint()) + fmt.Sprintf("devices = [%q]\n", dev.PublicKey)
	}
	n1.body = hostedBy(home) + peerBlock(fake, fakeH.IPv4.String()+":51820") +
		allowBlock(dev.PublicKey, "tcp", "7") + allowBlock(dev.PublicKey, "udp", "8") + allowBlock(fake.pub().String(), "udp", "8")
	n2.body = hostedBy(home) + allowBlock(home.pub().String(), "tcp", "7")
	n1.launch(t)
	n2.launch(t)
	n1.ready(t)
	n2.ready(t)
	n1.listenTCP(t, 7)
	n2.listenTCP(t, 7)
	udp := n1.listenUDP(t, 8)

	q := wgDevice(t, phoneH, "wgphone", conf)
	if want := dev.Address + "/128"; len(q.address) != 1 || q.address[0] != want {
		t.Fatalf("config Address %v, want %s", q.address, want)
	}

	t.Run("device to n1, which allows its key", func(t *testing.T) {
		var c net.Conn
		testnet.WaitFor(t, 30*time.Second, "the device reaches n1's port 7 through home", func() bool {
			var err error
			c, err = dialFrom(phoneH, "", n1.addr(), 7, 3*time.Second)
			return err == nil
		})
		defer c.Close()
		if err := testnet.RoundTrip(c, "from a phone", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != dev.Address {
			t.Fatalf("local address %s, want the device's %s", got, dev.Address)
		}
	})

	t.Run("device to n2, which allows only home", func(t *testing.T) {
		if c, err := dialFrom(phoneH, "", n2.addr(), 7, 3*time.Second); err == nil {
			c.Close()
			t.Fatal("n2 answered the device: a rule for its home matched the device's packets")
		}
		// home itself still reaches n2's port 7.
		c, err := home.dialTCP(n2.addr(), 7, 10*time.Second)
		if err != nil {
			t.Fatalf("home -> n2: %v", err)
		}
		c.Close()
	})

	t.Run("n1 to device, as home's policy allows", func(t *testing.T) {
		var ln net.Listener
		var err error
		phoneH.Do(func() { ln, err = net.Listen("tcp6", fmt.Sprintf("[%s]:9", dev.Address)) })
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go testnet.Echo(ln)
		// No rule on home yet: the device is guarded by default.
		if c, err := n1.dialTCP(dev.Address, 9, 3*time.Second); err == nil {
			c.Close()
			t.Fatal("n1 reached the device's port 9 without a rule on its home")
		}
		home.cli(t, "policy", "allow", n1.pub().String(), "--proto", "tcp", "--ports", "9", "--to", dev.PublicKey)
		c, err := n1.dialTCP(dev.Address, 9, 10*time.Second)
		if err != nil {
			t.Fatalf("n1 -> device after home's rule: %v", err)
		}
		defer c.Close()
		if err := testnet.RoundTrip(c, "to a phone", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		// n2 has no such rule on home.
		if c, err := n2.dialTCP(dev.Address, 9, 3*time.Second); err == nil {
			c.Close()
			t.Fatal("n2 reached the device without a rule on its home")
		}
	})

	t.Run("a peer claiming the device's address is dropped", func(t *testing.T) {
		wg := fakeH.Start(t, "wireguard-go", "wireguard-go", "-f", "wgfake")
		t.Cleanup(func() { wg.Stop(syscall.SIGTERM, 5*time.Second) })
		testnet.WaitFor(t, 10*time.Second, "wireguard-go's interface", func() bool {
			_, err := fakeH.Try("ip", "link", "show", "wgfake")
			return err == nil
		})
		fakeH.Run("wg", "set", "wgfake", "private-key", filepath.Join(fake.dir, "node.key"), "listen-port", "51820",
			"peer", n1.pub().String(), "endpoint", n1.endpoint(), "allowed-ips", "fc00::/8")
		fakeH.Run("ip", "-6", "addr", "add", fake.addr()+"/128", "dev", "wgfake", "nodad")
		fakeH.Run("ip", "-6", "addr", "add", dev.Address+"/128", "dev", "wgfake", "nodad")
		fakeH.Run("ip", "link", "set", "wgfake", "mtu", "1400", "up")
		fakeH.Run("ip", "-6", "route", "add", "fc00::/8", "dev", "wgfake")
		// One-way datagrams, so that n1's answers (which go to the
		// device's address through home) decide nothing: what arrives at
		// n1's socket is what its WireGuard and filter let in.
		send := func(h *testnet.Host, from string) {
			h.Do(func() {
				c, err := net.DialUDP("udp6", &net.UDPAddr{IP: net.ParseIP(from)}, &net.UDPAddr{IP: net.ParseIP(n1.addr()), Port: 8})
				if err != nil {
					t.Errorf("udp from %s: %v", from, err)
					return
				}
				defer c.Close()
				c.Write([]byte("from " + from))
			})
		}
		// From its own address: it arrives (the tunnel works)...
		testnet.WaitFor(t, 30*time.Second, "a datagram from fake's own address at n1", func() bool {
			send(fakeH, fake.addr())
			select {
			case got := <-udp:
				return strings.Contains(got, "from "+fake.addr())
			case <-time.After(time.Second):
				return false
			}
		})
		// ...from the device's address, whose key n1 allows: dropped.
		for range 3 {
			send(fakeH, dev.Address)
		}
		deadline := time.After(2 * time.Second)
	drain:
		for {
			select {
			case got := <-udp:
				if strings.Contains(got, "from "+dev.Address) {
					t.Fatalf("n1 took a datagram from the device's address from a peer that does not host it: %q", got)
				}
			case <-deadline:
				break drain
			}
		}
		// The device itself, through its home: arrives.
		send(phoneH, dev.Address)
		expectOne(t, udp, 5*time.Second, "from "+dev.Address)
	})

	t.Run("home's local programs cannot send as the device", func(t *testing.T) {
		// IPV6_FREEBIND needs no privilege: any local user of home may
		// bind the device's address. What it sends is spoofed, not the
		// device's: home drops it, n1 never sees it.
		before := home.status(t).Counters.Spoofed
		homeH := lan.Hosts["home"]
		for range 3 {
			homeH.Do(func() {
				d := net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(dev.Address)}, Control: func(_, _ string, rc syscall.RawConn) error {
					var serr error
					if err := rc.Control(func(fd uintptr) {
						serr = syscall.SetsockoptInt(int(fd), syscall.SOL_IPV6, unix.IPV6_FREEBIND, 1)
					}); err != nil {
						return err
					}
					return serr
				}}
				c, err := d.Dial("udp6", fmt.Sprintf("[%s]:8", n1.addr()))
				if err != nil {
					t.Errorf("udp from the device's address on home: %v", err)
					return
				}
				defer c.Close()
				c.Write([]byte("from home as " + dev.Address))
			})
		}
		select {
		case got := <-udp:
			t.Fatalf("n1 took a datagram a local program of home sent as the device: %q", got)
		case <-time.After(2 * time.Second):
		}
		if after := home.status(t).Counters.Spoofed; after < before+3 {
			t.Errorf("home's spoofed counter went from %d to %d, want +3", before, after)
		}
	})

	t.Run("device list", func(t *testing.T) {
		var list []adminapi.Device
		home.cliJSON(t, &list, "device", "list")
		if len(list) != 1 {
			t.Fatalf("%+v", list)
		}
		d := list[0]
		if d.Name != "phone" || d.Address != dev.Address || d.PublicKey != q.peerKeyOf(t, priv) || !d.Up || d.LastHandshake == nil || d.RxBytes == 0 || d.TxBytes == 0 || d.Endpoint == nil || !strings.HasPrefix(*d.Endpoint, phoneH.IPv4.String()+":") {
			t.Fatalf("device list entry %+v", d)
		}
		if st := home.status(t); st.Counters.Hairpinned == 0 {
			t.Fatalf("home's counters show nothing forwarded for the device: %+v", st.Counters)
		}
	})

	t.Run("a QR code for the apps", func(t *testing.T) {
		out := home.cli(t, "device", "add", "tablet", "--qr", "--endpoint", "home.example.org:4610")
		if strings.Contains(out, "PrivateKey") || !strings.ContainsAny(out, "█▀▄") || strings.Count(out, "\n") < 20 {
			t.Fatalf("--qr printed:\n%s", out)
		}
		home.cli(t, "device", "remove", "tablet")
	})

	t.Run("remove cuts the device at once", func(t *testing.T) {
		c, err := dialFrom(phoneH, "", n1.addr(), 7, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := testnet.RoundTrip(c, "before", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		out := home.cli(t, "device", "remove", "phone")
		if !strings.Contains(out, "removed") {
			t.Fatalf("remove printed %q", out)
		}
		if err := testnet.RoundTrip(c, "after", 3*time.Second); err == nil {
			t.Fatal("the device's connection still works after remove")
		}
		if c, err := dialFrom(phoneH, "", n1.addr(), 7, 3*time.Second); err == nil {
			c.Close()
			t.Fatal("the device opened a connection after remove")
		}
		var list []adminapi.Device
		home.cliJSON(t, &list, "device", "list")
		if len(list) != 0 {
			t.Fatalf("device list after remove: %+v", list)
		}
	})
}

// peerKeyOf is the public key of the private key in the device's file,
// as wg computes it.
func (q wgQuick) peerKeyOf(t *testing.T, priv string) string {
	t.Helper()
	cmd := exec.Command("wg", "pubkey")
	cmd.Stdin = strings.NewReader(priv + "\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}
