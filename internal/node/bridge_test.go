package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

func bridgeDoc(b *testNode, token string) string {
	return fmt.Sprintf("[[bridges]]\nendpoint = %q\npublic_key = %q\ntoken = %q\n", b.endpoint(), b.key.Public(), token)
}

func bridgeAllowDoc(nodes ...*testNode) string {
	s := "[bridge]\nenable = true\ntcp = \"127.0.0.1:0\"\n"
	for _, n := range nodes {
		s += fmt.Sprintf("[[bridge.allow]]\npublic_key = %q\n", n.key.Public())
	}
	return s
}

func waitRegistered(t *testing.T, tn *testNode) {
	t.Helper()
	testnet.WaitFor(t, 5*time.Second, tn.name+" registered with its bridge", func() bool {
		st, err := tn.StatusArea().Status(context.Background())
		return err == nil && len(st.Bridges) > 0 && st.Bridges[0].State == "registered"
	})
}

func peerPath(t *testing.T, tn *testNode, addr string) string {
	t.Helper()
	peers, err := tn.StatusArea().Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		if p.Address == addr {
			return p.Path
		}
	}
	return ""
}

// bridged starts a bridge and alice, bob and mallory registered with it;
// bob serves tcp/7 and allows alice there, nobody else.
func bridged(t *testing.T) (br, alice, bob, mallory *testNode) {
	br, alice, bob, mallory = prepare(t, "bridge"), prepare(t, "alice"), prepare(t, "bob"), prepare(t, "mallory")
	br.start(t, bridgeAllowDoc(alice, bob, mallory))
	alice.start(t, bridgeDoc(br, ""))
	bob.start(t, bridgeDoc(br, "")+allowDoc(alice.key.Public().String(), "tcp", "7"))
	mallory.start(t, bridgeDoc(br, ""))
	for _, n := range []*testNode{alice, bob, mallory} {
		waitRegistered(t, n)
	}
	bob.echoServer(t, 7)
	return
}

