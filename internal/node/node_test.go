package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/clock"
	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/packet"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testNode is an in-process userspace node with its own directory.
type testNode struct {
	*Node
	name string
	dir  string
	key  identity.PrivateKey
	doc  string
	ipv4 string // tun.ipv4, if set before start
	// ctMax sizes the connection table (Options.ConntrackMax), if set before start.
	ctMax int
	// clock is the node's clock (Options.Clock), if set before start.
	clock clock.Clock
	logs  logLines
}

// logLines keeps what a test node logged.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, s)
}

// find returns the first logged line holding every one of parts.
func (l *logLines) find(parts ...string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
next:
	for _, s := range l.lines {
		for _, p := range parts {
			if !strings.Contains(s, p) {
				continue next
			}
		}
		return s, true
	}
	return "", false
}

func newKey(t testing.TB) identity.PrivateKey {
	t.Helper()
	k, err := identity.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// prepare writes a node's key and returns it, not started.
func prepare(t *testing.T, name string) *testNode {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	os.MkdirAll(dir, 0o700)
	k := newKey(t)
	if err := os.WriteFile(filepath.Join(dir, "node.key"), []byte(k.Base64()), 0o600); err != nil {
		t.Fatal(err)
	}
	return &testNode{name: name, dir: dir, key: k}
}

// start (re)starts the node with extra config appended to the userspace base.
func (tn *testNode) start(t *testing.T, extra string) {
	t.Helper()
	tun := ""
	if tn.ipv4 != "" {
		tun = fmt.Sprintf("ipv4 = %q\n", tn.ipv4)
	}
	tn.doc = "key_file = \"node.key\"\n[tun]\nmode = \"userspace\"\n" + tun + "[listen]\nudp = \"0.0.0.0:0\"\n[admin]\nsocket = \"admin.sock\"\n" + extra
	cfg, err := config.Parse([]byte(tn.doc), tn.name+".toml", tn.dir)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t, tn.name, &tn.logs}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	n, err := New(cfg, Options{Logger: log, Version: "test", ConntrackMax: tn.ctMax, Clock: tn.clock})
	if err != nil {
		t.Fatal(err)
	}
	tn.Node = n
	t.Cleanup(func() { n.Close() })
}

type testWriter struct {
	t    *testing.T
	name string
	logs *logLines
}

func (w testWriter) Write(p []byte) (int, error) {
	w.logs.add(string(p))
	w.t.Logf("%s: %s", w.name, strings.TrimSpace(string(p)))
	return len(p), nil
}

func (tn *testNode) endpoint() string {
	return fmt.Sprintf("127.0.0.1:%d", tn.ListenPort())
}

func peerDoc(to *testNode) string {
	return fmt.Sprintf("[[peers]]\npublic_key = %q\nendpoint = %q\nname = %q\n", to.key.Public(), to.endpoint(), to.name)
}

func allowDoc(from, proto, ports string) string {
	return fmt.Sprintf("[[policy.allow]]\nfrom = %q\nproto = %q\nports = %q\n", from, proto, ports)
}

