package client

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tomoe-net/tomoe/internal/bridge/bridgetest"
	"github.com/tomoe-net/tomoe/internal/bridge/keycache"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/testnet"
	"github.com/tomoe-net/tomoe/internal/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testKey = bridgetest.Key

// waitCond waits for cond, failing t after 5 s.
func waitCond(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testnet.WaitFor(t, 5*time.Second, what, cond)
}

// fakeBridge answers registrations, and lookups with answer(addr).
type fakeBridge struct {
	key  identity.PrivateKey
	pc   net.PacketConn
	keys *keycache.Cache
	mute atomic.Bool // Registers are noted but go unanswered

	mu      sync.Mutex
	node    identity.PublicKey // the last node that registered
	nodeAt  net.Addr           // where from
	lastReg int64              // the Time of its last Register
}

// tell seals m to the last node that registered and sends it there.
func (f *fakeBridge) tell(t *testing.T, m wire.Message) {
	t.Helper()
	f.sendRaw(t, f.seal(t, m))
}

// seal seals m to the last node that registered.
func (f *fakeBridge) seal(t *testing.T, m wire.Message) []byte {
	t.Helper()
	f.mu.Lock()
	to := f.node
	f.mu.Unlock()
	frame, err := f.keys.Seal(to, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	return frame
}

// sendRaw sends frame to the last node that registered.
func (f *fakeBridge) sendRaw(t *testing.T, frame []byte) {
	t.Helper()
	f.mu.Lock()
	at := f.nodeAt
	f.mu.Unlock()
	if _, err := f.pc.WriteTo(frame, at); err != nil {
		t.Fatal(err)
	}
}

func (f *fakeBridge) lastRegister() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastReg
}

