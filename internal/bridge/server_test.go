package bridge

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tomoe-net/tomoe/internal/bridge/admission"
	"github.com/tomoe-net/tomoe/internal/bridge/bridgetest"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	testKey    = bridgetest.Key
	relayFrame = bridgetest.RelayFrame
)

// testClock is a clock that moves only when told to.
type testClock struct{ ns atomic.Int64 }

func newTestClock() *testClock {
	c := new(testClock)
	c.ns.Store(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *testClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *testClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// udpSender is the bridge's own UDP socket; it counts SendFrames calls,
// and shows tap (if set) every frame it sends.
type udpSender struct {
	pc    *net.UDPConn
	calls atomic.Int64
	tap   atomic.Pointer[func(frame []byte)]
}

func (u *udpSender) SendFrames(frames [][]byte, dst netip.AddrPort) error {
	u.calls.Add(1)
	for _, f := range frames {
		if tap := u.tap.Load(); tap != nil {
			(*tap)(f)
		}
		if _, err := u.pc.WriteToUDPAddrPort(f, dst); err != nil {
			return err
		}
	}
	return nil
}

// discardSender drops what it is given.
type discardSender struct{ frames atomic.Int64 }

func (d *discardSender) SendFrames(frames [][]byte, dst netip.AddrPort) error {
	d.frames.Add(int64(len(frames)))
	return nil
}

// srvHarness is a bridge on a real loopback UDP socket whose received
// frames go to HandleFrames, as a node's Bind would deliver them. Its
// clock stands still unless a test moves it.
type srvHarness struct {
	t      *testing.T
	key    identity.PrivateKey
	s      *Server
	udp    *udpSender
	clk    *testClock
	stamps atomic.Int64 // the newest Time a node of this harness stamped
}

func newSrvHarness(t *testing.T, cfg ServerConfig) *srvHarness {
	t.Helper()
	if cfg.Key.IsZero() {
		cfg.Key = testKey(t)
	}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	h := &srvHarness{t: t, key: cfg.Key, udp: &udpSender{pc: pc}, clk: newTestClock()}
	cfg.Sender = h.udp
	s, err := NewServer(cfg)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	s.now = h.clk.Now
	s.firstTimeout = time.Second
	h.s = s
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, src, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			s.HandleFrames([][]byte{buf[:n]}, []netip.AddrPort{src})
		}
	}()
	t.Cleanup(func() {
		s.Close()
		pc.Close()
		<-done
	})
	return h
}

func (h *srvHarness) addr() netip.AddrPort { return h.udp.pc.LocalAddr().(*net.UDPAddr).AddrPort() }

var loopbackHosts atomic.Uint32

// nextLoopback gives each test node its own address in 127.0.0.0/8, so the
// bridge's per-address limits see separate machines.
func nextLoopback() netip.Addr {
	n := loopbackHosts.Add(1)
	return netip.AddrFrom4([4]byte{127, 1, byte(n >> 8), byte(n)})
}

// srvNode is a test node talking to the bridge over UDP or TCP with the
// plain frame functions.
type srvNode struct {
	t      *testing.T
	key    identity.PrivateKey
	pub    identity.PublicKey
	shared wire.SharedKey
	clk    *testClock    // the node's clock: the bridge's, unless a test sets it apart
	stamps *atomic.Int64 // shared by the harness's nodes, so one key's are ordered on any socket
	last   int64

	pc     *net.UDPConn // UDP
	bridge netip.AddrPort
	tc     net.Conn // TCP
	br     *bufio.Reader
}

func (h *srvHarness) udpNode(key identity.PrivateKey) *srvNode {
	h.t.Helper()
	pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(nextLoopback(), 0)))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { pc.Close() })
	return &srvNode{t: h.t, key: key, pub: key.Public(), shared: wire.Precompute(key, h.key.Public()), clk: h.clk, stamps: &h.stamps, pc: pc, bridge: h.addr()}
}

func (h *srvHarness) tcpNode(key identity.PrivateKey) *srvNode {
	h.t.Helper()
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(nextLoopback(), 0)), Timeout: 5 * time.Second}
	tc, err := d.Dial("tcp", h.s.TCPAddr().String())
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { tc.Close() })
	return &srvNode{t: h.t, key: key, pub: key.Public(), shared: wire.Precompute(key, h.key.Public()), clk: h.clk, stamps: &h.stamps, tc: tc, br: bufio.NewReader(tc)}
}

func (n *srvNode) addr() netip.AddrPort {
	if n.tc != nil {
		return n.tc.LocalAddr().(*net.TCPAddr).AddrPort()
	}
	return n.pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// seal builds a control frame, stamping it with the node's clock, newer
// than any the harness's nodes stamped before (the test clock stands
// still).
func (n *srvNode) seal(m wire.Message) []byte {
	n.t.Helper()
	if m.Time == 0 {
		for {
			old := n.stamps.Load()
			if n.last = max(n.clk.Now().UnixNano(), old+1); n.stamps.CompareAndSwap(old, n.last) {
				break
			}
		}
		m.Time = n.last
	}
	f, err := wire.Seal(nil, n.pub, &n.shared, &m)
	if err != nil {
		n.t.Fatal(err)
	}
	return f
}

func (n *srvNode) send(m wire.Message) { n.t.Helper(); n.sendRaw(n.seal(m)) }

func (n *srvNode) sendRaw(f []byte) {
	n.t.Helper()
	var err error
	if n.tc != nil {
		_, err = n.tc.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(f))), f...))
	} else {
		_, err = n.pc.WriteToUDPAddrPort(f, n.bridge)
	}
	if err != nil {
		n.t.Fatal(err)
	}
}

