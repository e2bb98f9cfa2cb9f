package vlab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/testnet"
	"github.com/tomoe-net/tomoe/internal/testnet/vnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoPort is the port every lab node serves its echo on, as in the
// netns lab.
const echoPort = 7

// retryRoundTrip retries round trips on c, each with 3 s to come back,
// until one does, failing t after d: a connection living through a change
// of its path.
func retryRoundTrip(t *testing.T, c net.Conn, what string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for i := 0; ; i++ {
		err := testnet.RoundTrip(c, fmt.Sprintf("%s %d", what, i), 3*time.Second)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("connection did not recover %s: %v", what, err)
		}
	}
}

// vnetConfig is the lab's world: seeded, so NAT port choices repeat.
func vnetConfig() vnet.Config { return vnet.Config{Seed: 1} }

// TestBridgeNATLabTwin is e2e's TestBridgeNATLab on the in-memory
// internet: a bridge on the internet, sites behind NATs of each kind,
// nodes that know only the bridge and reach each other by overlay address
// alone. Each subtest asserts what its netns twin asserts (the path, end
// to end traffic through the overlay, the bridge's view), and where vnet
// can say more (the bridge's relay counters, the datagrams the NATs
// dropped) it says that too.
func TestBridgeNATLabTwin(t *testing.T) {
	lab := New(t, vnetConfig())
	br := lab.NewNode("bridge", lab.AddHost("bridge"))
	bridgeEP := br.Endpoint().String()

	kinds := []struct {
		name string
		kind NATKind
	}{
		{"eim1", EndpointIndependent},
		{"eim2", EndpointIndependent},
		{"sym1", Symmetric},
		{"sym2", Symmetric},
		{"noudp", UDPBlocked},
	}
	nodes := map[string]*Node{}
	sites := map[string]*Site{}
	var members []*Node
	for _, k := range kinds {
		s := lab.AddSite(k.name, k.kind)
		sites[k.name] = s
		nodes[k.name] = lab.NewNode(k.name, s.Host)
		if k.name != "noudp" { // noudp joins with a token instead
			members = append(members, nodes[k.name])
		}
	}
	eim1, eim2, sym1, sym2, noudp := nodes["eim1"], nodes["eim2"], nodes["sym1"], nodes["sym2"], nodes["noudp"]

	br.Start(t, BridgeConfig(members...))
	tok, err := br.BridgeArea().CreateToken(context.Background(), adminapi.TokenRequest{Uses: 1, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}

	// Everyone allows everyone on tcp/7: this test is about paths.
	var policy strings.Builder
	for _, n := range nodes {
		policy.WriteString(AllowConfig(n, "tcp", fmt.Sprint(echoPort)))
	}
	for name, n := range nodes {
		token := ""
		if name == "noudp" {
			token = tok.Token
		}
		n.Start(t, JoinConfig(br, token)+policy.String())
		n.Echo(t, echoPort)
	}
	for name, n := range nodes {
		transport := "udp"
		if name == "noudp" {
			transport = "tcp"
		}
		n.WaitBridge(t, "registered", transport, 20*time.Second)
	}

	t.Run("endpoint-independent sites go direct", func(t *testing.T) {
		start := time.Now()
		eim1.Talk(t, eim2, echoPort)
		eim1.WaitPath(t, eim2, Direct, 5*time.Second)
		t.Logf("first packet to direct path: %v", time.Since(start))
		eim2.WaitPath(t, eim1, Direct, 5*time.Second)
		// Direct means the bridge relays none of it.
		before := br.Relayed(t, eim1)
		eim1.Talk(t, eim2, echoPort)
		if after := br.Relayed(t, eim1); after != before {
			t.Fatalf("the bridge relayed %d bytes of eim1's direct traffic", after-before)
		}
	})

	t.Run("symmetric sites stay relayed", func(t *testing.T) {
		filtered := lab.World.Stats().NATFiltered
		relayed := br.Relayed(t, sym1)
		sym1.Talk(t, sym2, echoPort)
		// Instead of the netns lab's four seconds: wait until the NATs
		// have dropped a good many of the two nodes' probes, and check
		// that no probe got through meanwhile.
		testnet.WaitFor(t, 10*time.Second, "the symmetric NATs dropping probes", func() bool {
			if p := sym1.PathTo(t, sym2); p.Kind != RelayUDP || !strings.HasPrefix(p.Via, bridgeEP) {
				t.Fatalf("sym1 -> sym2 path %v, want relay over udp via %s", p, bridgeEP)
			}
			return lab.World.Stats().NATFiltered >= filtered+16
		})
		sym1.Talk(t, sym2, echoPort)
		if p := sym2.PathTo(t, sym1); p.Kind != RelayUDP || !strings.HasPrefix(p.Via, bridgeEP) {
			t.Fatalf("sym2 -> sym1 path %v, want relay over udp via %s", p, bridgeEP)
		}
		if br.Relayed(t, sym1) == relayed {
			t.Fatal("sym1's traffic is relayed, but the bridge counted none of it")
		}
	})

	t.Run("UDP-blocked site uses the TCP relay", func(t *testing.T) {
		noudp.Talk(t, eim1, echoPort)
		if p := noudp.PathTo(t, eim1); p.Kind != RelayTCP || !strings.HasPrefix(p.Via, bridgeEP) {
			t.Fatalf("noudp -> eim1 path %v, want relay over tcp via %s", p, bridgeEP)
		}
		eim1.Talk(t, noudp, echoPort)
		if b, ok := br.BridgeNode(t, noudp); !ok || b.Transport != "tcp" || b.RelayedBytes == 0 {
			t.Fatalf("the bridge's view of noudp: %+v (registered %v), want tcp with relayed bytes", b, ok)
		}
	})

	t.Run("cutting the direct path falls back to the relay", func(t *testing.T) {
		c := eim1.Talk(t, eim2, echoPort)
		eim1.WaitPath(t, eim2, Direct, 5*time.Second)
		sites["eim1"].NAT.BlockUDPTo(sites["eim2"].Public)
		// The connection lives on: within a few seconds its packets take
		// the relay.
		retryRoundTrip(t, c, "during the cut", 15*time.Second)
		eim1.WaitPath(t, eim2, RelayUDP, 10*time.Second)
		if err := testnet.RoundTrip(c, "over the relay", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		sites["eim1"].NAT.UnblockUDPTo(sites["eim2"].Public)
		eim1.WaitPath(t, eim2, Direct, 10*time.Second)
		if err := testnet.RoundTrip(c, "direct again", 5*time.Second); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a node whose public address changes keeps its session", func(t *testing.T) {
		c := eim1.Talk(t, eim2, echoPort)
		eim1.WaitPath(t, eim2, Direct, 5*time.Second)
		// eim1's router gets a new public address (as after a DHCP
		// renewal) and forgets the old mappings with it.
		moved := netip.AddrFrom4([4]byte{203, 0, 113, 51})
		if err := sites["eim1"].NAT.SetPublicAddr(moved); err != nil {
			t.Fatal(err)
		}
		retryRoundTrip(t, c, "after the move", 20*time.Second)
		// The bridge learns the new address at the next keepalive.
		testnet.WaitFor(t, 30*time.Second, "the bridge sees eim1's new address", func() bool {
			b, ok := br.BridgeNode(t, eim1)
			return ok && strings.HasPrefix(b.Endpoint, moved.String()+":")
		})
		eim1.WaitPath(t, eim2, Direct, 10*time.Second)
		if err := testnet.RoundTrip(c, "settled", 5*time.Second); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("bridge restart heals", func(t *testing.T) {
		c := sym1.Talk(t, sym2, echoPort)
		br.Restart(t)
		for _, n := range []*Node{sym1, sym2} {
			n.WaitBridge(t, "registered", "udp", 40*time.Second)
		}
		retryRoundTrip(t, c, "after the restart", 30*time.Second)
	})

	t.Run("a revoked node can no longer register or relay", func(t *testing.T) {
		c := sym1.Talk(t, sym2, echoPort)
		resp, err := br.BridgeArea().BridgeRevoke(context.Background(), adminapi.BridgeRevokeRequest{PublicKey: sym2.Public().String()})
		if err != nil || resp.PublicKey != sym2.Public().String() || !resp.WasRegistered {
			t.Fatalf("revoke: %+v %v", resp, err)
		}
		if err := testnet.RoundTrip(c, "after the revoke", 3*time.Second); err == nil {
			t.Fatal("relayed traffic still flows to a revoked node")
		}
		sym2.WaitBridge(t, "refused", "", 40*time.Second)
		if b, ok := br.BridgeNode(t, sym2); ok {
			t.Fatalf("revoked node still listed: %+v", b)
		}
	})
}
