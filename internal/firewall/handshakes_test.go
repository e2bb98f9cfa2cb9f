//go:build linux

package firewall

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/testnet"
)

// TestHandshakeLimit: initiation-shaped datagrams to tomoe's port beyond
// the rate are dropped in prerouting, before the socket; those from a
// peer's address all pass, and other datagrams are not touched.
func TestHandshakeLimit(t *testing.T) {
	requireFirewall(t)
	ns := testnet.NewNetns(t, "hs")
	ns.Run("ip", "addr", "add", "127.0.0.2/8", "dev", "lo")
	const port = 4610
	f := open(t, ns, Config{TUN: tun, NodeAddr: netip.MustParseAddr("fc00::1"), UDPPort: port, HandshakeRate: 10})
	var sink *net.UDPConn
	var err error
	ns.Do(func() { sink, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}) })
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	sink.SetReadBuffer(8 << 20)
	initiation := make([]byte, 148)
	initiation[0] = 1
	other := make([]byte, 148)
	other[0] = 4 // a transport message of the same size: not limited
	count := func(n int, from string, msg []byte) int {
		var src *net.UDPConn
		ns.Do(func() { src, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(from)}) })
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		for range n {
			src.WriteToUDP(msg, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		}
		got := 0
		buf := make([]byte, 256)
		for {
			sink.SetReadDeadline(time.Now().Add(silence))
			if _, _, err := sink.ReadFromUDP(buf); err != nil {
				return got
			}
			got++
		}
	}
	const n = HandshakeBurst + 1000
	if got := count(n, "127.0.0.1", initiation); got >= n || got < HandshakeBurst/2 {
		t.Fatalf("%d of %d initiations passed a limit of 10/s with a burst of %d", got, n, HandshakeBurst)
	}
	if got := count(n, "127.0.0.1", other); got != n {
		t.Fatalf("%d of %d other datagrams passed: only initiations are limited", got, n)
	}
	if err := f.SetPeers([]netip.Addr{netip.MustParseAddr("127.0.0.2")}); err != nil {
		t.Fatal(err)
	}
	if got := count(n, "127.0.0.2", initiation); got != n {
		t.Fatalf("%d of %d initiations from a peer's address passed", got, n)
	}
	// The peers survive a rebuilt table.
	if err := f.Update(Config{TUN: tun, NodeAddr: netip.MustParseAddr("fc00::1"), UDPPort: port, HandshakeRate: 10, ClampMSS: true}); err != nil {
		t.Fatal(err)
	}
	if out, _ := listTable(t, ns); !strings.Contains(out, "127.0.0.2") {
		t.Fatalf("the peers' set lost its element on update:\n%s", out)
	}
	if err := f.SetPeers(nil); err != nil {
		t.Fatal(err)
	}
	if out, _ := listTable(t, ns); strings.Contains(out, "127.0.0.2") {
		t.Fatalf("a removed peer stays in the set:\n%s", out)
	}
}