// echoServer accepts TCP connections on the node's address and echoes lines.
func (tn *testNode) echoServer(t *testing.T, port uint16) {
	t.Helper()
	ln, err := tn.Stack().ListenTCP(netip.AddrPortFrom(tn.Address(), port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go testnet.Echo(ln)
}

func (tn *testNode) dial(to netip.Addr, port uint16, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return tn.DialContext(ctx, "tcp6", netip.AddrPortFrom(to, port).String())
}

// trio starts alice (allowing bob to tcp/7), and bob and mallory who both
// have alice as a static peer.
func trio(t *testing.T) (alice, bob, mallory *testNode) {
	alice, bob, mallory = prepare(t, "alice"), prepare(t, "bob"), prepare(t, "mallory")
	alice.start(t, allowDoc(bob.key.Public().String(), "tcp", "7"))
	bob.start(t, peerDoc(alice))
	mallory.start(t, peerDoc(alice))
	alice.echoServer(t, 7)
	alice.echoServer(t, 8)
	return
}

func TestAllowedAndDeniedFlows(t *testing.T) {
	alice, bob, mallory := trio(t)

	c, err := bob.dial(alice.Address(), 7, 5*time.Second)
	if err != nil {
		t.Fatalf("bob -> alice:7 (allowed): %v", err)
	}
	defer c.Close()
	if err := testnet.RoundTrip(c, "hello", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	// The same peer on a port no rule names.
	if _, err := bob.dial(alice.Address(), 8, time.Second); err == nil {
		t.Fatal("bob -> alice:8 connected; no rule allows it")
	}
	// A key no rule names: not even the handshake is answered.
	if _, err := mallory.dial(alice.Address(), 7, time.Second); err == nil {
		t.Fatal("mallory -> alice:7 connected")
	}
	if alice.bind.Stats().InitiationsDenied.Load() == 0 {
		t.Fatal("mallory's handshake not counted as denied")
	}
	// The other direction: bob has no rules, so alice cannot connect to him.
	bob.echoServer(t, 7)
	if _, err := alice.dial(bob.Address(), 7, time.Second); err == nil {
		t.Fatal("alice -> bob:7 connected; bob allows nobody")
	}
	if bob.filter.Denied(alice.Address()) == 0 {
		t.Fatal("bob did not count alice's denied packets")
	}
	// An address nobody knows: the dialer is told at once, not left hanging.
	start := time.Now()
	unknown := newKey(t).Public().Address()
	_, err = bob.dial(unknown, 7, 5*time.Second)
	if !errors.Is(err, ErrNoPeer) || time.Since(start) > time.Second {
		t.Fatalf("dial to an unknown address: %v after %v", err, time.Since(start))
	}
	// A program using the stack directly gets ICMP unreachable at once.
	before := bob.wrapper.Stats().Unreachable.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	bob.Stack().DialContext(ctx, "tcp6", netip.AddrPortFrom(unknown, 7).String())
	cancel()
	if bob.wrapper.Stats().Unreachable.Load() == before {
		t.Fatal("no ICMP unreachable for a packet to an unknown address")
	}
}

func TestLiveRevokeStopsEstablishedConnection(t *testing.T) {
	alice, bob, _ := trio(t)
	c, err := bob.dial(alice.Address(), 7, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := testnet.RoundTrip(c, "before", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	resp, err := alice.PolicyArea().Revoke(context.Background(), adminapi.RevokeRequest{From: bob.Address().String()})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Removed) != 1 || len(resp.PeersCut) != 1 || resp.PeersCut[0] != bob.key.Public().String() {
		t.Fatalf("revoke: %+v", resp)
	}
	if err := testnet.RoundTrip(c, "after", 2*time.Second); err == nil {
		t.Fatal("the connection still carries data after the revoke")
	}
	if _, err := bob.dial(alice.Address(), 7, time.Second); err == nil {
		t.Fatal("bob can open a new connection after the revoke")
	}
	// Revoking what is not there is an error, not a silent success.
	if _, err := alice.PolicyArea().Revoke(context.Background(), adminapi.RevokeRequest{From: bob.Address().String()}); err == nil {
		t.Fatal("second revoke succeeded")
	}
}

func TestPolicySurvivesRestart(t *testing.T) {
	alice, bob := prepare(t, "alice"), prepare(t, "bob")
	alice.start(t, "")
	bob.start(t, peerDoc(alice))
	alice.echoServer(t, 7)
	if _, err := bob.dial(alice.Address(), 7, time.Second); err == nil {
		t.Fatal("connected before any rule")
	}
	if _, err := alice.PolicyArea().Allow(context.Background(), adminapi.AllowRequest{From: bob.key.Public().String(), Proto: "tcp", Ports: "7"}); err != nil {
		t.Fatal(err)
	}
	// bob's first initiation went unanswered: WireGuard retries the
	// handshake after 5 s (REKEY_TIMEOUT), and alice answers that one.
	c, err := bob.dial(alice.Address(), 7, 10*time.Second)
	if err != nil {
		t.Fatalf("after allow: %v", err)
	}
	c.Close()

	// Restart alice on the same port, from the same config.
	port := alice.ListenPort()
	alice.Close()
	alice.start(t, "")
	_ = port
	rules, _ := alice.PolicyArea().Policy(context.Background())
	if len(rules) != 1 || rules[0].Source != "api" || rules[0].Ports != "7" {
		t.Fatalf("rules after restart: %+v", rules)
	}
}

func TestPing(t *testing.T) {
	alice, bob := prepare(t, "alice"), prepare(t, "bob")
	alice.start(t, "")
	bob.start(t, peerDoc(alice)+allowDoc(alice.key.Public().String(), "icmp", ""))
	ctx := context.Background()
	// alice allows nothing yet: bob's handshake is not even answered.
	r, err := bob.StatusArea().Ping(ctx, adminapi.PingRequest{Address: alice.Address().String(), TimeoutMs: 1000})
	if err != nil || r.Error != "timeout" {
		t.Fatalf("bob pinging alice (alice allows no icmp): %+v %v", r, err)
	}
	if _, err := alice.PolicyArea().Allow(ctx, adminapi.AllowRequest{From: bob.Address().String(), Proto: "icmp"}); err != nil {
		t.Fatal(err)
	}
	// WireGuard retries the handshake after 5 s; now alice answers it.
	r, err = bob.StatusArea().Ping(ctx, adminapi.PingRequest{Address: alice.Address().String(), TimeoutMs: 10000})
	if err != nil || r.Error != "" || r.RTTMs <= 0 {
		t.Fatalf("bob pinging alice: %+v %v", r, err)
	}
	r, err = alice.StatusArea().Ping(ctx, adminapi.PingRequest{Address: bob.Address().String()})
	if err != nil || r.Error != "" {
		t.Fatalf("alice pinging bob over the session bob opened: %+v %v", r, err)
	}
	r, _ = bob.StatusArea().Ping(ctx, adminapi.PingRequest{Address: newKey(t).Public().Address().String()})
	if !strings.Contains(r.Error, "unreachable") {
		t.Fatalf("ping of an unknown address: %+v", r)
	}
	for _, bad := range []adminapi.PingRequest{{Address: "10.0.0.1"}, {Address: "nope"}, {Address: bob.Address().String()}, {Address: alice.Address().String(), Size: 5000}} {
		if _, err := bob.StatusArea().Ping(ctx, bad); err == nil {
			t.Errorf("ping %+v accepted", bad)
		}
	}
}

func TestStaticPeerLazyAndEvicted(t *testing.T) {
	alice, bob := prepare(t, "alice"), prepare(t, "bob")
	alice.start(t, allowDoc(bob.key.Public().String(), "tcp", "7"))
	bob.start(t, peerDoc(alice))
	alice.echoServer(t, 7)
	if bob.engine.HasPeer(alice.key.Public()) {
		t.Fatal("static peer in the device before any traffic")
	}
	c, err := bob.dial(alice.Address(), 7, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if !bob.engine.HasPeer(alice.key.Public()) {
		t.Fatal("static peer not activated by traffic")
	}
	// Much later, with no handshake since: both sides drop the idle peer.
	// (The closing connection's last segments may bring it back for a
	// moment: traffic re-activates a static peer, so evict until quiet.)
	later := time.Now().Add(idleTimeout + time.Minute)
	testnet.WaitFor(t, 5*time.Second, "idle peers evicted", func() bool {
		bob.evict(later)
		alice.evict(later)
		return !bob.engine.HasPeer(alice.key.Public()) && !alice.engine.HasPeer(bob.key.Public())
	})
	peers, _ := alice.StatusArea().Peers(context.Background())
	if len(peers) != 0 {
		t.Fatalf("alice still lists the evicted dynamic peer: %+v", peers)
	}
	// And traffic brings them back. WireGuard's handshake timestamps have
	// a granularity of 2^24 ns (wireguard-go whitens them): an initiation
	// within 17 ms of the last one alice answered is not newer, and alice
	// refuses it as a possible replay (her replay store outlives the
	// evicted peer, on purpose); WireGuard retries after 5 s.
	c, err = bob.dial(alice.Address(), 7, 10*time.Second)
	if err != nil {
		t.Fatalf("after eviction: %v", err)
	}
	defer c.Close()
	if err := testnet.RoundTrip(c, "again", 3*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestEvictionOnTheClock: the node's eviction runs from its clock: idle
// peers leave the device when the clock has moved past the idle timeout,
// with no real waiting and no call into the node but the clock's.
func TestEvictionOnTheClock(t *testing.T) {
	m := clock.NewManual(time.Now())
	alice, bob := prepare(t, "alice"), prepare(t, "bob")
	alice.clock, bob.clock = m, m
	alice.start(t, allowDoc(bob.key.Public().String(), "tcp", "7"))
	bob.start(t, peerDoc(alice))
	alice.echoServer(t, 7)
	c, err := bob.dial(alice.Address(), 7, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := testnet.RoundTrip(c, "hello", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if !bob.engine.HasPeer(alice.key.Public()) || !alice.engine.HasPeer(bob.key.Public()) {
		t.Fatal("peers not in the devices after traffic")
	}
	// Both nodes' eviction tickers are armed on m (among other timers).
	// Past the idle timeout, tick by tick, until both are gone (the
	// closing connection's last segments may bring the static peer back
	// for a moment, as in TestStaticPeerLazyAndEvicted).
	m.Advance(idleTimeout)
	testnet.WaitFor(t, 10*time.Second, "idle peers evicted on the clock", func() bool {
		m.Advance(evictInterval)
		return !bob.engine.HasPeer(alice.key.Public()) && !alice.engine.HasPeer(bob.key.Public())
	})
}

func TestWildcardPeerGetsNoSitePrefix(t *testing.T) {
	alice, bob, carol := prepare(t, "alice"), prepare(t, "bob"), prepare(t, "carol")
	alice.start(t, allowDoc("*", "tcp", "7")+allowDoc(carol.key.Public().String(), "tcp", "7"))
	bob.start(t, peerDoc(alice))
	carol.start(t, peerDoc(alice))
	alice.echoServer(t, 7)
	for _, tn := range []*testNode{bob, carol} {
		c, err := tn.dial(alice.Address(), 7, 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", tn.name, err)
		}
		c.Close()
	}
	peers, _ := alice.StatusArea().Peers(context.Background())
	sites := map[string]bool{}
	for _, p := range peers {
		sites[p.Address] = p.SitePrefix != nil
	}
	if sites[bob.Address().String()] || !sites[carol.Address().String()] {
		t.Fatalf("site prefixes: %v (bob is admitted only by *, carol is named)", sites)
	}
}

func TestAdminAPIOverSocket(t *testing.T) {
	alice, bob := prepare(t, "alice"), prepare(t, "bob")
	alice.start(t, allowDoc(bob.key.Public().String(), "tcp", "7"))
	bob.start(t, peerDoc(alice))
	alice.echoServer(t, 7)
	sock := filepath.Join(alice.dir, "admin.sock")
	info, err := os.Stat(sock)
	if err != nil || info.Mode().Perm() != 0o600 || info.Mode()&os.ModeSocket == 0 {
		t.Fatalf("admin socket: %v %v", info.Mode(), err)
	}
	cl := adminapi.NewClient(sock)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	events := make(chan adminapi.Event, 64)
	connected := make(chan struct{})
	go cl.Events(ctx, func() { close(connected) }, func(ev adminapi.Event) { events <- ev })
	<-connected

	c, err := bob.dial(alice.Address(), 7, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := cl.Allow(ctx, adminapi.AllowRequest{From: "*", Proto: "icmp"}); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{adminapi.EventPeerAdded: false, adminapi.EventPolicyAllow: false, adminapi.EventHandshake: false, adminapi.EventPeerUp: false}
	deadline := time.After(8 * time.Second)
	for missing := len(want); missing > 0; {
		select {
		case ev := <-events:
			if done, ok := want[ev.Type]; ok && !done {
				want[ev.Type] = true
				missing--
			}
		case <-deadline:
			t.Fatalf("events seen: %v", want)
		}
	}
	st, err := cl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PublicKey != alice.key.Public().String() || st.Address != alice.Address().String() || st.SitePrefix != alice.key.Public().SitePrefix().String() || st.PeerCount != 1 {
		t.Fatalf("status: %+v", st)
	}
	peers, err := cl.Peers(ctx)
	if err != nil || len(peers) != 1 {
		t.Fatal(peers, err)
	}
	p := peers[0]
	if p.Path != "direct" || p.Endpoint == nil || p.LastHandshake == nil || p.RxBytes == 0 || p.TxBytes == 0 {
		t.Fatalf("peer: %+v", p)
	}
	if _, err := time.Parse(time.RFC3339, *p.LastHandshake); err != nil {
		t.Fatalf("last_handshake %q: %v", *p.LastHandshake, err)
	}
	// Bad requests are 400s with a message.
	_, err = cl.Allow(ctx, adminapi.AllowRequest{From: "nobody"})
	if apiErr, ok := err.(*adminapi.APIError); !ok || apiErr.Code != 400 || !strings.Contains(apiErr.Message, "nobody") {
		t.Fatalf("bad allow: %v", err)
	}
	metrics, err := cl.Metrics(ctx)
	if err != nil || !strings.Contains(metrics, "tomoe_peer_receive_bytes_total") || !strings.Contains(metrics, `tomoe_info{address="`+alice.Address().String()) {
		t.Fatalf("metrics: %v\n%.400s", err, metrics)
	}
}

// A peer that sends packets with another node's source address: stock
// WireGuard with no tomoe filter on the sending side, so only the receiver
// can stop it. The forged datagram never reaches alice's programs; the
// genuine one does.
func TestForgedSourceFromPeerNeverArrives(t *testing.T) {
	alice, bob := prepare(t, "alice"), prepare(t, "bob")
	evilKey := newKey(t)
	alice.start(t, allowDoc("*", "udp", "9"))
	bob.start(t, peerDoc(alice))
	// bob is a peer of alice too, so his address is someone else's in alice's device.
	if r, err := bob.StatusArea().Ping(context.Background(), adminapi.PingRequest{Address: alice.Address().String(), TimeoutMs: 500}); err != nil {
		t.Fatal(r, err)
	}
	testnet.WaitFor(t, 5*time.Second, "bob's session with alice", func() bool { return alice.engine.HasPeer(bob.key.Public()) })

	pc, err := alice.Stack().ListenUDP(netip.AddrPortFrom(alice.Address(), 9))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	got := make(chan string, 8)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			got <- from.String() + " " + string(buf[:n])
		}
	}()

	evil := stockPeer(t, evilKey, alice)
	evilAddr := evilKey.Public().Address()
	evil.Outbound <- packet.UDP(evilAddr, alice.Address(), 5000, 9, []byte("genuine"))
	select {
	case s := <-got:
		if !strings.Contains(s, "genuine") || !strings.Contains(s, evilAddr.String()) {
			t.Fatalf("received %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the genuine datagram from the stock WireGuard peer did not arrive")
	}
	for i := 0; i < 5; i++ {
		evil.Outbound <- packet.UDP(bob.Address(), alice.Address(), 5000, 9, []byte("forged as bob"))
		evil.Outbound <- packet.UDP(newKey(t).Public().Address(), alice.Address(), 5000, 9, []byte("forged as a stranger"))
	}
	select {
	case s := <-got:
		t.Fatalf("a forged datagram arrived: %q", s)
	case <-time.After(time.Second):
	}
}
