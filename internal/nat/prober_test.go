package nat

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/bridgetest"
	"github.com/tomoe-net/tomoe/internal/bridge/keycache"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
)

var loopbackHosts atomic.Uint32

// udpSocket is a test socket on its own loopback address.
func udpSocket(t *testing.T) *net.UDPConn {
	t.Helper()
	n := loopbackHosts.Add(1)
	at := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 1, byte(n >> 8), byte(n)}), 0)
	pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(at))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

func sockAddr(pc *net.UDPConn) netip.AddrPort { return pc.LocalAddr().(*net.UDPAddr).AddrPort() }

// sockPaths is the Bind as a prober sees it: a UDP socket of its own to
// send from, no relayed peers, and the proofs it was given.
type sockPaths struct {
	pc *net.UDPConn

	mu     sync.Mutex
	direct map[identity.PublicKey]netip.AddrPort
}

func (s *sockPaths) SendFrames(frames [][]byte, dst netip.AddrPort) error {
	for _, f := range frames {
		if _, err := s.pc.WriteToUDPAddrPort(f, dst); err != nil {
			return err
		}
	}
	return nil
}

func (s *sockPaths) RelayedPeers() map[identity.PublicKey]netip.AddrPort { return nil }

func (s *sockPaths) DirectWorks(key identity.PublicKey, addr netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.direct == nil {
		s.direct = make(map[identity.PublicKey]netip.AddrPort)
	}
	s.direct[key] = addr
}

// newTestProber is a node's prober with the key k, sending from a socket
// of its own, with no timers: the test drives its rounds.
func newTestProber(t *testing.T, k identity.PrivateKey) *Prober {
	t.Helper()
	return NewProber(Config{Paths: &sockPaths{pc: udpSocket(t)}, Sealer: keycache.New(k, 16, nil)})
}

// handFrames hands p control frames from the peer whose key shared is
// shared with p's, as a node's client does once they open.
func handFrames(t *testing.T, p *Prober, peer identity.PublicKey, shared *wire.SharedKey, frames [][]byte, srcs []netip.AddrPort) {
	t.Helper()
	for i, f := range frames {
		m, err := wire.Open(f, shared)
		if err != nil {
			t.Fatal(err)
		}
		p.Handle(peer, shared, m, srcs[i])
	}
}

// A probe's answer counts once, from the key and address probed: a
// replayed or redirected ack cannot point a peer anywhere.
func TestProbeAnswerOnlyOnceFromWhereItWent(t *testing.T) {
	p := NewProber(Config{})
	peer, other := bridgetest.Key(t).Public(), bridgetest.Key(t).Public()
	to := netip.MustParseAddrPort("192.0.2.1:4610")
	taken := func(seq uint64, key identity.PublicKey, from netip.AddrPort) bool {
		_, ok := p.takeProbe(seq, key, from)
		return ok
	}
	seq := p.newProbe(peer, to, time.Now(), false)
	if taken(seq, other, to) || taken(seq, peer, netip.MustParseAddrPort("192.0.2.9:4610")) || taken(seq+1, peer, to) {
		t.Fatal("an answer from another key, address or probe was taken")
	}
	if !taken(seq, peer, to) {
		t.Fatal("the real answer was not taken")
	}
	if taken(seq, peer, to) {
		t.Fatal("a replayed answer was taken twice")
	}
	old := p.newProbe(peer, to, time.Now().Add(-2*probeAnswerWindow), false)
	if taken(old, peer, to) {
		t.Fatal("a stale answer was taken")
	}
}

