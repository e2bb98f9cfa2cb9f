package bridge

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/bridgetest"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// udpSocket is a test socket on its own loopback address.
func udpSocket(t *testing.T) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(nextLoopback(), 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

func sockAddr(pc *net.UDPConn) netip.AddrPort { return pc.LocalAddr().(*net.UDPAddr).AddrPort() }

// probeNode is a node's client, not started (no timers: the test drives
// it), on a real Bind, that wants to talk to the keys in wants.
func probeNode(t *testing.T, k identity.PrivateKey, wants ...identity.PublicKey) (*Client, uint16) {
	t.Helper()
	bind, port := bridgetest.OpenBind(t)
	bind.SetPrivateKey(k)
	c := NewClient(ClientConfig{Key: k, Bind: bind, Wants: func(p identity.PublicKey) bool {
		for _, w := range wants {
			if w == p {
				return true
			}
		}
		return false
	}})
	bind.SetFrameHandler(c)
	t.Cleanup(c.Close)
	// The keys it wants are known in advance (static peers, keys its rules
	// name): their frames open at once, on the receive goroutine.
	c.SetKnownKeys(wants)
	waitCond(t, "the wanted keys' shared keys computed", func() bool {
		return !slices.ContainsFunc(wants, func(k identity.PublicKey) bool { return c.keys.Cached(k) == nil })
	})
	return c, port
}

// A probe costs the node it reaches one small packet at most, whoever
// sends it from wherever: a replayed one (from its first source or
// another), a stale one or one from the future cost nothing, and the
// source of a probe never becomes a place the node probes by itself.
func TestReplayedProbeCostsOnePacketAtMost(t *testing.T) {
	peer, k := testKey(t), testKey(t)
	c, _ := probeNode(t, k, peer.Public())
	shared := wire.Precompute(peer, k.Public())
	probe := func(seq uint64, at time.Time) []byte {
		f, err := wire.Seal(nil, peer.Public(), &shared, &wire.Message{Kind: wire.KindProbe, Time: at.UnixNano(), Seq: seq})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	v1, v2 := udpSocket(t), udpSocket(t)
	captured := probe(42, time.Now())
	c.HandleFrames([][]byte{captured}, []netip.AddrPort{sockAddr(v1)}) // the real one
	c.HandleFrames([][]byte{captured, captured}, []netip.AddrPort{sockAddr(v1), sockAddr(v2)})
	c.HandleFrames([][]byte{probe(43, time.Now().Add(-peerClockWindow-time.Second)), probe(44, time.Now().Add(peerClockWindow+time.Second))},
		[]netip.AddrPort{sockAddr(v2), sockAddr(v2)})
	for range 3 {
		c.probeRound(time.Now(), true)
	}
	// A fresh probe from each marks the end: everything sent to v1 and v2
	// before its answer is what the frames above cost.
	c.HandleFrames([][]byte{probe(45, time.Now()), probe(46, time.Now())}, []netip.AddrPort{sockAddr(v1), sockAddr(v2)})
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
	if st := c.Stats(); st.ProbesAnswered.Load() != 3 || st.ProbesRefused.Load() != 4 || st.ProbesSent.Load() != 0 {
		t.Fatalf("answered %d, refused %d, probes sent %d", st.ProbesAnswered.Load(), st.ProbesRefused.Load(), st.ProbesSent.Load())
	}
}

// Probes reordered on the way (a peer probes several of our endpoints at
// once) are answered, each once; a peer's answers are rate-limited.
func TestProbeReorderAndRate(t *testing.T) {
	peer, k := testKey(t), testKey(t)
	c, _ := probeNode(t, k, peer.Public())
	shared := wire.Precompute(peer, k.Public())
	src := sockAddr(udpSocket(t))
	now := time.Now()
	send := func(seq uint64, at time.Time) {
		f, err := wire.Seal(nil, peer.Public(), &shared, &wire.Message{Kind: wire.KindProbe, Time: at.UnixNano(), Seq: seq})
		if err != nil {
			t.Fatal(err)
		}
		c.HandleFrames([][]byte{f}, []netip.AddrPort{src})
	}
	send(1, now)
	send(2, now.Add(-time.Millisecond))         // overtaken on the way: answered
	send(3, now.Add(-probeReorder-time.Second)) // far older than the newest: not
	if got := c.Stats().ProbesAnswered.Load(); got != 2 {
		t.Fatalf("%d answered, want 2", got)
	}
	for i := range 2 * peerAnswerBurst {
		send(uint64(10+i), now.Add(time.Duration(i+1)*time.Second)) // each newer
	}
	// The burst, and what the rate refilled meanwhile.
	limit := uint64(peerAnswerBurst + peerAnswerRate*time.Since(now).Seconds() + 1)
	if got := c.Stats().ProbesAnswered.Load(); got > limit {
		t.Fatalf("%d answered to one peer, want at most %d", got, limit)
	}
}

// Two nodes prove a direct path both ways with one probe: the answer
// carries a challenge, whose answer proves the other way. Neither probes
// the other's source address by itself.
func TestProbeThreeWay(t *testing.T) {
	ka, kb := testKey(t), testKey(t)
	a, _ := probeNode(t, ka, kb.Public())
	b, portB := probeNode(t, kb, ka.Public())
	atB := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), portB)
	a.addCandidates(kb.Public(), []netip.AddrPort{atB}, true)
	a.probeRound(time.Now(), false)
	waitCond(t, "both ways proven", func() bool { return a.Stats().ProbeAcks.Load() == 1 && b.Stats().ProbeAcks.Load() == 1 })
	if st := b.Stats(); st.ProbesAnswered.Load() != 1 || st.ProbesSent.Load() != 0 {
		t.Fatalf("b answered %d, probed %d", st.ProbesAnswered.Load(), st.ProbesSent.Load())
	}
	b.mu.Lock()
	n := len(b.candidates)
	b.mu.Unlock()
	if n != 0 {
		t.Fatalf("b has %d candidate sets from a probe's source", n)
	}
}

