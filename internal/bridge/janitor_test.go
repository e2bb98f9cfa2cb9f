package bridge

import (
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/clock"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// The janitor runs on the bridge's clock: a node that stops sending
// keepalives is expired once that clock passes registrationTTL, at the
// next tick, without waiting a janitorInterval of real time.
func TestJanitorExpiresOnTheBridgesClock(t *testing.T) {
	a, b := testKey(t), testKey(t)
	clk := clock.NewManual(testStart)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public(), b.Public()}, Clock: clk})
	began := time.Now()
	na, nb := h.udpNode(a), h.udpNode(b)
	na.mustRegister()
	nb.mustRegister()
	// Two tickers: the janitor's and the organisation documents' retries.
	waitCond(t, "the janitor's ticker armed", func() bool { return clk.Pending() == 2 })
	for range registrationTTL / janitorInterval {
		clk.Advance(janitorInterval)
		nb.mustRegister() // b keeps its registration alive; a is silent
		waitCond(t, "the janitor took its tick", func() bool { return clk.Unread() == 0 })
	}
	clk.Advance(janitorInterval)
	waitCond(t, "a expired", func() bool { return h.s.Stats().Expired == 1 })
	if nodes := h.s.Nodes(); len(nodes) != 1 || nodes[0].PublicKey != b.Public() {
		t.Fatalf("nodes %+v, want only b", nodes)
	}
	if d := time.Since(began); d >= janitorInterval {
		t.Fatalf("a expired after %v of real time: the janitor did not run on the bridge's clock", d)
	}
}
