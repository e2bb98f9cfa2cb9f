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
	start := time.Now()
	deadline := start.Add(d)
	for i := 0; ; i++ {
		err := testnet.RoundTrip(c, fmt.Sprintf("%s %d", what, i), 3*time.Second)
		if err == nil {
			t.Logf("round trip %s after %v", what, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("connection did not recover %s: %v", what, err)
		}
	}
}

// vnetConfig is the lab's world: seeded, so NAT port choices repeat.
func vnetConfig() vnet.Config { return vnet.Config{Seed: 1} }

// natLab is the netns lab's topology on the in-memory internet: a bridge
// on the internet and seven sites, two behind endpoint-independent NATs,
// two behind symmetric ones, one whose router drops UDP, and two "easy"
// NATs whose routers accept unsolicited input (open1, open2) with a
// router between them: the netns lab puts a transit router in front of
// open2; here the internet is one routed hop (Network.SetHops), which is
// what a packet from one site to another sees either way. Every node knows
// only the bridge (noudp joins with a token, the others are on the
// bridge's allow list), allows every other on tcp/7 and serves an echo
// there. newNATLab returns once all are registered.
type natLab struct {
	*Lab
	br                            *Node
	bridgeEP                      string // the bridge's "ip:port"
	eim1, eim2, sym1, sym2, noudp *Node
	open1, open2                  *Node
	sites                         map[string]*Site
}

