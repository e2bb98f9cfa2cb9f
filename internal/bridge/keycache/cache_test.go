package keycache

import (
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/bridgetest"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/clock"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// Pins: computed in order by the worker, never flushed by learned keys,
// replaced as a set (a node's rules change), and a key unpinned while it
// waits is not pinned when its computation ends.
func TestKeyCachePins(t *testing.T) {
	c := New(bridgetest.Key(t), 2, nil)
	a, b, d := bridgetest.RandomKey(), bridgetest.RandomKey(), bridgetest.RandomKey()
	c.Pin([]identity.PublicKey{a, b})
	if k, ok := c.nextPending(); !ok || k != a {
		t.Fatalf("next pending %s %v, want a", k.ShortString(), ok)
	}
	c.PinComputed(a, c.Compute(a))
	c.SetPinned([]identity.PublicKey{a, d}, nil) // b no longer wanted
	for k, ok := c.nextPending(); ok; k, ok = c.nextPending() {
		if k == b {
			t.Fatal("an unpinned key is still pending")
		}
		c.PinComputed(k, c.Compute(k))
	}
	c.PinComputed(b, c.Compute(b)) // a late result for b
	if c.Cached(a) == nil || c.Cached(d) == nil || c.Cached(b) != nil {
		t.Fatalf("cached: a %v, d %v, b %v; want a and d", c.Cached(a) != nil, c.Cached(d) != nil, c.Cached(b) != nil)
	}
	for range 5 { // learned keys overflow their bound: the pins stay
		k := bridgetest.RandomKey()
		c.Keep(k, c.Compute(k))
	}
	if c.Cached(a) == nil || c.Cached(d) == nil {
		t.Fatal("learned keys flushed a pinned one")
	}
	c.Forget(a)
	if c.Cached(a) != nil {
		t.Fatal("a forgotten key is still cached")
	}
}

// Seal stamps what it seals with the cache's clock, which the bridge
// checks the stamp against; a time the caller set stays.
func TestSealStampsWithTheCachesClock(t *testing.T) {
	priv, peer := bridgetest.Key(t), bridgetest.Key(t)
	c := New(priv, 2, nil)
	clk := clock.NewManual(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	c.SetClock(clk)
	clk.Advance(time.Minute)
	shared := wire.Precompute(peer, priv.Public())
	open := func(m wire.Message) wire.Message {
		t.Helper()
		f, err := c.Seal(peer.Public(), nil, m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := wire.Open(f, &shared)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := open(wire.Message{Kind: wire.KindLookup}); got.Time != clk.Now().UnixNano() {
		t.Fatalf("stamped %v, want the clock's %v", time.Unix(0, got.Time), clk.Now())
	}
	if got := open(wire.Message{Kind: wire.KindLookup, Time: 7}); got.Time != 7 {
		t.Fatalf("stamped %d over the caller's 7", got.Time)
	}
}
