package e2e

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/testnet"
)

// TestPlainWireGuardPeer: a device running only upstream WireGuard
// (Debian's wireguard-go and wg, no tomoe) configured with its own
// key-derived address talks to a tomoe node that lists it as a static
// peer, in both directions: the address is just a hash of the key. The
// tomoe node's policy still decides what the device may open.
func TestPlainWireGuardPeer(t *testing.T) {
	parallel(t, 15*time.Second)
	testnet.RequireRoot(t)
	for _, bin := range []string{"wireguard-go", "wg"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not installed (Debian: apt-get install wireguard-go wireguard-tools)", bin)
		}
	}
	lan := testnet.NewLAN(t, "node", "phone")
	node := &kernelNode{nodeDir: newNodeDir(t, "node"), host: lan.Hosts["node"]}
	phone := newNodeDir(t, "phone") // only its key: the device below runs no tomoe
	phoneH := lan.Hosts["phone"]
	node.body = peerBlock(phone, phoneH.IPv4.String()+":51820") + allowBlock(phone.pub().String(), "tcp", "7")
	node.start(t)
	node.listenTCP(t, 7)
	node.listenTCP(t, 8)

	// The device: wireguard-go in the foreground, configured by wg from
	// the key file alone, its derived address on the interface and the
	// overlay routed into it.
	wg := phoneH.Start(t, "wireguard-go", "wireguard-go", "-f", "wg0")
	testnet.WaitFor(t, 10*time.Second, "wireguard-go's interface", func() bool {
		_, err := phoneH.Try("ip", "link", "show", "wg0")
		return err == nil
	})
	keyFile := filepath.Join(phone.dir, "node.key")
	phoneH.Run("wg", "set", "wg0", "private-key", keyFile, "listen-port", "51820",
		"peer", node.pub().String(), "endpoint", node.endpoint(), "allowed-ips", "fc00::/8")
	phoneH.Run("ip", "-6", "addr", "add", phone.addr()+"/128", "dev", "wg0", "nodad")
	phoneH.Run("ip", "link", "set", "wg0", "mtu", "1400", "up")
	phoneH.Run("ip", "-6", "route", "add", "fc00::/8", "dev", "wg0")
	t.Cleanup(func() { wg.Stop(syscall.SIGTERM, 5*time.Second) })

	t.Run("device to node, as the node's policy allows", func(t *testing.T) {
		var c net.Conn
		testnet.WaitFor(t, 30*time.Second, "the device reaches the node's port 7", func() bool {
			var err error
			phoneH.Do(func() { c, err = net.DialTimeout("tcp6", fmt.Sprintf("[%s]:7", node.addr()), 3*time.Second) })
			return err == nil
		})
		defer c.Close()
		if err := testnet.RoundTrip(c, "from a plain WireGuard device", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		// Port 8 is not in the rule: refused by the node's policy.
		var err error
		phoneH.Do(func() { c, err = net.DialTimeout("tcp6", fmt.Sprintf("[%s]:8", node.addr()), 2*time.Second) })
		if err == nil {
			c.Close()
			t.Fatal("the device reached a port the node's policy does not allow")
		}
	})

	t.Run("node to device", func(t *testing.T) {
		var ln net.Listener
		var err error
		phoneH.Do(func() { ln, err = net.Listen("tcp6", fmt.Sprintf("[%s]:9", phone.addr())) })
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go testnet.Echo(ln)
		c, err := node.dialTCP(phone.addr(), 9, 10*time.Second)
		if err != nil {
			t.Fatalf("node -> device: %v", err)
		}
		defer c.Close()
		if err := testnet.RoundTrip(c, "to a plain WireGuard device", 5*time.Second); err != nil {
			t.Fatal(err)
		}
	})
}