// Nodes on one bridge reach each other by address alone; the receiver's
// policy still decides.
func TestReachByAddressThroughBridge(t *testing.T) {
	br, alice, bob, mallory := bridged(t)

	c, err := alice.dial(bob.Address(), 7, 5*time.Second)
	if err != nil {
		for _, n := range []*testNode{alice, bob, br} {
			st := n.bind.Stats()
			t.Logf("%s: relayedIn %d out %d control dropped %d unknown session %d inits admitted %d denied %d invalid %d limited %d", n.name, st.RelayedIn.Load(), st.RelayedOut.Load(), st.ControlDropped.Load(), st.UnknownSession.Load(), st.InitiationsAdmitted.Load(), st.InitiationsDenied.Load(), st.InitiationsInvalid.Load(), st.InitiationsLimited.Load())
		}
		t.Logf("server: %+v", br.server.Stats())
		t.Fatalf("alice -> bob by address alone: %v", err)
	}
	defer c.Close()
	if err := testnet.RoundTrip(c, "hello", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	// On loopback the probes get through at once: the path turns direct.
	testnet.WaitFor(t, 5*time.Second, "alice's path to bob direct", func() bool {
		return peerPath(t, alice, bob.Address().String()) == "direct"
	})
	if err := testnet.RoundTrip(c, "still", 3*time.Second); err != nil {
		t.Fatal(err)
	}

	// mallory is on the same bridge but bob's policy does not name her.
	if _, err := mallory.dial(bob.Address(), 7, 2*time.Second); err == nil {
		t.Fatal("mallory reached bob; his policy does not allow her")
	}
	// An address no member has: refused quickly, not left hanging.
	start := time.Now()
	_, err = alice.dial(newKey(t).Public().Address(), 7, 5*time.Second)
	if !errors.Is(err, ErrNoPeer) || time.Since(start) > 3*time.Second {
		t.Fatalf("dial to an unknown address: %v after %v", err, time.Since(start))
	}

	nodes, err := br.BridgeArea().BridgeNodes(context.Background())
	if err != nil || len(nodes) != 3 {
		t.Fatalf("bridge nodes: %v %+v", err, nodes)
	}
}

// A join token enrols a node's key; a revoked node cannot register again.
func TestBridgeTokenAndRevoke(t *testing.T) {
	br, alice := prepare(t, "bridge"), prepare(t, "alice")
	br.start(t, "[bridge]\nenable = true\n")
	tok, err := br.BridgeArea().CreateToken(context.Background(), adminapi.TokenRequest{Uses: 1, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	alice.start(t, bridgeDoc(br, tok.Token))
	waitRegistered(t, alice)

	resp, err := br.BridgeArea().BridgeRevoke(context.Background(), adminapi.BridgeRevokeRequest{PublicKey: alice.key.Public().String()})
	if err != nil || !resp.WasRegistered {
		t.Fatalf("revoke: %+v %v", resp, err)
	}
	testnet.WaitFor(t, 60*time.Second, "alice refused after the revoke", func() bool {
		st, err := alice.StatusArea().Status(context.Background())
		return err == nil && st.Bridges[0].State == "refused"
	})
	if nodes, _ := br.BridgeArea().BridgeNodes(context.Background()); len(nodes) != 0 {
		t.Fatalf("revoked node still registered: %+v", nodes)
	}
}

// Floods of registrations from unknown keys and of lookups from a member
// are rate-limited; the other members keep working.
func TestBridgeUnderFlood(t *testing.T) {
	br, alice, bob, mallory := bridged(t)

	brAddr := netip.MustParseAddrPort(br.endpoint())
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // registrations from ever new keys: each would cost the bridge an X25519
		defer wg.Done()
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Error(err)
			return
		}
		defer pc.Close()
		dst := net.UDPAddrFromAddrPort(brAddr)
		for {
			select {
			case <-stop:
				return
			default:
			}
			k := newKey(t)
			sk := wire.Precompute(k, br.key.Public())
			f, _ := wire.Seal(nil, k.Public(), &sk, &wire.Message{Kind: wire.KindRegister, Time: time.Now().UnixNano()})
			pc.WriteTo(f, dst)
		}
	}()
	go func() { // lookups from a registered member, from its own socket
		defer wg.Done()
		sk := wire.Precompute(mallory.key, br.key.Public())
		// In batches, so the flood outruns the per-node limit even when
		// the machine is loaded and this goroutine runs seldom.
		for seq := uint64(0); ; {
			select {
			case <-stop:
				return
			default:
			}
			batch := make([][]byte, 32)
			for i := range batch {
				seq++
				batch[i], _ = wire.Seal(nil, mallory.key.Public(), &sk, &wire.Message{Kind: wire.KindLookup, Time: time.Now().UnixNano(), Seq: seq, Address: bob.Address()})
			}
			mallory.bind.SendFrames(batch, brAddr)
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	// Both floods are being cut down before alice starts.
	testnet.WaitFor(t, 10*time.Second, "the bridge limiting both floods", func() bool {
		st := br.server.Stats()
		return st.LookupsLimited > 0 && st.StrangersLimited > 0
	})

	start := time.Now()
	c, err := alice.dial(bob.Address(), 7, 5*time.Second)
	if err != nil {
		t.Fatalf("alice -> bob during the flood: %v (bridge %+v)", err, br.server.Stats())
	}
	defer c.Close()
	if err := testnet.RoundTrip(c, "under flood", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("connected in %v during the flood; bridge: %+v", time.Since(start), br.server.Stats())
}

// A bridge with several addresses answers from the one routing picks
// (here 127.0.0.1 for nodes that joined it at 127.0.0.2): its nodes accept
// that address too, so relaying works from the first packet.
func TestBridgeAnsweringFromAnotherAddress(t *testing.T) {
	br, alice, bob := prepare(t, "bridge"), prepare(t, "alice"), prepare(t, "bob")
	br.start(t, bridgeAllowDoc(alice, bob))
	other := fmt.Sprintf("127.0.0.2:%d", br.ListenPort())
	doc := fmt.Sprintf("[[bridges]]\nendpoint = %q\npublic_key = %q\n", other, br.key.Public())
	alice.start(t, doc)
	bob.start(t, doc+allowDoc(alice.key.Public().String(), "tcp", "7"))
	waitRegistered(t, alice)
	waitRegistered(t, bob)
	bob.echoServer(t, 7)
	c, err := alice.dial(bob.Address(), 7, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := testnet.RoundTrip(c, "hello", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	// The handshake started through the relay, before the probes found
	// the direct path: the bridge's frames from 127.0.0.1 were taken as
	// relayed. (Which later messages were relayed depends on when the
	// direct path was proven.)
	if in := bob.bind.Stats().RelayedIn.Load() + alice.bind.Stats().RelayedIn.Load(); in == 0 {
		t.Fatal("nothing arrived through the relay")
	}
}

// The bridge client asks whether this node would talk to a key on the UDP
// receive goroutine, for every control frame from a sender that is not a
// bridge: it must not wait for Node.mu, which device changes hold (review
// of issue 9, finding 3). A probe handed over while Node.mu is held is
// handled at once.
func TestBridgeClientNeverWaitsForNodeLock(t *testing.T) {
	br, alice, peer := prepare(t, "bridge"), prepare(t, "alice"), newKey(t)
	br.start(t, bridgeAllowDoc(alice))
	alice.start(t, bridgeDoc(br, "")+allowDoc(peer.Public().String(), "tcp", "7"))
	waitRegistered(t, alice)
	shared := wire.Precompute(peer, alice.key.Public())
	probe, err := wire.Seal(nil, peer.Public(), &shared, &wire.Message{Kind: wire.KindProbe, Time: time.Now().UnixNano(), Seq: 1})
	if err != nil {
		t.Fatal(err)
	}
	alice.peers.Lock()
	done := make(chan struct{})
	go func() { // as the Bind's receive goroutine does
		defer close(done)
		alice.client.HandleFrames([][]byte{probe}, []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")})
	}()
	select {
	case <-done:
		alice.peers.Unlock()
	case <-time.After(2 * time.Second):
		alice.peers.Unlock()
		<-done
		t.Fatal("a control frame waited for Node.mu on the receive goroutine")
	}
}

// A forged control frame that claims a static peer's key, or a key a rule
// names (in the config or added later), costs the node no X25519: those
// shared keys are computed when the node starts or the rule is added, not
// when a frame claims them (review of issue 9, finding 3).
func TestBridgeForgedFramesClaimingKnownKeys(t *testing.T) {
	br, alice := prepare(t, "bridge"), prepare(t, "alice")
	static, named, added := newKey(t).Public(), newKey(t).Public(), newKey(t).Public()
	br.start(t, bridgeAllowDoc(alice))
	alice.start(t, bridgeDoc(br, "")+fmt.Sprintf("[[peers]]\npublic_key = %q\nendpoint = \"127.0.0.1:9\"\n", static)+
		allowDoc(named.String(), "tcp", "7"))
	waitRegistered(t, alice)
	if _, err := alice.PolicyArea().Allow(context.Background(), adminapi.AllowRequest{From: added.String(), Proto: "tcp", Ports: "8"}); err != nil {
		t.Fatal(err)
	}
	st := alice.client.Stats()
	testnet.WaitFor(t, 5*time.Second, "the shared keys with the bridge, the static peer and both named keys computed", func() bool {
		return st.X25519.Load() >= 4
	})
	x0 := st.X25519.Load()
	claims := []identity.PublicKey{static, named, added}
	const n = 300
	frames := make([][]byte, n)
	srcs := make([]netip.AddrPort, n)
	for i := range n {
		f := make([]byte, wire.ControlHeaderSize+64) // the box is garbage
		f[0], f[1] = wire.FrameControl, frameVersion(t)
		copy(f[4:], claims[i%len(claims)][:])
		frames[i] = f
		srcs[i] = netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i), 15: 1}), 4610)
	}
	alice.client.HandleFrames(frames, srcs)
	if x := st.X25519.Load() - x0; x != 0 {
		t.Fatalf("%d forged frames claiming known keys cost %d X25519", n, x)
	}
}

// frameVersion is the control frame version byte of this build.
func frameVersion(t *testing.T) byte {
	t.Helper()
	k := newKey(t)
	shared := wire.Precompute(k, k.Public())
	f, err := wire.Seal(nil, k.Public(), &shared, &wire.Message{Kind: wire.KindProbe, Time: 1})
	if err != nil {
		t.Fatal(err)
	}
	return f[1]
}
