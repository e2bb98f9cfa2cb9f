package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/testnet"
)

// stateOf returns the state and reason of prefix in k's learned routes.
func stateOf(t *testing.T, k *kernelNode, prefix string) (string, string) {
	for _, l := range routesOf(k, t).Learned {
		if l.Prefix == prefix {
			return l.State, l.Reason
		}
	}
	return "", ""
}

func throwIn4610(ns *testnet.Netns, prefix string) bool {
	out, _ := ns.Try("ip", "-4", "route", "show", "table", "4610")
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "throw "+prefix) {
			return true
		}
	}
	return false
}

// A laptop on its home LAN, 192.168.1.0/24, accepts 192.168.0.0/16 and
// 192.168.1.7/32 from an office gateway: the office LAN goes through the
// gateway, but the home LAN, its neighbour 192.168.1.7 included, stays on
// the laptop's LAN interface (real pings and TCP, ip route get), and
// tomoe routes says why the /32 is not installed. When the laptop moves to
// another LAN, 192.168.1.7 is the office's again.
func TestHostNetworksStayOnTheHost(t *testing.T) {
	parallel(t, 10*time.Second)
	testnet.RequireRoot(t)
	testnet.RequireNftables(t)
	lab := testnet.NewNATLab(t)
	gwH, lapH := lab.AddHost("gw"), lab.AddHost("laptop")

	office := testnet.NewNetns(t, "office")
	gwH.Veth("lan0", office, "eth0")
	gwH.Run("ip", "addr", "add", "192.168.10.1/24", "dev", "lan0")
	office.Run("ip", "addr", "add", "192.168.10.5/24", "dev", "eth0")
	serveWhoami(t, office, "tcp", ":7")

	home := testnet.NewNetns(t, "home")
	lapH.Veth("lan0", home, "eth0")
	lapH.Run("ip", "addr", "add", "192.168.1.2/24", "dev", "lan0")
	home.Run("ip", "addr", "add", "192.168.1.7/24", "dev", "eth0")
	serveWhoami(t, home, "tcp", ":7")

	gw := &kernelNode{nodeDir: newNodeDir(t, "gw"), host: gwH}
	lap := &kernelNode{nodeDir: newNodeDir(t, "laptop"), host: lapH}
	gw.tun = "ipv4 = \"auto\"\n"
	gw.body = offerBlock("192.168.0.0/16", true) + offerBlock("192.168.1.7/32", true) + acceptBlock("*", "100.64.0.0/10") +
		allowBlock(lap.pub().String(), "tcp", "7") + allowBlock(lap.pub().String(), "icmp", "")
	lap.tun = "ipv4 = \"auto\"\n"
	lap.body = peerBlock(gw.nodeDir, gw.endpoint()) + acceptBlock(gw.addr(), "192.168.0.0/16")
	gw.start(t)
	lap.start(t)

	testnet.WaitFor(t, 15*time.Second, "the laptop installs the office routes", func() bool {
		return tableHas(lapH.Netns, "-4", "192.168.0.0/16")
	})
	if state, reason := stateOf(t, lap, "192.168.1.7/32"); state != "conflict" || reason != "host_network" {
		t.Errorf("192.168.1.7/32 on the laptop's own LAN: %s (%s), want conflict (host_network)", state, reason)
	}
	if tableHas(lapH.Netns, "-4", "192.168.1.7") {
		t.Error("192.168.1.7/32 is routed into the TUN")
	}
	if !throwIn4610(lapH.Netns, "192.168.1.0/24") {
		t.Errorf("no throw route for the home LAN:\n%s", lapH.Run("ip", "route", "show", "table", "4610"))
	}
	for dst, dev := range map[string]string{"192.168.1.7": "lan0", "192.168.1.1": "lan0", "192.168.10.5": "tomoe0", "192.168.2.9": "tomoe0"} {
		if out := lapH.Run("ip", "route", "get", dst); !strings.Contains(out, "dev "+dev+" ") {
			t.Errorf("ip route get %s: %s; want dev %s", dst, strings.TrimSpace(out), dev)
		}
	}
	if out, err := lapH.Try("ping", "-c", "1", "-W", "3", "192.168.1.7"); err != nil {
		t.Errorf("ping the home neighbour: %v\n%s", err, out)
	}
	if from, err := askWhoami(lapH.Netns, "192.168.1.7:7", 5*time.Second); err != nil || hostOf(from) != "192.168.1.2" {
		t.Errorf("the home neighbour over TCP: saw %q, %v; want the laptop's LAN address 192.168.1.2", from, err)
	}
	if from, err := askWhoami(lapH.Netns, "192.168.10.5:7", 10*time.Second); err != nil || hostOf(from) != "192.168.10.1" {
		t.Errorf("the office host through the gateway: saw %q, %v; want the gateway's 192.168.10.1", from, err)
	}

	// The laptop moves to another LAN: 192.168.1.7 is the office's again.
	lapH.Run("ip", "addr", "del", "192.168.1.2/24", "dev", "lan0")
	lapH.Run("ip", "addr", "add", "172.20.0.2/24", "dev", "lan0")
	testnet.WaitFor(t, 10*time.Second, "the laptop installs 192.168.1.7/32 once off that LAN", func() bool {
		state, _ := stateOf(t, lap, "192.168.1.7/32")
		return state == "installed" && tableHas(lapH.Netns, "-4", "192.168.1.7")
	})
	if throwIn4610(lapH.Netns, "192.168.1.0/24") {
		t.Error("the throw route for the old LAN is still there")
	}
	if out := lapH.Run("ip", "route", "get", "192.168.1.7"); !strings.Contains(out, "dev tomoe0 ") {
		t.Errorf("ip route get 192.168.1.7 after the move: %s", out)
	}
}