// A probe costs the node it reaches one small packet at most, whoever
// sends it from wherever: a replayed one (from its first source or
// another), a stale one or one from the future cost nothing, and the
// source of a probe never becomes a place the node probes by itself.
func TestReplayedProbeCostsOnePacketAtMost(t *testing.T) {
	peer, k := bridgetest.Key(t), bridgetest.Key(t)
	c := newTestProber(t, k)
	shared := wire.Precompute(peer, k.Public())
	probe := func(seq uint64, at time.Time) []byte {
		f, err := wire.Seal(nil, peer.Public(), &shared, &wire.Message{Kind: wire.KindProbe, Time: at.UnixNano(), Seq: seq})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	handle := func(frames [][]byte, srcs []netip.AddrPort) {
		t.Helper()
		handFrames(t, c, peer.Public(), &shared, frames, srcs)
	}
	v1, v2 := udpSocket(t), udpSocket(t)
	captured := probe(42, time.Now())
	handle([][]byte{captured}, []netip.AddrPort{sockAddr(v1)}) // the real one
	handle([][]byte{captured, captured}, []netip.AddrPort{sockAddr(v1), sockAddr(v2)})
	handle([][]byte{probe(43, time.Now().Add(-ClockWindow-time.Second)), probe(44, time.Now().Add(ClockWindow+time.Second))},
		[]netip.AddrPort{sockAddr(v2), sockAddr(v2)})
	for range 3 {
		c.Round(time.Now(), true)
	}
	// A fresh probe from each marks the end: everything sent to v1 and v2
	// before its answer is what the frames above cost.
	handle([][]byte{probe(45, time.Now()), probe(46, time.Now())}, []netip.AddrPort{sockAddr(v1), sockAddr(v2)})
	received := func(pc *net.UDPConn, end uint64) []wire.Message {
		t.Helper()
		var got []wire.Message
		buf := make([]byte, 2048)
		for {
			pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := pc.Read(buf)
			if err != nil {
				t.Fatalf("%s: %v after %+v", sockAddr(pc), err, got)
			}
			m, err := wire.Open(buf[:n], &shared)
			if err != nil {
				t.Fatalf("%s: %v", sockAddr(pc), err)
			}
			if m.Kind == wire.KindProbeAck && m.Echo == end {
				return got
			}
			got = append(got, m)
		}
	}
	if got := received(v1, 45); len(got) != 1 || got[0].Kind != wire.KindProbeAck || got[0].Echo != 42 {
		t.Fatalf("the probe's source got %+v, want one answer", got)
	}
	if got := received(v2, 46); len(got) != 0 {
		t.Fatalf("replays and stale probes drew %+v", got)
	}
	if st := c.stats; st.Answered.Load() != 3 || st.Refused.Load() != 4 || st.Sent.Load() != 0 {
		t.Fatalf("answered %d, refused %d, probes sent %d", st.Answered.Load(), st.Refused.Load(), st.Sent.Load())
	}
}

// Probes reordered on the way (a peer probes several of our endpoints at
// once) are answered, each once; a peer's answers are rate-limited.
func TestProbeReorderAndRate(t *testing.T) {
	peer, k := bridgetest.Key(t), bridgetest.Key(t)
	c := newTestProber(t, k)
	shared := wire.Precompute(peer, k.Public())
	src := sockAddr(udpSocket(t))
	now := time.Now()
	send := func(seq uint64, at time.Time) {
		f, err := wire.Seal(nil, peer.Public(), &shared, &wire.Message{Kind: wire.KindProbe, Time: at.UnixNano(), Seq: seq})
		if err != nil {
			t.Fatal(err)
		}
		handFrames(t, c, peer.Public(), &shared, [][]byte{f}, []netip.AddrPort{src})
	}
	send(1, now)
	send(2, now.Add(-time.Millisecond))         // overtaken on the way: answered
	send(3, now.Add(-probeReorder-time.Second)) // far older than the newest: not
	if got := c.stats.Answered.Load(); got != 2 {
		t.Fatalf("%d answered, want 2", got)
	}
	for i := range 2 * peerAnswerBurst {
		send(uint64(10+i), now.Add(time.Duration(i+1)*time.Second)) // each newer
	}
	// The burst, and what the rate refilled meanwhile.
	limit := uint64(peerAnswerBurst + peerAnswerRate*time.Since(now).Seconds() + 1)
	if got := c.stats.Answered.Load(); got > limit {
		t.Fatalf("%d answered to one peer, want at most %d", got, limit)
	}
}

// However many endpoints a peer (or a lying bridge) names, and however
// often it is introduced, the node sends probes at a bounded rate per
// peer and in all.
func TestProbesRateLimited(t *testing.T) {
	c := newTestProber(t, bridgetest.Key(t))
	now := time.Now()
	endpoints := func(n int) []netip.AddrPort {
		var eps []netip.AddrPort
		for i := range n {
			eps = append(eps, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 2, 0, byte(1 + i)}), 4610))
		}
		return eps
	}
	peer := bridgetest.Key(t).Public()
	for range 10 {
		c.AddCandidates(peer, endpoints(maxCandidates), true) // introduced again and again
		c.Round(now, true)
	}
	if sent := c.stats.Sent.Load(); sent != peerProbeBurst {
		t.Fatalf("%d probes to one peer at once, want %d", sent, peerProbeBurst)
	}
	now = now.Add(time.Second) // refills peerProbeRate: enough for a round to every candidate
	c.Round(now, true)
	if sent := c.stats.Sent.Load(); sent != peerProbeBurst+maxCandidates {
		t.Fatalf("%d probes a second later, want %d", sent, peerProbeBurst+maxCandidates)
	}

	c2 := newTestProber(t, bridgetest.Key(t))
	for range allProbeBurst / maxCandidates * 2 {
		c2.AddCandidates(bridgetest.Key(t).Public(), endpoints(maxCandidates), true)
	}
	c2.Round(now, true)
	if sent := c2.stats.Sent.Load(); sent != allProbeBurst {
		t.Fatalf("%d probes in all at once, want %d", sent, allProbeBurst)
	}
}

// Unanswered probes are forgotten on the first slow round after their
// answer window, not kept until maxSentProbes of them pile up.
func TestUnansweredProbesForgotten(t *testing.T) {
	p := newTestProber(t, bridgetest.Key(t))
	peer := bridgetest.Key(t).Public()
	now := time.Now()
	p.AddCandidates(peer, []netip.AddrPort{netip.MustParseAddrPort("127.2.0.1:4610")}, true)
	p.Round(now, true)
	p.mu.Lock()
	sent := len(p.probes)
	p.mu.Unlock()
	if sent == 0 {
		t.Fatal("no probe sent")
	}
	p.Round(now.Add(probeAnswerWindow/2), false) // a fast round keeps them
	p.mu.Lock()
	kept := len(p.probes)
	p.mu.Unlock()
	p.Round(now.Add(probeAnswerWindow+time.Second), true)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, sp := range p.probes {
		if now.Add(probeAnswerWindow+time.Second).Sub(sp.at) > probeAnswerWindow {
			t.Fatalf("a probe sent at %v is still kept after its answer window (%d kept)", sp.at, len(p.probes))
		}
	}
	if kept < sent {
		t.Fatalf("%d probes before their window ended, %d sent", kept, sent)
	}
}
