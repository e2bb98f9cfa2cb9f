package keycache

import (
	"testing"

	"github.com/tomoe-net/tomoe/internal/bridge/bridgetest"
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