// A replayed introduction, or a stale one, does nothing: it would make
// the node probe the endpoints it carries again (and point the peer's
// relay path at the relay id it names).
func TestReplayedIntroductionIgnored(t *testing.T) {
	peer := testKey(t).Public()
	fb := newFakeBridge(t, func(m wire.Message) wire.Message {
		return wire.Message{Kind: wire.KindLookupReply, Seq: m.Seq, Address: m.Address}
	})
	c := startClientWants(t, func(k identity.PublicKey) bool { return k == peer }, fb.config())
	eps := []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:4610")}
	introduced := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.candidates[peer] != nil
	}
	captured := fb.seal(t, wire.Message{Kind: wire.KindIntroduce, Key: peer, ID: 7, Endpoints: eps})
	fb.sendRaw(t, captured)
	waitCond(t, "the introduction", introduced)
	c.mu.Lock()
	clear(c.candidates) // probed and expired
	c.mu.Unlock()

	dropped := c.Stats().Dropped.Load()
	fb.sendRaw(t, captured)
	fb.tell(t, wire.Message{Kind: wire.KindIntroduce, Time: time.Now().Add(-peerClockWindow - time.Second).UnixNano(), Key: peer, ID: 8, Endpoints: eps})
	waitCond(t, "the replay and the stale one dropped", func() bool { return c.Stats().Dropped.Load() == dropped+2 })
	if introduced() {
		t.Fatal("a replayed or stale introduction made the node probe again")
	}
	fb.tell(t, wire.Message{Kind: wire.KindIntroduce, Key: peer, ID: 7, Endpoints: eps}) // a new one works
	waitCond(t, "a new introduction", introduced)
}

// However many endpoints a peer (or a lying bridge) names, and however
// often it is introduced, the node sends probes at a bounded rate per
// peer and in all.
func TestProbesRateLimited(t *testing.T) {
	c, _ := probeNode(t, testKey(t))
	now := time.Now()
	endpoints := func(n int) []netip.AddrPort {
		var eps []netip.AddrPort
		for i := range n {
			eps = append(eps, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 2, 0, byte(1 + i)}), 4610))
		}
		return eps
	}
	peer := testKey(t).Public()
	for range 10 {
		c.addCandidates(peer, endpoints(maxCandidates), true) // introduced again and again
		c.probeRound(now, true)
	}
	if sent := c.Stats().ProbesSent.Load(); sent != peerProbeBurst {
		t.Fatalf("%d probes to one peer at once, want %d", sent, peerProbeBurst)
	}
	now = now.Add(time.Second) // refills peerProbeRate: enough for a round to every candidate
	c.probeRound(now, true)
	if sent := c.Stats().ProbesSent.Load(); sent != peerProbeBurst+maxCandidates {
		t.Fatalf("%d probes a second later, want %d", sent, peerProbeBurst+maxCandidates)
	}

	c2, _ := probeNode(t, testKey(t))
	for range allProbeBurst / maxCandidates * 2 {
		c2.addCandidates(testKey(t).Public(), endpoints(maxCandidates), true)
	}
	c2.probeRound(now, true)
	if sent := c2.Stats().ProbesSent.Load(); sent != allProbeBurst {
		t.Fatalf("%d probes in all at once, want %d", sent, allProbeBurst)
	}
}
