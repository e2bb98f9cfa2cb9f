package nat

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/bridgetest"
	"github.com/tomoe-net/tomoe/internal/bridge/keycache"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/clock"
)

// A clock months from the real one: a prober that read the real time
// anywhere would see every time here as stale or far ahead.
func testClock() *clock.Manual {
	return clock.NewManual(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
}

// A peer's candidates live candidateLifetime of the prober's clock after
// its introduction, and are dropped by the first round after that.
func TestCandidatesExpireByTheClock(t *testing.T) {
	clk := testClock()
	k := bridgetest.Key(t)
	keys := keycache.New(k, 16, nil)
	keys.SetClock(clk)
	p := NewProber(Config{Paths: &sockPaths{pc: udpSocket(t)}, Sealer: keys, Clock: clk})
	peer := bridgetest.Key(t).Public()
	ep := sockAddr(udpSocket(t))
	p.AddCandidates(peer, []netip.AddrPort{ep}, true)
	clk.Advance(candidateLifetime - time.Second)
	p.Round(clk.Now(), true)
	if sent := p.stats.Sent.Load(); sent != 1 {
		t.Fatalf("%d probes a second before the candidates expire, want 1", sent)
	}
	clk.Advance(2 * time.Second)
	p.Round(clk.Now(), true)
	if sent, left := p.stats.Sent.Load(), p.Candidates(); sent != 1 || len(left) != 0 {
		t.Fatalf("after the lifetime: %d probes sent, candidates %v; want 1 and none", sent, left)
	}
}

// The answer to a probe is taken within probeAnswerWindow of the
// prober's clock, and not after it.
func TestProbeAnswerWindowByTheClock(t *testing.T) {
	clk := testClock()
	p := NewProber(Config{Clock: clk})
	peer := bridgetest.Key(t).Public()
	to := netip.MustParseAddrPort("192.0.2.1:4610")
	early := p.newProbe(peer, to, clk.Now(), false)
	late := p.newProbe(peer, to, clk.Now(), false)
	clk.Advance(probeAnswerWindow - time.Second)
	if _, ok := p.takeProbe(early, peer, to); !ok {
		t.Fatal("an answer within the window was not taken")
	}
	clk.Advance(2 * time.Second)
	if _, ok := p.takeProbe(late, peer, to); ok {
		t.Fatal("an answer after the window was taken")
	}
}

// A peer's probe is fresh by the prober's clock: one stamped at the
// clock's time is answered, one stamped a ClockWindow before it is not.
func TestProbeFreshnessByTheClock(t *testing.T) {
	clk := testClock()
	peer, k := bridgetest.Key(t), bridgetest.Key(t)
	p := NewProber(Config{Paths: &sockPaths{pc: udpSocket(t)}, Sealer: keycache.New(k, 16, nil), Clock: clk})
	shared := wire.Precompute(peer, k.Public())
	src := sockAddr(udpSocket(t))
	for i, at := range []time.Time{clk.Now(), clk.Now().Add(-ClockWindow - time.Second)} {
		f, err := wire.Seal(nil, peer.Public(), &shared, &wire.Message{Kind: wire.KindProbe, Time: at.UnixNano(), Seq: uint64(i + 1)})
		if err != nil {
			t.Fatal(err)
		}
		handFrames(t, p, peer.Public(), &shared, [][]byte{f}, []netip.AddrPort{src})
	}
	if a, r := p.stats.Answered.Load(), p.stats.Refused.Load(); a != 1 || r != 1 {
		t.Fatalf("answered %d, refused %d; want 1 and 1", a, r)
	}
}
