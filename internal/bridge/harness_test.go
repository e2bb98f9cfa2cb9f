package bridge

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tomoe-net/tomoe/internal/bridge/bridgetest"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/clock"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	testKey    = bridgetest.Key
	relayFrame = bridgetest.RelayFrame
)

// testStart is where the harness's clocks start: months from the real
// time, so that anything read from the real clock instead shows.
var testStart = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// stillTimers is the harness's usual bridge clock: the time of a
// clock.Manual the test moves, with timers that never fire. So the
// janitor stays out of the tests that call expireIdle and saveTimesDue
// themselves, at the times they choose; a test of the janitor gives the
// harness a clock.Manual of its own (ServerConfig.Clock), timers and all.
type stillTimers struct {
	*clock.Manual               // Now
	timers        *clock.Manual // never advanced
}

func (c stillTimers) AfterFunc(d time.Duration, f func()) clock.Timer {
	return c.timers.AfterFunc(d, f)
}
func (c stillTimers) NewTimer(d time.Duration) clock.Timer   { return c.timers.NewTimer(d) }
func (c stillTimers) NewTicker(d time.Duration) clock.Ticker { return c.timers.NewTicker(d) }

// udpSender is the bridge's own UDP socket; it counts SendFrames calls,
// and shows tap (if set) every frame it sends. relays (if set) takes the
// batches of relay frames instead of the socket.
type udpSender struct {
	pc     *net.UDPConn
	calls  atomic.Int64
	tap    atomic.Pointer[func(frame []byte)]
	relays atomic.Pointer[func(frames [][]byte)]
}

func (u *udpSender) SendFrames(frames [][]byte, dst netip.AddrPort) error {
	u.calls.Add(1)
	if r := u.relays.Load(); r != nil && len(frames) > 0 && len(frames[0]) > 0 && frames[0][0] == wire.FrameRelay {
		(*r)(frames)
		return nil
	}
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
	t      testing.TB
	key    identity.PrivateKey
	s      *Server
	udp    *udpSender
	clk    *clock.Manual // the bridge's time
	stamps atomic.Int64  // the newest Time a node of this harness stamped
}

func newSrvHarness(t testing.TB, cfg ServerConfig) *srvHarness {
	t.Helper()
	if cfg.Key.IsZero() {
		cfg.Key = testKey(t)
	}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	h := &srvHarness{t: t, key: cfg.Key, udp: &udpSender{pc: pc}}
	if m, ok := cfg.Clock.(*clock.Manual); ok {
		h.clk = m
	} else {
		h.clk = clock.NewManual(testStart)
		cfg.Clock = stillTimers{h.clk, clock.NewManual(testStart)}
	}
	cfg.Sender = h.udp
	s, err := NewServer(cfg)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
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
	t      testing.TB
	key    identity.PrivateKey
	pub    identity.PublicKey
	shared wire.SharedKey
	clk    *clock.Manual // the node's clock: the bridge's, unless a test sets it apart
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
	testnet.WaitFor(t, 5*time.Second, what, cond)
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
