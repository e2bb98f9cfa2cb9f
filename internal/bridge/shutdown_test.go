package bridge

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/bridgetest"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// TestFramesAfterClose: a receive goroutine may still hand over frames
// while the node shuts its bridge role or client down. Before the rate
// limit had no Close, the first frame from a new source after Close
// panicked with "send on closed channel" (wireguard-go's ratelimiter),
// as a CI run once did from transport.(*Bind).screen.
func TestFramesAfterClose(t *testing.T) {
	stranger := testKey(t)
	t.Run("server", func(t *testing.T) {
		h := newSrvHarness(t, ServerConfig{})
		h.s.Close()
		f, err := wire.Seal(nil, stranger.Public(), ptr(wire.Precompute(stranger, h.key.Public())), &wire.Message{Kind: wire.KindRegister, Time: 1})
		if err != nil {
			t.Fatal(err)
		}
		h.s.HandleFrames([][]byte{f}, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:4610")})
	})
}

func ptr[T any](v T) *T { return &v }

// Frames from strangers handed over while the client or bridge closes,
// and after, are dropped: the worker stops within Close, nothing panics,
// and no goroutine is left (goleak, TestMain).
func TestStrangerFramesDuringClose(t *testing.T) {
	frames, srcs := bridgetest.ForgedFlood(64, func(int) identity.PublicKey { return bridgetest.RandomKey() })
	t.Run("bridge", func(t *testing.T) {
		s, err := NewServer(ServerConfig{Key: testKey(t), Sender: &discardSender{}})
		if err != nil {
			t.Fatal(err)
		}
		bridgetest.HandleWhileClosing(s.HandleFrames, func() { s.Close() }, frames, srcs)
		if s.strangers.Submit(frames[0], srcs[0], time.Now()) {
			t.Fatal("a frame was queued after Close")
		}
	})
}
