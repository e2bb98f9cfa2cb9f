package bridge

import (
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/bridgetest"
	"github.com/tomoe-net/tomoe/internal/bridge/keycache"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
)

const floodFrames = 4000

// The same on a bridge (finding 3): the receive goroutine opens only the
// frames of admitted keys, whose shared keys it computed ahead.
func TestForgedControlFramesBridge(t *testing.T) {
	bk, admitted := testKey(t), testKey(t).Public()
	s, err := NewServer(ServerConfig{Key: bk, Allow: []identity.PublicKey{admitted}, Sender: &discardSender{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	t.Run("any key", func(t *testing.T) {
		onReceive := bridgetest.X25519Here(s.keys)
		st0 := s.Stats()
		frames, srcs := bridgetest.ForgedFlood(floodFrames, func(int) identity.PublicKey { return bridgetest.RandomKey() })
		start := time.Now()
		s.HandleFrames(frames, srcs)
		took := time.Since(start)
		if n := onReceive(); n != 0 {
			t.Fatalf("%d X25519 on the receive goroutine for %d forged frames", n, floodFrames)
		}
		waitCond(t, "the worker to try what was queued", func() bool {
			st := s.Stats()
			return st.BadControl-st0.BadControl == st.StrangersQueued-st0.StrangersQueued
		})
		st := s.Stats()
		x := st.X25519 - st0.X25519
		if limit := uint64(keycache.StrangerBurst + keycache.StrangerRate*time.Since(start).Seconds() + 1); x > limit {
			t.Fatalf("%d forged frames cost %d X25519 on the worker, want at most %d", floodFrames, x, limit)
		}
		t.Logf("%d forged frames claiming %d keys: %v on the receive goroutine (%v a frame, no X25519); %d X25519 on the worker; %d dropped over the budgets",
			floodFrames, floodFrames, took, took/floodFrames, x, st.StrangersLimited-st0.StrangersLimited)
	})
	t.Run("admitted key", func(t *testing.T) {
		waitCond(t, "the admitted key's shared key computed ahead", func() bool { return s.keys.Cached(admitted) != nil })
		onReceive := bridgetest.X25519Here(s.keys)
		st0 := s.Stats()
		frames, srcs := bridgetest.ForgedFlood(floodFrames, func(int) identity.PublicKey { return admitted })
		start := time.Now()
		s.HandleFrames(frames, srcs)
		took := time.Since(start)
		if st := s.Stats(); st.X25519 != st0.X25519 || onReceive() != 0 || st.BadControl-st0.BadControl != floodFrames {
			t.Fatalf("%d forged frames claiming an admitted key: %d X25519 (%d on the receive goroutine), %d bad",
				floodFrames, st.X25519-st0.X25519, onReceive(), st.BadControl-st0.BadControl)
		}
		t.Logf("%d forged frames claiming an admitted key: no X25519, %v on the receive goroutine (%v a frame)", floodFrames, took, took/floodFrames)
	})
}

// A stranger's refused Register costs the bridge one X25519, not two: the
// refusal is sealed with the key that opened it.
func TestRefusalReusesSharedKey(t *testing.T) {
	h := newSrvHarness(t, ServerConfig{})
	if m := h.udpNode(testKey(t)).register(""); m.Kind != wire.KindRefused {
		t.Fatalf("got %s", m.Kind)
	}
	if x := h.s.Stats().X25519; x != 1 {
		t.Fatalf("%d X25519 for one refused Register", x)
	}
}

// Frames from a sender not known in advance still work: the worker opens
// the first, learns the key, and the next ones open on the receive
// goroutine. A bridge's worker registers a node whose key a join token
// enrols, and keeps its key from then on.
func TestStrangerFramesStillServed(t *testing.T) {
	t.Run("bridge", func(t *testing.T) {
		h := newSrvHarness(t, ServerConfig{})
		tok, _, err := h.s.CreateToken(1, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		n := h.udpNode(testKey(t))
		if m := n.register(tok); m.Kind != wire.KindRegistered {
			t.Fatalf("enrolment: %s %q", m.Kind, m.Text)
		}
		x := h.s.Stats().X25519
		n.mustRegister()
		n.send(wire.Message{Kind: wire.KindLookup, Seq: 1, Address: n.pub.Address()})
		n.expect(wire.KindLookupReply)
		if st := h.s.Stats(); st.X25519 != x || st.StrangersQueued != 1 || h.s.keys.Cached(n.pub) == nil {
			t.Fatalf("after enrolment: %d more X25519, %d frames through the worker, key cached %v",
				st.X25519-x, st.StrangersQueued, h.s.keys.Cached(n.pub) != nil)
		}
	})
}