func newNATLab(t *testing.T) *natLab {
	t.Helper()
	lab := New(t, vnetConfig())
	l := &natLab{Lab: lab, sites: map[string]*Site{}}
	l.br = lab.NewNode("bridge", lab.AddHost("bridge"))
	l.bridgeEP = l.br.Endpoint().String()
	lab.Internet.SetHops(1)
	open := NATConfig(testnet.EndpointIndependent)
	open.NoInputFirewall = true
	kinds := []struct {
		name string
		nat  vnet.NATConfig
		node **Node
	}{
		{"eim1", NATConfig(testnet.EndpointIndependent), &l.eim1},
		{"eim2", NATConfig(testnet.EndpointIndependent), &l.eim2},
		{"sym1", NATConfig(testnet.Symmetric), &l.sym1},
		{"sym2", NATConfig(testnet.Symmetric), &l.sym2},
		{"noudp", NATConfig(testnet.UDPBlocked), &l.noudp},
		{"open1", open, &l.open1},
		{"open2", open, &l.open2},
	}
	var members, all []*Node
	for _, k := range kinds {
		s := lab.AddSiteWith(k.name, k.nat)
		l.sites[k.name] = s
		n := lab.NewNode(k.name, s.Host)
		*k.node = n
		all = append(all, n)
		if n != l.noudp { // noudp joins with a token instead
			members = append(members, n)
		}
	}

	l.br.Start(t, BridgeConfig(members...))
	tok, err := l.br.BridgeArea().CreateToken(context.Background(), adminapi.TokenRequest{Uses: 1, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	// Everyone allows everyone on tcp/7: this test is about paths.
	var policy strings.Builder
	for _, n := range all {
		policy.WriteString(AllowConfig(n, "tcp", fmt.Sprint(echoPort)))
	}
	for _, n := range all {
		token := ""
		if n == l.noudp {
			token = tok.Token
		}
		n.Start(t, JoinConfig(l.br, token)+policy.String())
		n.Echo(t, echoPort)
	}
	for _, n := range all {
		transport := "udp"
		if n == l.noudp {
			transport = "tcp"
		}
		n.WaitBridge(t, "registered", transport, 20*time.Second)
	}
	return l
}

// TestBridgeNATLabTwin is e2e's TestBridgeNATLab on the in-memory
// internet, subtest for subtest. Each asserts what its netns twin asserts
// (the path, end to end traffic through the overlay, the bridge's view),
// and where vnet can say more (the bridge's relay counters, the datagrams
// the NATs dropped) it says that too. The netns subtests share one lab in
// sequence; here they share two, which run in parallel: one for the paths
// (the address change last, as it moves a site for good), one for the
// bridge's own life (restart, then revoke), so the whole takes as long as
// the slower half (mostly the nodes' next keepalive after the restart, up
// to 15 s) for a quarter of the nodes a lab per scenario would start.
func TestBridgeNATLabTwin(t *testing.T) {
	type scenario struct {
		name string
		run  func(t *testing.T, l *natLab)
	}
	for _, half := range []struct {
		name      string
		scenarios []scenario
	}{
		{"paths", []scenario{
			{"endpoint-independent sites go direct", eimGoDirect},
			{"easy NATs without an input firewall go direct", openGoDirect},
			{"symmetric sites stay relayed", symStayRelayed},
			{"UDP-blocked site uses the TCP relay", noUDPUsesTCPRelay},
			{"cutting the direct path falls back to the relay", cutFallsBackToRelay},
			{"a node whose public address changes keeps its session", addressChangeKeepsSession},
		}},
		{"bridge", []scenario{
			{"bridge restart heals", bridgeRestartHeals},
			{"a revoked node can no longer register or relay", revokedCannotRegisterOrRelay},
		}},
	} {
		t.Run(half.name, func(t *testing.T) {
			t.Parallel()
			l := newNATLab(t)
			for _, sc := range half.scenarios {
				t.Run(sc.name, func(t *testing.T) { sc.run(t, l) })
			}
		})
	}
}

// eimGoDirect: endpoint-independent sites go direct.
func eimGoDirect(t *testing.T, l *natLab) {
	start := time.Now()
	l.eim1.Talk(t, l.eim2, echoPort)
	l.eim1.WaitPath(t, l.eim2, Direct, 5*time.Second)
	t.Logf("first packet to direct path: %v", time.Since(start))
	l.eim2.WaitPath(t, l.eim1, Direct, 5*time.Second)
	// Direct means the bridge relays none of it.
	before := l.br.Relayed(t, l.eim1)
	l.eim1.Talk(t, l.eim2, echoPort)
	if after := l.br.Relayed(t, l.eim1); after != before {
		t.Fatalf("the bridge relayed %d bytes of eim1's direct traffic", after-before)
	}
}

// openGoDirect: easy NATs without an input firewall go direct. Each
// side's first probes are openers with a TTL of 2, which map the flow in
// its own NAT and die at the router beyond (counted by the World), so
// that neither NAT's conntrack takes the other's early probe for a flow
// to the router itself.
func openGoDirect(t *testing.T, l *natLab) {
	expired := l.World.Stats().TTLExpired
	start := time.Now()
	l.open1.Talk(t, l.open2, echoPort)
	l.open1.WaitPath(t, l.open2, Direct, 10*time.Second)
	t.Logf("first packet to direct path: %v", time.Since(start))
	l.open2.WaitPath(t, l.open1, Direct, 5*time.Second)
	if l.World.Stats().TTLExpired == expired {
		t.Fatal("direct without an opener expiring on the way: the openers were not sent, or not with TTL 2")
	}
}

// symStayRelayed: symmetric sites stay relayed.
func symStayRelayed(t *testing.T, l *natLab) {
	filtered := l.World.Stats().NATFiltered
	relayed := l.br.Relayed(t, l.sym1)
	l.sym1.Talk(t, l.sym2, echoPort)
	// Instead of the netns lab's four seconds: wait until the NATs
	// have dropped a good many of the two nodes' probes, and check
	// that no probe got through meanwhile.
	testnet.WaitFor(t, 10*time.Second, "the symmetric NATs dropping probes", func() bool {
		if p := l.sym1.PathTo(t, l.sym2); p.Kind != RelayUDP || !strings.HasPrefix(p.Via, l.bridgeEP) {
			t.Fatalf("sym1 -> sym2 path %v, want relay over udp via %s", p, l.bridgeEP)
		}
		return l.World.Stats().NATFiltered >= filtered+16
	})
	l.sym1.Talk(t, l.sym2, echoPort)
	if p := l.sym2.PathTo(t, l.sym1); p.Kind != RelayUDP || !strings.HasPrefix(p.Via, l.bridgeEP) {
		t.Fatalf("sym2 -> sym1 path %v, want relay over udp via %s", p, l.bridgeEP)
	}
	if l.br.Relayed(t, l.sym1) == relayed {
		t.Fatal("sym1's traffic is relayed, but the bridge counted none of it")
	}
}

// noUDPUsesTCPRelay: the UDP-blocked site uses the TCP relay.
func noUDPUsesTCPRelay(t *testing.T, l *natLab) {
	l.noudp.Talk(t, l.eim1, echoPort)
	if p := l.noudp.PathTo(t, l.eim1); p.Kind != RelayTCP || !strings.HasPrefix(p.Via, l.bridgeEP) {
		t.Fatalf("noudp -> eim1 path %v, want relay over tcp via %s", p, l.bridgeEP)
	}
	l.eim1.Talk(t, l.noudp, echoPort)
	if b, ok := l.br.BridgeNode(t, l.noudp); !ok || b.Transport != "tcp" || b.RelayedBytes == 0 {
		t.Fatalf("the bridge's view of noudp: %+v (registered %v), want tcp with relayed bytes", b, ok)
	}
}

// cutFallsBackToRelay: cutting the direct path falls back to the relay.
func cutFallsBackToRelay(t *testing.T, l *natLab) {
	c := l.eim1.Talk(t, l.eim2, echoPort)
	l.eim1.WaitPath(t, l.eim2, Direct, 5*time.Second)
	l.sites["eim1"].NAT.BlockUDPTo(l.sites["eim2"].Public)
	// The connection lives on: within a few seconds its packets take
	// the relay.
	retryRoundTrip(t, c, "during the cut", 15*time.Second)
	l.eim1.WaitPath(t, l.eim2, RelayUDP, 10*time.Second)
	if err := testnet.RoundTrip(c, "over the relay", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	l.sites["eim1"].NAT.UnblockUDPTo(l.sites["eim2"].Public)
	l.eim1.WaitPath(t, l.eim2, Direct, 10*time.Second)
	if err := testnet.RoundTrip(c, "direct again", 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// addressChangeKeepsSession: a node whose public address changes keeps
// its session.
func addressChangeKeepsSession(t *testing.T, l *natLab) {
	c := l.eim1.Talk(t, l.eim2, echoPort)
	l.eim1.WaitPath(t, l.eim2, Direct, 5*time.Second)
	// eim1's router gets a new public address (as after a DHCP
	// renewal) and forgets the old mappings with it.
	moved := netip.AddrFrom4([4]byte{203, 0, 113, 51})
	if err := l.sites["eim1"].NAT.SetPublicAddr(moved); err != nil {
		t.Fatal(err)
	}
	// Until the bridge learns the new address (at eim1's next keepalive,
	// up to 15 s away) neither the direct path nor the relay reaches
	// eim1; then the connection's next retransmission gets through, and
	// TCP's backoff may have put that up to another 13 s off. The netns
	// lab allows the same.
	retryRoundTrip(t, c, "after the move", 45*time.Second)
	// The bridge learns the new address at the next keepalive.
	testnet.WaitFor(t, 30*time.Second, "the bridge sees eim1's new address", func() bool {
		b, ok := l.br.BridgeNode(t, l.eim1)
		return ok && strings.HasPrefix(b.Endpoint, moved.String()+":")
	})
	l.eim1.WaitPath(t, l.eim2, Direct, 10*time.Second)
	if err := testnet.RoundTrip(c, "settled", 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// bridgeRestartHeals: a bridge restart heals.
func bridgeRestartHeals(t *testing.T, l *natLab) {
	c := l.sym1.Talk(t, l.sym2, echoPort)
	l.br.Restart(t)
	for _, n := range []*Node{l.sym1, l.sym2} {
		n.WaitBridge(t, "registered", "udp", 40*time.Second)
		// The nodes' own status still says registered until they
		// notice; the restarted bridge knowing them is the proof.
		testnet.WaitFor(t, 40*time.Second, "the restarted bridge knowing "+n.Name, func() bool {
			_, ok := l.br.BridgeNode(t, n)
			return ok
		})
	}
	retryRoundTrip(t, c, "after the restart", 30*time.Second)
	if l.br.Relayed(t, l.sym1) == 0 {
		t.Fatal("the connection healed, but not through the restarted bridge")
	}
}

// revokedCannotRegisterOrRelay: a revoked node can no longer register or
// relay.
func revokedCannotRegisterOrRelay(t *testing.T, l *natLab) {
	c := l.sym1.Talk(t, l.sym2, echoPort)
	resp, err := l.br.BridgeArea().BridgeRevoke(context.Background(), adminapi.BridgeRevokeRequest{PublicKey: l.sym2.Public().String()})
	if err != nil || resp.PublicKey != l.sym2.Public().String() || !resp.WasRegistered {
		t.Fatalf("revoke: %+v %v", resp, err)
	}
	if err := testnet.RoundTrip(c, "after the revoke", 3*time.Second); err == nil {
		t.Fatal("relayed traffic still flows to a revoked node")
	}
	l.sym2.WaitBridge(t, "refused", "", 40*time.Second)
	if b, ok := l.br.BridgeNode(t, l.sym2); ok {
		t.Fatalf("revoked node still listed: %+v", b)
	}
}
