package client

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/bridgetest"
	"github.com/tomoe-net/tomoe/internal/bridge/keycache"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
)

var loopbackHosts atomic.Uint32

// udpSocket is a test socket on its own loopback address in 127.0.0.0/8.
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

const floodFrames = 4000

// The review of issue 9 (finding 3): a control frame claiming a sender
// whose shared key was not cached cost an X25519 on the UDP receive
// goroutine, outside every budget but one per /64: 4,000 forged frames
// from 4,000 /64s cost 4,000 X25519 there (0.4 s here, the goroutine
// that carries every peer's data). Now the receive goroutine does none;
// the worker does at most the node-wide budget; frames claiming a key
// known in advance (a bridge, a static peer, a key a rule names) cost
// none at all.
func TestForgedControlFramesClient(t *testing.T) {
	node, bridgeKey, known := testKey(t), testKey(t).Public(), testKey(t).Public()
	bind, _ := bridgetest.OpenBind(t)
	bind.SetPrivateKey(node)
	// A node with a "*" rule: it would talk to any key.
	c := New(Config{Key: node, Bind: bind, Bridges: []BridgeConfig{{Endpoint: "127.0.0.1:9", Key: bridgeKey}},
		Wants: func(identity.PublicKey) bool { return true }})
	bind.SetFrameHandler(c)
	t.Cleanup(c.Close)
	c.SetKnownKeys([]identity.PublicKey{known})
	st := c.Stats()

	t.Run("any key", func(t *testing.T) {
		onReceive := bridgetest.X25519Here(c.keys)
		x0, q0, l0, d0 := st.X25519.Load(), st.Strangers.Load(), st.StrangersLimited.Load(), st.Dropped.Load()
		frames, srcs := bridgetest.ForgedFlood(floodFrames, func(int) identity.PublicKey { return bridgetest.RandomKey() })
		start := time.Now()
		c.HandleFrames(frames, srcs)
		took := time.Since(start)
		if n := onReceive(); n != 0 {
			t.Fatalf("%d X25519 on the receive goroutine for %d forged frames", n, floodFrames)
		}
		waitCond(t, "the worker to try what was queued", func() bool { return st.Dropped.Load()-d0 == st.Strangers.Load()-q0 })
		x := st.X25519.Load() - x0
		if limit := uint64(keycache.StrangerBurst + keycache.StrangerRate*time.Since(start).Seconds() + 1); x > limit {
			t.Fatalf("%d forged frames cost %d X25519 on the worker, want at most %d", floodFrames, x, limit)
		}
		t.Logf("%d forged frames claiming %d keys: %v on the receive goroutine (%v a frame, no X25519); %d X25519 on the worker; %d dropped over the budgets",
			floodFrames, floodFrames, took, took/floodFrames, x, st.StrangersLimited.Load()-l0)
	})
	t.Run("known keys", func(t *testing.T) {
		waitCond(t, "the known key's shared key computed ahead", func() bool { return c.keys.Cached(known) != nil })
		onReceive := bridgetest.X25519Here(c.keys)
		x0 := st.X25519.Load()
		frames, srcs := bridgetest.ForgedFlood(floodFrames, func(i int) identity.PublicKey { return []identity.PublicKey{bridgeKey, known}[i%2] })
		start := time.Now()
		c.HandleFrames(frames, srcs)
		took := time.Since(start)
		if x := st.X25519.Load() - x0; x != 0 || onReceive() != 0 {
			t.Fatalf("%d forged frames claiming a bridge or a known key cost %d X25519 (%d on the receive goroutine)", floodFrames, x, onReceive())
		}
		t.Logf("%d forged frames claiming known keys: no X25519, %v on the receive goroutine (%v a frame)", floodFrames, took, took/floodFrames)
	})
}

// Frames from a sender not known in advance still work: the worker opens
// the first, learns the key, and the next ones open on the receive
// goroutine. A bridge's worker registers a node whose key a join token
// enrols, and keeps its key from then on.
func TestStrangerFramesStillServed(t *testing.T) {
	t.Run("client", func(t *testing.T) {
		peer, k := testKey(t), testKey(t)
		bind, _ := bridgetest.OpenBind(t)
		bind.SetPrivateKey(k)
		c := New(Config{Key: k, Bind: bind, Wants: func(identity.PublicKey) bool { return true }})
		bind.SetFrameHandler(c)
		t.Cleanup(c.Close)
		onReceive := bridgetest.X25519Here(c.keys)
		shared := wire.Precompute(peer, k.Public())
		pc := udpSocket(t)
		for seq := range uint64(3) {
			f, _ := wire.Seal(nil, peer.Public(), &shared, &wire.Message{Kind: wire.KindProbe, Time: time.Now().UnixNano(), Seq: seq + 1})
			c.HandleFrames([][]byte{f}, []netip.AddrPort{sockAddr(pc)})
			waitCond(t, "the probe answered", func() bool { return c.Stats().ProbesAnswered.Load() == seq+1 })
		}
		if st := c.Stats(); st.X25519.Load() != 1 || st.Strangers.Load() != 1 || onReceive() != 0 {
			t.Fatalf("3 probes from a new peer: %d X25519 (%d on the receive goroutine), %d through the worker; want 1, 0, 1",
				st.X25519.Load(), onReceive(), st.Strangers.Load())
		}
	})
}

// TestFramesAfterClose: a receive goroutine may still hand over frames
// while the node shuts its bridge role or client down. Before the rate
// limit had no Close, the first frame from a new source after Close
// panicked with "send on closed channel" (wireguard-go's ratelimiter),
// as a CI run once did from transport.(*Bind).screen.
func TestFramesAfterClose(t *testing.T) {
	stranger := testKey(t)
	t.Run("client", func(t *testing.T) {
		bridgeKey := testKey(t)
		bind, _ := bridgetest.OpenBind(t)
		k := testKey(t)
		bind.SetPrivateKey(k)
		c := New(Config{Key: k, Bridges: []BridgeConfig{{Endpoint: "127.0.0.1:9", Key: bridgeKey.Public()}}, Bind: bind,
			Wants: func(identity.PublicKey) bool { return true }})
		c.Start()
		c.Close()
		// A probe from a node this one would talk to, whose key is not
		// cached yet: it goes through the per-source rate limit.
		f, err := wire.Seal(nil, stranger.Public(), ptr(wire.Precompute(stranger, k.Public())), &wire.Message{Kind: wire.KindProbe, Seq: 1})
		if err != nil {
			t.Fatal(err)
		}
		c.HandleFrames([][]byte{f}, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:4610")})
	})
}

func ptr[T any](v T) *T { return &v }

// Frames from strangers handed over while the client or bridge closes,
// and after, are dropped: the worker stops within Close, nothing panics,
// and no goroutine is left (goleak, TestMain).
func TestStrangerFramesDuringClose(t *testing.T) {
	frames, srcs := bridgetest.ForgedFlood(64, func(int) identity.PublicKey { return bridgetest.RandomKey() })
	t.Run("client", func(t *testing.T) {
		bind, _ := bridgetest.OpenBind(t)
		k := testKey(t)
		bind.SetPrivateKey(k)
		c := New(Config{Key: k, Bind: bind, Wants: func(identity.PublicKey) bool { return true }})
		bridgetest.HandleWhileClosing(c.HandleFrames, c.Close, frames, srcs)
		if c.strangers.Submit(frames[0], srcs[0], time.Now()) {
			t.Fatal("a frame was queued after Close")
		}
	})
}