func (n *srvNode) recvErr(timeout time.Duration) ([]byte, error) {
	if n.tc != nil {
		n.tc.SetReadDeadline(time.Now().Add(timeout))
		var hdr [2]byte
		if _, err := io.ReadFull(n.br, hdr[:]); err != nil {
			return nil, err
		}
		f := make([]byte, binary.BigEndian.Uint16(hdr[:]))
		_, err := io.ReadFull(n.br, f)
		return f, err
	}
	n.pc.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 65536)
	k, _, err := n.pc.ReadFromUDPAddrPort(buf)
	return buf[:k], err
}

func (n *srvNode) recv() []byte {
	n.t.Helper()
	f, err := n.recvErr(5 * time.Second)
	if err != nil {
		n.t.Fatalf("node %s: %v", n.pub.ShortString(), err)
	}
	return f
}

// expect receives the next frame, which must be a control message of kind.
func (n *srvNode) expect(kind wire.Kind) wire.Message {
	n.t.Helper()
	m, err := wire.Open(n.recv(), &n.shared)
	if err != nil {
		n.t.Fatalf("node %s: %v", n.pub.ShortString(), err)
	}
	if m.Kind != kind {
		n.t.Fatalf("node %s: got %s %+v, want %s", n.pub.ShortString(), m.Kind, m, kind)
	}
	return m
}

// register sends a Register and returns the reply (Registered or Refused).
func (n *srvNode) register(token string, local ...netip.AddrPort) wire.Message {
	n.t.Helper()
	n.send(wire.Message{Kind: wire.KindRegister, Token: token, Endpoints: local})
	m, err := wire.Open(n.recv(), &n.shared)
	if err != nil {
		n.t.Fatal(err)
	}
	return m
}

func (n *srvNode) mustRegister(local ...netip.AddrPort) uint32 {
	n.t.Helper()
	m := n.register("", local...)
	if m.Kind != wire.KindRegistered || m.ID == 0 {
		n.t.Fatalf("node %s: got %s %q, want registered", n.pub.ShortString(), m.Kind, m.Text)
	}
	return m.ID
}

// expectRelay receives the next frame, which must be a relay frame.
func (n *srvNode) expectRelay() (uint32, string) {
	n.t.Helper()
	id, msg, ok := wire.ParseRelay(n.recv())
	if !ok {
		n.t.Fatalf("node %s: not a relay frame", n.pub.ShortString())
	}
	return id, string(msg)
}

func waitCond(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRegisterAllowedAndRefused(t *testing.T) {
	a, b := testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public()}})
	na, nb := h.udpNode(a), h.udpNode(b)
	local := netip.MustParseAddrPort("192.168.7.2:4610")

	m := na.register("", local)
	if m.Kind != wire.KindRegistered || m.ID == 0 || m.Interval != keepaliveInterval || !slices.Equal(m.Endpoints, []netip.AddrPort{na.addr()}) {
		t.Fatalf("allowed key: got %+v", m)
	}
	if m := nb.register(""); m.Kind != wire.KindRefused || m.Text != admission.RefuseNotAllowed {
		t.Fatalf("other key: got %s %q", m.Kind, m.Text)
	}
	// A keepalive keeps the relay id.
	if id := na.mustRegister(local); id != m.ID {
		t.Fatalf("relay id changed from %d to %d on re-registration", m.ID, id)
	}

	nodes := h.s.Nodes()
	want := []NodeInfo{{
		PublicKey: a.Public(), Address: a.Public().Address(), Endpoint: na.addr(), Transport: "udp",
		LocalEndpoints: []netip.AddrPort{local}, LastSeen: h.clk.Now().UTC(), RelayID: m.ID,
	}}
	if !reflect.DeepEqual(nodes, want) {
		t.Fatalf("Nodes() = %+v\nwant %+v", nodes, want)
	}
	st := h.s.Stats()
	if st.Registrations != 2 || st.Refused != 1 || st.Registered != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// The JSON of NodeInfo and admission.TokenInfo is what `tomoe bridge ... --json`
