package bridge

import (
	"net/netip"
	"testing"

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
		f, err := Seal(nil, stranger.Public(), ptr(Precompute(stranger, h.key.Public())), &Message{Kind: KindRegister, Time: 1})
		if err != nil {
			t.Fatal(err)
		}
		h.s.HandleFrames([][]byte{f}, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:4610")})
	})
	t.Run("client", func(t *testing.T) {
		bridgeKey := testKey(t)
		bind, _ := openBind(t)
		k := testKey(t)
		bind.SetPrivateKey(k)
		c := NewClient(ClientConfig{Key: k, Bridges: []BridgeConfig{{Endpoint: "127.0.0.1:9", Key: bridgeKey.Public()}}, Bind: bind,
			Wants: func(identity.PublicKey) bool { return true }})
		c.Start()
		c.Close()
		// A probe from a node this one would talk to, whose key is not
		// cached yet: it goes through the per-source rate limit.
		f, err := Seal(nil, stranger.Public(), ptr(Precompute(stranger, k.Public())), &Message{Kind: KindProbe, Seq: 1})
		if err != nil {
			t.Fatal(err)
		}
		c.HandleFrames([][]byte{f}, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:4610")})
	})
}

func ptr[T any](v T) *T { return &v }