func newFakeBridge(t *testing.T, answer func(wire.Message) wire.Message) *fakeBridge {
	t.Helper()
	k := testKey(t)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeBridge{key: k, pc: pc, keys: keycache.New(k, 16, nil)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			src := from.(*net.UDPAddr).AddrPort()
			sender, m, err := openAny(f.keys, buf[:n])
			if err != nil {
				continue
			}
			var reply wire.Message
			switch m.Kind {
			case wire.KindRegister:
				f.mu.Lock()
				f.node, f.nodeAt, f.lastReg = sender, from, m.Time
				f.mu.Unlock()
				if f.mute.Load() {
					continue
				}
				reply = wire.Message{Kind: wire.KindRegistered, Echo: uint64(m.Time), ID: 1, Interval: 15, Endpoints: []netip.AddrPort{src}}
			case wire.KindLookup:
				reply = answer(m)
			default:
				continue
			}
			frame, err := f.keys.Seal(sender, nil, reply)
			if err == nil {
				pc.WriteTo(frame, from)
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return f
}

// openAny opens a control frame from any sender, learning its key: what
// a test's bridge may spend.
func openAny(keys *keycache.Cache, frame []byte) (identity.PublicKey, wire.Message, error) {
	from, err := wire.Sender(frame)
	if err != nil {
		return from, wire.Message{}, err
	}
	k := keys.Cached(from)
	if k == nil {
		k = keys.Compute(from)
		keys.Keep(from, k)
	}
	m, err := wire.Open(frame, k)
	return from, m, err
}

func (f *fakeBridge) config() BridgeConfig {
	return BridgeConfig{Endpoint: f.pc.LocalAddr().String(), Key: f.key.Public()}
}

func startClient(t *testing.T, bridges ...BridgeConfig) *Client {
	t.Helper()
	return startClientWants(t, nil, bridges...)
}

// startClientWants starts a client that wants to talk to the keys wants
// reports (nil: none) and waits until every bridge registered it.
func startClientWants(t *testing.T, wants func(identity.PublicKey) bool, bridges ...BridgeConfig) *Client {
	t.Helper()
	bind, _ := bridgetest.OpenBind(t)
	k := testKey(t)
	bind.SetPrivateKey(k)
	c := New(Config{Key: k, Bridges: bridges, Bind: bind, Wants: wants})
	bind.SetFrameHandler(c)
	c.Start()
	t.Cleanup(c.Close)
	waitCond(t, "registered with every bridge", func() bool { return c.registeredCount() == len(bridges) })
	return c
}

// A bridge that answers a lookup with a key that does not hash to the
// address is caught: the answer is counted, logged and never used.
func TestLookupRejectsWrongKey(t *testing.T) {
	liar := testKey(t).Public()
	fb := newFakeBridge(t, func(m wire.Message) wire.Message {
		return wire.Message{Kind: wire.KindLookupReply, Seq: m.Seq, Address: m.Address, Found: true, Key: liar, ID: 9}
	})
	c := startClient(t, fb.config())
	target := testKey(t).Public().Address()
	_, err := c.Lookup(context.Background(), target)
	if err == nil {
		t.Fatal("lookup accepted a key that does not own the address")
	}
	if c.Stats().WrongAnswers.Load() == 0 {
		t.Fatal("wrong answer not counted")
	}
}

// An honest answer is used; "not found" from every bridge ends the lookup
// at once rather than at the timeout.
func TestLookupFoundAndNotFound(t *testing.T) {
	owner := testKey(t).Public()
	fb := newFakeBridge(t, func(m wire.Message) wire.Message {
		if m.Address == owner.Address() {
			return wire.Message{Kind: wire.KindLookupReply, Seq: m.Seq, Address: m.Address, Found: true, Key: owner, ID: 5,
				Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:4610")}}
		}
		return wire.Message{Kind: wire.KindLookupReply, Seq: m.Seq, Address: m.Address}
	})
	c := startClient(t, fb.config())
	f, err := c.Lookup(context.Background(), owner.Address())
	if err != nil {
		t.Fatal(err)
	}
	if f.Key != owner || f.RelayID != 5 || f.Relay == nil || len(f.Endpoints) != 1 {
		t.Fatalf("found %+v", f)
	}
	start := time.Now()
	_, err = c.Lookup(context.Background(), testKey(t).Public().Address())
	if !errors.Is(err, ErrNotFound) || time.Since(start) > time.Second {
		t.Fatalf("not found: %v after %v", err, time.Since(start))
	}
}

// A bridge that never answers over UDP is tried over TCP; a bridge that
// answers nothing at all is reported unreachable, never registered.
func TestRegisterFallsBackToTCPThenGivesUp(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan struct{}, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			c.Close()
		}
	}()
	defer ln.Close()
	bind, _ := bridgetest.OpenBind(t)
	k := testKey(t)
	c := New(Config{Key: k, Bind: bind, Bridges: []BridgeConfig{{Endpoint: ln.Addr().String(), Key: testKey(t).Public()}}})
	bind.SetFrameHandler(c)
	c.Start()
	defer c.Close()
	select {
	case <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("no TCP attempt after UDP went unanswered")
	}
	if st := c.Status()[0]; st.State == "registered" {
		t.Fatalf("registered with a bridge that never answered: %+v", st)
	}
}

// A bridge's endpoint name is looked up with the resolver the node gives
// the client (in kernel mode, one whose queries carry the underlay mark,
// routes.Resolver), not the system's.
func TestBridgeNameUsesGivenResolver(t *testing.T) {
	fb := newFakeBridge(t, func(m wire.Message) wire.Message {
		return wire.Message{Kind: wire.KindLookupReply, Seq: m.Seq, Address: m.Address}
	})
	dnsPC, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dns := testnet.ServeDNS(t, dnsPC, map[string]netip.Addr{"bridge.tomoe.test.": netip.MustParseAddr("127.0.0.1")})
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", dnsPC.LocalAddr().String())
	}}
	_, port, _ := net.SplitHostPort(fb.pc.LocalAddr().String())
	bind, _ := bridgetest.OpenBind(t)
	k := testKey(t)
	bind.SetPrivateKey(k)
	c := New(Config{Key: k, Bind: bind, Resolver: resolver,
		Bridges: []BridgeConfig{{Endpoint: net.JoinHostPort("bridge.tomoe.test", port), Key: fb.key.Public()}}})
	bind.SetFrameHandler(c)
	c.Start()
	t.Cleanup(c.Close)
	testnet.WaitFor(t, 5*time.Second, "registration with the bridge found by name", func() bool { return c.registeredCount() == 1 })
	if len(dns.Sources()) == 0 {
		t.Fatal("registered without asking the given resolver")
	}
}