// prints: a contract.
func TestInfoJSON(t *testing.T) {
	k := testKey(t).Public()
	n := NodeInfo{
		PublicKey: k, Address: k.Address(), Endpoint: netip.MustParseAddrPort("198.51.100.4:4610"), Transport: "udp",
		LocalEndpoints: []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::4]:4610")},
		LastSeen:       time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), RelayedBytes: 99, RelayID: 7,
	}
	b, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"public_key":"` + k.String() + `","address":"` + k.Address().String() + `","endpoint":"198.51.100.4:4610","transport":"udp",` +
		`"local_endpoints":["[2001:db8::4]:4610"],"last_seen":"2026-03-01T12:00:00Z","relayed_bytes":99,"relay_id":7}`
	if string(b) != want {
		t.Fatalf("NodeInfo JSON\n got %s\nwant %s", b, want)
	}
	ti := admission.TokenInfo{ID: "0123abcd", UsesLeft: 2, Expires: n.LastSeen.Add(time.Hour), Created: n.LastSeen}
	b, _ = json.Marshal(ti)
	if want := `{"id":"0123abcd","uses_left":2,"expires":"2026-03-01T13:00:00Z","created":"2026-03-01T12:00:00Z"}`; string(b) != want {
		t.Fatalf("TokenInfo JSON\n got %s\nwant %s", b, want)
	}
}

func TestTokenEnrolment(t *testing.T) {
	state := filepath.Join(t.TempDir(), "bridge", "state.json")
	h := newSrvHarness(t, ServerConfig{StateFile: state})
	tok, info, err := h.s.CreateToken(2, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(tok))
	if info.ID != hex.EncodeToString(sum[:])[:8] || info.UsesLeft != 2 || !info.Expires.Equal(h.clk.Now().Add(time.Hour)) {
		t.Fatalf("token info %+v", info)
	}
	if got := h.s.Tokens(); len(got) != 1 || got[0] != info {
		t.Fatalf("Tokens() = %+v", got)
	}

	// Stored hashed: neither the token nor its random part is in the file.
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(tok)) || bytes.Contains(b, []byte(strings.TrimPrefix(tok, admission.TokenPrefix))) {
		t.Fatalf("state file holds the token:\n%s", b)
	}
	if !bytes.Contains(b, []byte(hex.EncodeToString(sum[:]))) {
		t.Fatalf("state file lacks the token's hash:\n%s", b)
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v %v", fi.Mode(), err)
	}

	k1, k2, k3 := testKey(t), testKey(t), testKey(t)
	n1, n2, n3 := h.udpNode(k1), h.udpNode(k2), h.udpNode(k3)
	if m := n1.register("tomoe-join-wrong"); m.Kind != wire.KindRefused || m.Text != admission.RefuseBadToken {
		t.Fatalf("wrong token: %s %q", m.Kind, m.Text)
	}
	if m := n1.register(tok); m.Kind != wire.KindRegistered {
		t.Fatalf("token: %s %q", m.Kind, m.Text)
	}
	n1.mustRegister() // enrolled: no token needed any more, and no use spent
	if m := n2.register(tok); m.Kind != wire.KindRegistered {
		t.Fatalf("second use: %s %q", m.Kind, m.Text)
	}
	if m := n3.register(tok); m.Kind != wire.KindRefused || m.Text != admission.RefuseUsedUp {
		t.Fatalf("third use: %s %q", m.Kind, m.Text)
	}
	if got := h.s.Tokens(); got[0].UsesLeft != 0 {
		t.Fatalf("uses left %d", got[0].UsesLeft)
	}

	short, _, err := h.s.CreateToken(5, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	h.clk.Advance(2 * time.Minute)
	if m := n3.register(short); m.Kind != wire.KindRefused || m.Text != admission.RefuseExpired {
		t.Fatalf("expired token: %s %q", m.Kind, m.Text)
	}
	if st := h.s.Stats(); st.Enrolments != 2 || st.Refused != 3 {
		t.Fatalf("stats %+v", st)
	}

	// Enrolments survive a restart.
	h2 := newSrvHarness(t, ServerConfig{StateFile: state})
	h2.udpNode(k1).mustRegister()
	h2.udpNode(k2).mustRegister()
	if m := h2.udpNode(k3).register(""); m.Kind != wire.KindRefused {
		t.Fatalf("not enrolled after restart: %s", m.Kind)
	}
	if got := h2.s.Tokens(); len(got) != 2 || !slices.ContainsFunc(got, func(ti admission.TokenInfo) bool { return ti.ID == info.ID && ti.UsesLeft == 0 }) {
		t.Fatalf("tokens after restart %+v", got)
	}

	for _, bad := range []struct {
		uses int
		ttl  time.Duration
	}{{0, time.Hour}, {1, 0}, {-1, time.Hour}} {
		if _, _, err := h.s.CreateToken(bad.uses, bad.ttl); err == nil {
			t.Errorf("CreateToken(%d, %s) accepted", bad.uses, bad.ttl)
		}
	}
}

// A token's use count holds when many nodes join at once.
func TestTokenUsesConcurrent(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.json")
	h := newSrvHarness(t, ServerConfig{StateFile: state})
	tok, _, err := h.s.CreateToken(5, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	const joins = 20
	nodes := make([]*srvNode, joins)
	frames := make([][]byte, joins)
	for i := range nodes {
		nodes[i] = h.udpNode(testKey(t))
		frames[i] = nodes[i].seal(wire.Message{Kind: wire.KindRegister, Token: tok})
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			<-start
			h.s.HandleFrames([][]byte{frames[i]}, []netip.AddrPort{nodes[i].addr()})
		})
	}
	close(start)
	wg.Wait()

	accepted := 0
	for _, n := range nodes {
		m, err := wire.Open(n.recv(), &n.shared)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case m.Kind == wire.KindRegistered:
			accepted++
		case m.Kind != wire.KindRefused || m.Text != admission.RefuseUsedUp:
			t.Fatalf("got %s %q", m.Kind, m.Text)
		}
	}
	if accepted != 5 || len(h.s.Nodes()) != 5 || h.s.Stats().Enrolments != 5 {
		t.Fatalf("%d joins accepted, %d nodes registered; want 5", accepted, len(h.s.Nodes()))
	}
	var st struct { // the state file's form (package admission)
		Tokens []struct {
			UsesLeft int `json:"uses_left"`
		} `json:"tokens"`
		Enrolled []json.RawMessage `json:"enrolled"`
	}
	b, _ := os.ReadFile(state)
	if err := json.Unmarshal(b, &st); err != nil || len(st.Enrolled) != 5 || st.Tokens[0].UsesLeft != 0 {
		t.Fatalf("state file (%v):\n%s", err, b)
	}
}

func TestRegisterReplayIgnored(t *testing.T) {
	a := testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public()}})
	na := h.udpNode(a)
	reg := na.seal(wire.Message{Kind: wire.KindRegister})
	na.sendRaw(reg)
	na.expect(wire.KindRegistered)

	na.sendRaw(reg) // the same frame again
	older := na.seal(wire.Message{Kind: wire.KindRegister, Time: na.last - 1})
	na.sendRaw(older)
	// From elsewhere, a captured frame must not move the registration.
	thief := h.udpNode(testKey(t))
	thief.pc.WriteToUDPAddrPort(reg, h.addr())
	waitCond(t, "three replays", func() bool { return h.s.Stats().Replays == 3 })

	// Nothing answered the replays: the next frame is the lookup's reply.
	na.send(wire.Message{Kind: wire.KindLookup, Seq: 1, Address: a.Public().Address()})
	na.expect(wire.KindLookupReply)
	if nodes := h.s.Nodes(); len(nodes) != 1 || nodes[0].Endpoint != na.addr() {
		t.Fatalf("nodes %+v", nodes)
	}
	if st := h.s.Stats(); st.Registrations != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestLookupAndIntroduce(t *testing.T) {
	a, b := testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public(), b.Public()}})
	na, nb := h.udpNode(a), h.udpNode(b)
	aLocal := netip.MustParseAddrPort("10.0.0.1:1234")
	bLocal := netip.MustParseAddrPort("[fd00::2]:5555")
	idA := na.mustRegister(aLocal)
	idB := nb.mustRegister(bLocal)

	na.send(wire.Message{Kind: wire.KindLookup, Seq: 7, Address: b.Public().Address()})
	got := na.expect(wire.KindLookupReply)
	want := wire.Message{Kind: wire.KindLookupReply, Time: got.Time, Seq: 7, Address: b.Public().Address(), Found: true,
		Key: b.Public(), ID: idB, Endpoints: []netip.AddrPort{nb.addr(), bLocal}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("lookup reply %+v\nwant %+v", got, want)
	}
	intro := nb.expect(wire.KindIntroduce)
	if intro.Key != a.Public() || intro.ID != idA || !slices.Equal(intro.Endpoints, []netip.AddrPort{na.addr(), aLocal}) {
		t.Fatalf("introduce %+v", intro)
	}

	unknown := testKey(t).Public().Address()
	na.send(wire.Message{Kind: wire.KindLookup, Seq: 8, Address: unknown})
	if got := na.expect(wire.KindLookupReply); got.Found || got.Seq != 8 || got.Address != unknown {
		t.Fatalf("unknown address: %+v", got)
	}

	na.send(wire.Message{Kind: wire.KindLookup, Seq: 9, Address: h.key.Public().Address()})
	got = na.expect(wire.KindLookupReply)
	if !got.Found || got.Key != h.key.Public() || got.ID != 0 || len(got.Endpoints) != 0 {
		t.Fatalf("bridge's own address: %+v", got)
	}

	// An unregistered node gets no answer: its next frame is the refusal
	// of the Register it sends afterwards.
	nc := h.udpNode(testKey(t))
	nc.send(wire.Message{Kind: wire.KindLookup, Seq: 10, Address: b.Public().Address()})
	if m := nc.register(""); m.Kind != wire.KindRefused {
		t.Fatalf("got %s", m.Kind)
	}
	if st := h.s.Stats(); st.Lookups != 3 || st.Introductions != 1 {
		t.Fatalf("stats %+v", st)
	}

	// Unregister drops the registration.
	nb.send(wire.Message{Kind: wire.KindUnregister})
	waitCond(t, "unregister", func() bool { return len(h.s.Nodes()) == 1 })
	na.send(wire.Message{Kind: wire.KindLookup, Seq: 11, Address: b.Public().Address()})
	if got := na.expect(wire.KindLookupReply); got.Found {
		t.Fatalf("unregistered node found: %+v", got)
	}
}

func TestLookupRateLimit(t *testing.T) {
	a := testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public()}})
	na := h.udpNode(a)
	na.mustRegister()
	frames := make([][]byte, lookupBurst+50)
	srcs := make([]netip.AddrPort, len(frames))
	for i := range frames {
		frames[i] = na.seal(wire.Message{Kind: wire.KindLookup, Seq: uint64(i), Address: netip.MustParseAddr("fc00::1")})
		srcs[i] = na.addr()
	}
	h.s.HandleFrames(frames, srcs) // the clock stands still: no refill
	if st := h.s.Stats(); st.Lookups != lookupBurst || st.LookupsLimited != 50 {
		t.Fatalf("lookups %d, limited %d", st.Lookups, st.LookupsLimited)
	}
	h.clk.Advance(time.Second)
	h.s.HandleFrames(frames[:1], srcs[:1])
	if st := h.s.Stats(); st.Lookups != lookupBurst+1 {
		t.Fatalf("no refill: %+v", st)
	}
}

func TestRelayUDP(t *testing.T) {
	a, b := testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public(), b.Public()}})
	na, nb := h.udpNode(a), h.udpNode(b)
	idA, idB := na.mustRegister(), nb.mustRegister()

	na.sendRaw(relayFrame(idB, "hello b"))
	if id, msg := nb.expectRelay(); id != idA || msg != "hello b" {
		t.Fatalf("b got id %d %q, want %d", id, msg, idA)
	}
	nb.sendRaw(relayFrame(idA, "hello a"))
	if id, msg := na.expectRelay(); id != idB || msg != "hello a" {
		t.Fatalf("a got id %d %q, want %d", id, msg, idB)
	}

	// A batch to one destination goes out in one send.
	calls := h.udp.calls.Load()
	batch := [][]byte{relayFrame(idB, "1"), relayFrame(idB, "2"), relayFrame(idB, "3")}
	h.s.HandleFrames(batch, []netip.AddrPort{na.addr(), na.addr(), na.addr()})
	if got := h.udp.calls.Load() - calls; got != 1 {
		t.Fatalf("%d sends for a batch of 3", got)
	}
	for _, want := range []string{"1", "2", "3"} {
		if id, msg := nb.expectRelay(); id != idA || msg != want {
			t.Fatalf("b got %d %q", id, msg)
		}
	}

	// From an unregistered address, to an unknown id, malformed: dropped.
	stranger := h.udpNode(testKey(t))
	stranger.sendRaw(relayFrame(idB, "spoof"))
	unknown := idA ^ idB ^ 0x5a5a5a5a
	na.sendRaw(relayFrame(unknown, "lost"))
	na.sendRaw([]byte{wire.FrameRelay, 0, 0, 0, 0, 0, 0, 1})
	waitCond(t, "drops", func() bool {
		st := h.s.Stats()
		return st.RelayDroppedUnregistered == 1 && st.RelayDroppedUnknownID == 1 && st.RelayDroppedMalformed == 1
	})

	// Roaming: a registers from a new address; the old one no longer relays.
	na2 := h.udpNode(a)
	if id := na2.mustRegister(); id != idA {
		t.Fatalf("relay id changed on roaming: %d -> %d", idA, id)
	}
	na.sendRaw(relayFrame(idB, "old"))
	na2.sendRaw(relayFrame(idB, "new"))
	if id, msg := nb.expectRelay(); id != idA || msg != "new" {
		t.Fatalf("b got %d %q", id, msg)
	}
	nb.sendRaw(relayFrame(idA, "to new"))
	if _, msg := na2.expectRelay(); msg != "to new" {
		t.Fatalf("a got %q", msg)
	}
	waitCond(t, "old address dropped", func() bool { return h.s.Stats().RelayDroppedUnregistered == 2 })

	st := h.s.Stats()
	if st.RelayedFrames != 7 {
		t.Fatalf("stats %+v", st)
	}
	for _, n := range h.s.Nodes() {
		if n.PublicKey == a.Public() && n.RelayedBytes != uint64(5*wire.RelayHeaderSize+len("hello b")+3+len("new")) {
			t.Fatalf("a relayed %d bytes", n.RelayedBytes)
		}
	}
}

func TestRelayTCP(t *testing.T) {
	a, b := testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public(), b.Public()}, TCP: "127.0.0.1:0"})
	ta, nb := h.tcpNode(a), h.udpNode(b)
	m := ta.register("", netip.MustParseAddrPort("10.1.1.1:4610"))
	if m.Kind != wire.KindRegistered || !slices.Equal(m.Endpoints, []netip.AddrPort{ta.addr()}) {
		t.Fatalf("tcp register: %+v", m)
	}
	idA, idB := m.ID, nb.mustRegister()
	if nodes := h.s.Nodes(); nodes[slices.IndexFunc(nodes, func(n NodeInfo) bool { return n.PublicKey == a.Public() })].Transport != "tcp" {
		t.Fatalf("nodes %+v", nodes)
	}

	ta.sendRaw(relayFrame(idB, "over tcp"))
	if id, msg := nb.expectRelay(); id != idA || msg != "over tcp" {
		t.Fatalf("b got %d %q", id, msg)
	}
	nb.sendRaw(relayFrame(idA, "to tcp"))
	if id, msg := ta.expectRelay(); id != idB || msg != "to tcp" {
		t.Fatalf("a got %d %q", id, msg)
	}

	// Lookups over TCP; the introduction carries no TCP address.
	ta.send(wire.Message{Kind: wire.KindLookup, Seq: 1, Address: b.Public().Address()})
	if got := ta.expect(wire.KindLookupReply); !got.Found || got.ID != idB {
		t.Fatalf("lookup %+v", got)
	}
	if in := nb.expect(wire.KindIntroduce); in.ID != idA || !slices.Equal(in.Endpoints, []netip.AddrPort{netip.MustParseAddrPort("10.1.1.1:4610")}) {
		t.Fatalf("introduce %+v", in)
	}
	nb.send(wire.Message{Kind: wire.KindLookup, Seq: 2, Address: a.Public().Address()})
	if got := nb.expect(wire.KindLookupReply); !got.Found || got.ID != idA || !slices.Equal(got.Endpoints, []netip.AddrPort{netip.MustParseAddrPort("10.1.1.1:4610")}) {
		t.Fatalf("lookup of a tcp node %+v", got)
	}
	ta.expect(wire.KindIntroduce)

	// a moves to UDP: closing the old connection leaves it registered.
	na := h.udpNode(a)
	na.last = ta.last
	if id := na.mustRegister(); id != idA {
		t.Fatalf("relay id changed: %d -> %d", idA, id)
	}
	ta.tc.Close()
	waitCond(t, "connection gone", func() bool { return h.s.Stats().TCPConnsOpen == 0 })
	if nodes := h.s.Nodes(); len(nodes) != 2 || nodes[slices.IndexFunc(nodes, func(n NodeInfo) bool { return n.PublicKey == a.Public() })].Transport != "udp" {
		t.Fatalf("nodes %+v", nodes)
	}

	// and back to TCP; then closing the connection unregisters it.
	ta2 := h.tcpNode(a)
	ta2.last = na.last
	ta2.mustRegister()
	ta2.tc.Close()
	waitCond(t, "tcp registration gone", func() bool { return len(h.s.Nodes()) == 1 })
}

func TestTCPFirstFrameMustRegister(t *testing.T) {
	a := testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public()}, TCP: "127.0.0.1:0"})
	expectClosed := func(n *srvNode) {
		t.Helper()
		if f, err := n.recvErr(5 * time.Second); !errors.Is(err, io.EOF) {
			t.Fatalf("connection not closed: %x %v", f, err)
		}
	}
	silent := h.tcpNode(a) // sends nothing
	expectClosed(silent)
	relay := h.tcpNode(a)
	relay.sendRaw(relayFrame(1, "x"))
	expectClosed(relay)
	stranger := h.tcpNode(testKey(t))
	if m := stranger.register(""); m.Kind != wire.KindRefused {
		t.Fatalf("got %s", m.Kind)
	}
	expectClosed(stranger)
	waitCond(t, "connections gone", func() bool { return h.s.Stats().TCPConnsOpen == 0 })
}

// Connections that have not registered yet are limited per address, and
// an over-long first frame is refused.
func TestTCPStrangersAreCheap(t *testing.T) {
	a := testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public()}, TCP: "127.0.0.1:0"})
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range maxPendingPerSource {
		c, err := net.Dial("tcp", h.s.TCPAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	waitCond(t, "pending connections accepted", func() bool { return h.s.Stats().TCPConnsOpen == maxPendingPerSource })
	extra, err := net.Dial("tcp", h.s.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("connection over the per-address limit not closed: %v", err)
	}
	// A first frame longer than any Register: closed without a reply.
	big := conns[0]
	hdr := []byte{0x10, 0x00} // 4096 bytes announced
	big.Write(append(hdr, make([]byte, 4096)...))
	big.SetReadDeadline(time.Now().Add(5 * time.Second))
	// Closed with our bytes unread: EOF or a reset.
	if _, err := big.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("over-long first frame: connection not closed: %v", err)
	}
}

func TestRevoke(t *testing.T) {
	a, b, c := testKey(t), testKey(t), testKey(t)
	state := filepath.Join(t.TempDir(), "state.json")
	allow := []identity.PublicKey{a.Public(), b.Public(), c.Public()}
	h := newSrvHarness(t, ServerConfig{Allow: allow, StateFile: state, TCP: "127.0.0.1:0"})
	na, nb, tc := h.udpNode(a), h.udpNode(b), h.tcpNode(c)
	idA, idB := na.mustRegister(), nb.mustRegister()
	tc.mustRegister()
	na.sendRaw(relayFrame(idB, "before"))
	nb.expectRelay()

	if known, err := h.s.Revoke(a.Public()); err != nil || !known {
		t.Fatalf("Revoke = %v, %v", known, err)
	}
	if slices.ContainsFunc(h.s.Nodes(), func(n NodeInfo) bool { return n.PublicKey == a.Public() }) {
		t.Fatal("revoked node still registered")
	}
	// Both directions stop at once.
	h.s.HandleFrames([][]byte{relayFrame(idB, "after")}, []netip.AddrPort{na.addr()})
	h.s.HandleFrames([][]byte{relayFrame(idA, "to a")}, []netip.AddrPort{nb.addr()})
	if st := h.s.Stats(); st.RelayDroppedUnregistered != 1 || st.RelayDroppedUnknownID != 1 {
		t.Fatalf("stats %+v", st)
	}
	if m := na.register(""); m.Kind != wire.KindRefused || m.Text != admission.RefuseRevoked {
		t.Fatalf("revoked key: %s %q", m.Kind, m.Text)
	}

	// A TCP node's connection is closed.
	if known, err := h.s.Revoke(c.Public()); err != nil || !known {
		t.Fatalf("Revoke = %v, %v", known, err)
	}
	if _, err := tc.recvErr(5 * time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("revoked node's connection: %v", err)
	}
	if known, err := h.s.Revoke(testKey(t).Public()); err != nil || known {
		t.Fatalf("Revoke(unknown) = %v, %v", known, err)
	}

	// It persists, and overrides the allow list and tokens.
	h2 := newSrvHarness(t, ServerConfig{Allow: allow, StateFile: state})
	tok, _, err := h2.s.CreateToken(1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if m := h2.udpNode(a).register(tok); m.Kind != wire.KindRefused || m.Text != admission.RefuseRevoked {
		t.Fatalf("after restart: %s %q", m.Kind, m.Text)
	}
	h2.udpNode(b).mustRegister()
}

func TestRelayRateLimit(t *testing.T) {
	a, b := testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public(), b.Public()}, RelayMbit: 1})
	na, nb := h.udpNode(a), h.udpNode(b)
	idB := nb.mustRegister()
	na.mustRegister()
	payload := strings.Repeat("x", 1000)
	frames := make([][]byte, 100)
	srcs := make([]netip.AddrPort, len(frames))
	for i := range frames {
		frames[i] = relayFrame(idB, payload)
		srcs[i] = na.addr()
	}
	// Burst: max(a quarter second at 1 Mbit/s, one maximal frame) bytes;
	// the clock stands still, so nothing refills.
	passed := uint64(wire.MaxFrame / (wire.RelayHeaderSize + len(payload)))
	h.s.HandleFrames(frames, srcs)
	if st := h.s.Stats(); st.RelayedFrames != passed || st.RelayDroppedRate != uint64(len(frames))-passed {
		t.Fatalf("relayed %d, dropped %d; want %d passed", st.RelayedFrames, st.RelayDroppedRate, passed)
	}
	for range passed {
		nb.expectRelay()
	}
	h.clk.Advance(100 * time.Millisecond) // 12,500 bytes
	for i := range frames {
		wire.RelayHeader(frames[i], idB)
	}
	h.s.HandleFrames(frames, srcs)
	if st := h.s.Stats(); st.RelayedFrames != passed+12 {
		t.Fatalf("after 100ms: relayed %d, want %d", st.RelayedFrames, passed+12)
	}
}

func TestRegistrationExpiry(t *testing.T) {
	a, b := testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public(), b.Public()}, TCP: "127.0.0.1:0"})
	na, tb := h.udpNode(a), h.tcpNode(b)
	na.mustRegister()
	tb.mustRegister()
	h.clk.Advance(registrationTTL / 2)
	na.mustRegister()
	h.clk.Advance(registrationTTL/2 + time.Second)
	h.s.expireIdle(h.clk.Now())
	if nodes := h.s.Nodes(); len(nodes) != 1 || nodes[0].PublicKey != a.Public() {
		t.Fatalf("nodes %+v", nodes)
	}
	if _, err := tb.recvErr(5 * time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("expired TCP node's connection: %v", err)
	}
	h.clk.Advance(registrationTTL)
	h.s.expireIdle(h.clk.Now())
	if st := h.s.Stats(); st.Registered != 0 || st.Expired != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBadStateFile(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.json")
	for _, content := range []string{"{", `{"version":2}`, `{"version":1,"tokens":[{"sha256":"zz"}]}`} {
		os.WriteFile(state, []byte(content), 0o600)
		_, err := NewServer(ServerConfig{Key: testKey(t), StateFile: state, Sender: &discardSender{}})
		if err == nil || !strings.Contains(err.Error(), state) {
			t.Errorf("%s: error %v does not name the file", content, err)
		}
	}
}

// registerDirect registers a key with s from src without sockets.
func registerDirect(t testing.TB, s *Server, bridge identity.PublicKey, k identity.PrivateKey, src netip.AddrPort) {
	t.Helper()
	shared := wire.Precompute(k, bridge)
	f, err := wire.Seal(nil, k.Public(), &shared, &wire.Message{Kind: wire.KindRegister, Time: s.now().UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	s.HandleFrames([][]byte{f}, []netip.AddrPort{src})
	// A key not cached yet is opened by the worker.
	waitCond(t, "registration of "+k.Public().ShortString(), func() bool {
		return slices.ContainsFunc(s.Nodes(), func(n NodeInfo) bool { return n.PublicKey == k.Public() && n.Endpoint == src })
	})
}

// The relay path allocates nothing per frame.
func TestRelayAllocations(t *testing.T) {
	bk, a, b := testKey(t), testKey(t), testKey(t)
	s, err := NewServer(ServerConfig{Key: bk, Allow: []identity.PublicKey{a.Public(), b.Public()}, Sender: &discardSender{}, RelayMbit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	srcA, srcB := netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("192.0.2.2:2")
	registerDirect(t, s, bk.Public(), a, srcA)
	registerDirect(t, s, bk.Public(), b, srcB)
	idB := s.Nodes()[slices.IndexFunc(s.Nodes(), func(n NodeInfo) bool { return n.PublicKey == b.Public() })].RelayID
	frames := make([][]byte, 64)
	srcs := make([]netip.AddrPort, len(frames))
	for i := range frames {
		frames[i] = relayFrame(idB, strings.Repeat("w", 1200))
		srcs[i] = srcA
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, f := range frames {
			wire.RelayHeader(f, idB)
		}
		s.HandleFrames(frames, srcs)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch", allocs)
	}
	if st := s.Stats(); st.RelayedFrames < 100*64 {
		t.Fatalf("stats %+v", st)
	}
}

// What the bridge holds per registered UDP node stays small.
func TestMemoryPerNode(t *testing.T) {
	if testing.Short() {
		t.Skip("generates many keys")
	}
	bk := testKey(t)
	s, err := NewServer(ServerConfig{Key: bk, StateFile: "", Sender: &discardSender{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 500
	frames := make([][]byte, n)
	srcs := make([]netip.AddrPort, n)
	keys := make([]identity.PublicKey, n)
	shared := make([]wire.SharedKey, n)
	for i := range frames {
		k := testKey(t)
		s.adm.Allow(k.Public())
		keys[i], shared[i] = k.Public(), wire.Precompute(bk, k.Public())
		frames[i], _ = wire.Seal(nil, k.Public(), &shared[i], &wire.Message{Kind: wire.KindRegister, Time: time.Now().UnixNano(),
			Endpoints: []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:4610"), netip.MustParseAddrPort("[fd00::1]:4610")}})
		srcs[i] = netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 4610)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range frames {
		s.keys.PinShared(keys[i], &shared[i]) // as at admission
		s.HandleFrames(frames[i:i+1], srcs[i:i+1])
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := len(s.Nodes()); got != n {
		t.Fatalf("%d registered", got)
	}
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("%d bytes per registered node", per)
	if per > 2048 {
		t.Fatalf("%d bytes per registered node, want under 2 KB", per)
	}
}

func lenPrefixed(frames ...[]byte) []byte {
	var b []byte
	for _, f := range frames {
		b = binary.BigEndian.AppendUint16(b, uint16(len(f)))
		b = append(b, f...)
	}
	return b
}

// FuzzServerFrames: arbitrary frames over UDP and arbitrary TCP streams
// never panic the bridge.
func FuzzServerFrames(f *testing.F) {
	bk := identity.PrivateKeyFromBytes([32]byte{9})
	a := identity.PrivateKeyFromBytes([32]byte{1}) // registered over UDP first
	c := identity.PrivateKeyFromBytes([32]byte{3}) // registers over TCP in the seeds
	srcA := netip.MustParseAddrPort("192.0.2.1:4610")
	seal := func(k identity.PrivateKey, m wire.Message) []byte {
		shared := wire.Precompute(k, bk.Public())
		frame, err := wire.Seal(nil, k.Public(), &shared, &m)
		if err != nil {
			f.Fatal(err)
		}
		return frame
	}
	// The bridge's clock stands at now: seeds stamped near it are fresh.
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) int64 { return now.Add(d).UnixNano() }
	regA := seal(a, wire.Message{Kind: wire.KindRegister, Time: at(0)})
	regC := seal(c, wire.Message{Kind: wire.KindRegister, Time: at(0), Endpoints: []netip.AddrPort{srcA}})
	lookupA := seal(a, wire.Message{Kind: wire.KindLookup, Time: at(1), Address: c.Public().Address()})
	lookupC := seal(c, wire.Message{Kind: wire.KindLookup, Time: at(1), Address: a.Public().Address()})
	f.Add(relayFrame(2, "to c"), lenPrefixed(regC, relayFrame(1, "to a"), lookupC))
	f.Add(lookupA, lenPrefixed(regC, seal(c, wire.Message{Kind: wire.KindUnregister, Time: at(2)}), relayFrame(1, "x")))
	f.Add(seal(a, wire.Message{Kind: wire.KindUnregister, Time: at(3)}), lenPrefixed(regC, regC, []byte{}, relayFrame(7, "")))
	f.Add([]byte{wire.FrameControl, 1, 0, 0}, []byte{0xff, 0xff, 1})
	f.Add([]byte{wire.FrameControl, wire.Version, 0, 0}, []byte{0, 0})
	// The seeds of wire version 1, stamped 1970 and so refused as stale
	// (the clock refusal's text handles any time).
	f.Add(seal(a, wire.Message{Kind: wire.KindUnregister, Time: 5}), lenPrefixed(seal(c, wire.Message{Kind: wire.KindRegister, Time: 1}), relayFrame(7, "")))
	f.Add(seal(a, wire.Message{Kind: wire.KindRegister, Time: -1 << 63}), lenPrefixed(seal(c, wire.Message{Kind: wire.KindRegister, Time: 1<<63 - 1})))
	// Version 3: c's Register from a's address (challenged), with a wrong
	// answer, and over TCP with an answer it needs not.
	f.Add(seal(c, wire.Message{Kind: wire.KindRegister, Time: at(0)}), lenPrefixed(seal(c, wire.Message{Kind: wire.KindRegister, Time: at(0), Seq: 5})))
	f.Add(seal(c, wire.Message{Kind: wire.KindRegister, Time: at(1), Seq: 1<<64 - 1}), lenPrefixed(regC, seal(c, wire.Message{Kind: wire.KindChallenge, Time: at(1), Echo: 1, Seq: 2})))
	// Stamped just outside the window either way, and a token with them.
	f.Add(seal(a, wire.Message{Kind: wire.KindRegister, Time: at(wire.MaxClockSkew + 1)}),
		lenPrefixed(seal(c, wire.Message{Kind: wire.KindRegister, Time: at(-wire.MaxClockSkew - 1), Token: "tomoe-join-x"})))
	f.Fuzz(func(t *testing.T, frame, stream []byte) {
		s, err := NewServer(ServerConfig{Key: bk, Allow: []identity.PublicKey{a.Public(), c.Public()}, Sender: &discardSender{}, RelayMbit: 100})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		s.now = func() time.Time { return now }
		var next uint32
		s.newID = func() uint32 { next++; return next }
		s.deriveIDs = false
		s.HandleFrames([][]byte{regA}, []netip.AddrPort{srcA})

		client, server := net.Pipe()
		defer client.Close()
		s.addConn(server)
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			io.Copy(io.Discard, client)
		}()
		client.Write(stream)

		s.HandleFrames([][]byte{bytes.Clone(frame), bytes.Clone(frame), bytes.Clone(frame)},
			[]netip.AddrPort{srcA, netip.MustParseAddrPort("192.0.2.2:1"), {}})
		client.Close()
		<-drained
	})
}

// The bridge keeps the shared keys of the nodes it admits only: strangers
// with throwaway keys cannot flush its cache.
func TestKeyCacheHoldsAdmittedKeysOnly(t *testing.T) {
	a := testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public()}})
	cached := func(k identity.PublicKey) bool { return h.s.keys.Cached(k) != nil }
	stranger := testKey(t)
	if m := h.udpNode(stranger).register(""); m.Kind != wire.KindRefused {
		t.Fatalf("stranger: %s", m.Kind)
	}
	if cached(stranger.Public()) {
		t.Fatal("a refused stranger's key was cached")
	}
	if m := h.udpNode(a).register(""); m.Kind != wire.KindRegistered {
		t.Fatalf("allowed node: %s", m.Kind)
	}
	if !cached(a.Public()) {
		t.Fatal("an admitted node's key was not cached")
	}
}