// A node acts only on answers to its own recent Registers: not on a
// replayed answer, and not on the bridge's refusal of someone else's
// replay of an old Register of its own (the bridge refuses those for the
// clock, to whoever sent it, which may be this node's address). A
// refusal of its newest Register (a revocation) counts.
func TestClientTakesOnlyAnswersToItsRegisters(t *testing.T) {
	fb := newFakeBridge(t, func(m wire.Message) wire.Message {
		return wire.Message{Kind: wire.KindLookupReply, Seq: m.Seq, Address: m.Address}
	})
	c := startClient(t, fb.config())
	stillRegistered := func(what string) {
		t.Helper()
		// A lookup answered after the frame shows the frame was handled.
		c.Lookup(context.Background(), testKey(t).Public().Address())
		if st := c.Status()[0]; st.State != "registered" || st.Error != "" || st.Observed == "192.0.2.9:9" {
			t.Fatalf("after %s: %+v", what, st)
		}
	}
	old := fb.lastRegister() - int64(time.Hour)
	fb.tell(t, wire.Message{Kind: wire.KindRefused, Echo: uint64(old), Text: "clock: this node's clock is 1h0m0s behind the bridge's"})
	stillRegistered("a refusal of a Register it did not send")
	fb.tell(t, wire.Message{Kind: wire.KindRefused, Text: "revoked"})
	stillRegistered("a refusal that answers nothing")
	fb.tell(t, wire.Message{Kind: wire.KindRegistered, Echo: uint64(fb.lastRegister()), ID: 1, Interval: 15, Endpoints: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.9:9")}})
	stillRegistered("a second answer to its last Register")

	fb.tell(t, wire.Message{Kind: wire.KindRefused, Echo: uint64(fb.lastRegister()), Text: "revoked"})
	waitCond(t, "the refusal of its newest Register taken", func() bool { return c.Status()[0].State == "refused" })
}

// FuzzClientFrames: whatever a node's bridge or a peer it wants to talk
// to seals (the fuzzer writes the plaintext), and any frame at all, over
// UDP or the bridge's TCP connection, never panics the node's client.
func FuzzClientFrames(f *testing.F) {
	node := identity.PrivateKeyFromBytes([32]byte{5})
	bridgeKey := identity.PrivateKeyFromBytes([32]byte{9})
	peer := identity.PrivateKeyFromBytes([32]byte{7})
	now := time.Now().UnixNano()
	msgs := bridgetest.SampleMessages()
	msgs = append(msgs,
		wire.Message{Kind: wire.KindIntroduce, Time: now, Key: peer.Public(), ID: 3, Endpoints: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:4610")}},
		wire.Message{Kind: wire.KindProbe, Time: now, Seq: 1},
		wire.Message{Kind: wire.KindProbeAck, Time: now, Echo: 1, Seq: 2},
		wire.Message{Kind: wire.KindRefused, Time: now, Echo: uint64(now), Text: "clock"},
		wire.Message{Kind: wire.KindChallenge, Time: now, Echo: uint64(now), Seq: 3},
	)
	for _, m := range msgs {
		plain, err := m.AppendBinary(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(byte(0), plain)
		f.Add(byte(1), plain)
	}
	f.Add(byte(2), []byte{wire.FrameControl, 1, 0, 0}) // a version 1 header
	f.Add(byte(2), bridgetest.RelayFrame(1, "x"))
	f.Fuzz(func(t *testing.T, who byte, b []byte) {
		c := New(Config{Key: node, Bind: transport.NewBind(nil),
			Bridges: []BridgeConfig{{Endpoint: "127.0.0.1:9", Key: bridgeKey.Public()}},
			Wants:   func(identity.PublicKey) bool { return true }})
		defer c.Close()
		frame := b
		switch who % 3 {
		case 0:
			frame = bridgetest.SealPlain(bridgeKey, node.Public(), b)
		case 1:
			frame = bridgetest.SealPlain(peer, node.Public(), b)
		}
		c.HandleFrames([][]byte{frame, frame}, []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9"), netip.MustParseAddrPort("192.0.2.1:1")})
		c.handleFrame(frame, netip.AddrPort{}, c.bridges[0])
	})
}

// The TCP fallback dials with the function the node gives (Config.DialTCP:
// an in-memory network's, in tests), not with the host's sockets, and
// bounds the dial with a deadline.
func TestTCPFallbackUsesGivenDial(t *testing.T) {
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0") // a bridge that never answers over UDP
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	type call struct {
		addr        string
		hasDeadline bool
	}
	calls := make(chan call, 8)
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, ok := ctx.Deadline()
		calls <- call{network + " " + addr, ok}
		a, b := net.Pipe()
		b.Close() // the "bridge" hangs up: the client goes back to UDP
		return a, nil
	}
	bind, _ := bridgetest.OpenBind(t)
	k := testKey(t)
	c := New(Config{Key: k, Bind: bind, DialTCP: dial,
		Bridges: []BridgeConfig{{Endpoint: silent.LocalAddr().String(), Key: testKey(t).Public()}}})
	bind.SetFrameHandler(c)
	c.Start()
	defer c.Close()
	select {
	case got := <-calls:
		if want := "tcp " + silent.LocalAddr().String(); got.addr != want || !got.hasDeadline {
			t.Fatalf("dialled %q (deadline %v), want %q with a deadline", got.addr, got.hasDeadline, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the given dial function was not used after UDP went unanswered")
	}
}
