package client

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/bridgetest"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/clock"
)

// testStart is where the tests' clocks start: months from the real time,
// so that anything read from the real clock instead shows.
var testStart = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// startClockedClient starts a client on clk with the bridges given, and
// waits until every bridge registered it and its timers are armed.
func startClockedClient(t *testing.T, clk *clock.Manual, bridges ...BridgeConfig) *Client {
	t.Helper()
	bind, _ := bridgetest.OpenBind(t)
	k := testKey(t)
	bind.SetPrivateKey(k)
	c := New(Config{Key: k, Bridges: bridges, Bind: bind, Clock: clk})
	bind.SetFrameHandler(c)
	c.Start()
	t.Cleanup(c.Close)
	waitCond(t, "registered with every bridge", func() bool { return c.registeredCount() == len(bridges) })
	// The probe ticker, and a keepalive timer per bridge.
	waitCond(t, "the client's timers armed", func() bool { return clk.Pending() == 1+len(bridges) })
	return c
}

// A lookup nobody answers is asked again after lookupRetry and given up
// after lookupTimeout, both of the client's clock: the retry goes out
// when the clock says so, stamped with its time, and the lookup ends
// without waiting the timeout in real time.
func TestLookupRetryAndTimeoutOnTheClock(t *testing.T) {
	clk := clock.NewManual(testStart)
	asked := make(chan time.Time, 8)
	fb := newFakeBridge(t, func(m wire.Message) wire.Message {
		asked <- time.Unix(0, m.Time)
		return wire.Message{} // not an answer: dropped
	})
	c := startClockedClient(t, clk, fb.config())
	began := time.Now()
	type result struct {
		f   Found
		err error
	}
	done := make(chan result, 1)
	go func() {
		f, err := c.Lookup(context.Background(), testKey(t).Public().Address())
		done <- result{f, err}
	}()
	next := func() time.Time {
		t.Helper()
		select {
		case at := <-asked:
			return at
		case <-time.After(5 * time.Second):
			t.Fatal("timed out waiting for the lookup to be asked")
			return time.Time{}
		}
	}
	if at := next(); !at.Equal(testStart) {
		t.Fatalf("the lookup was stamped %v, want the clock's %v", at, testStart)
	}
	waitCond(t, "the lookup's retry and timeout armed", func() bool { return clk.Pending() == 4 })
	clk.Advance(lookupRetry)
	if at := next(); !at.Equal(testStart.Add(lookupRetry)) {
		t.Fatalf("the retry was stamped %v, want %v", at, testStart.Add(lookupRetry))
	}
	select {
	case r := <-done:
		t.Fatalf("the lookup ended before its timeout: %+v", r)
	default:
	}
	clk.Advance(lookupTimeout - lookupRetry)
	var r result
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the lookup did not end at its timeout")
	}
	if r.err == nil || !strings.Contains(r.err.Error(), "no bridge answered") {
		t.Fatalf("lookup: %+v, want no answer", r)
	}
	if d := time.Since(began); d >= lookupTimeout {
		t.Fatalf("the lookup took %v of real time: its timeout is not on the client's clock", d)
	}
	if n := len(asked); n != 0 {
		t.Fatalf("%d more asks, want one retry only", n)
	}
}

// A registration lapses after registrationLapse keepalive intervals of
// the client's clock without an answer.
func TestRegistrationLapsesOnTheClock(t *testing.T) {
	clk := clock.NewManual(testStart)
	fb := newFakeBridge(t, func(m wire.Message) wire.Message { return wire.Message{} })
	c := startClockedClient(t, clk, fb.config())
	began := time.Now()
	fb.mute.Store(true)
	for i := 1; i <= registrationLapse; i++ {
		clk.Advance(defaultKeepalive) // the fake bridge told an interval of 15 s
		waitCond(t, "the keepalive sent and its timer armed again", func() bool {
			return fb.lastRegister() == testStart.Add(time.Duration(i)*defaultKeepalive).UnixNano() && clk.Pending() == 2
		})
		if st := c.Status()[0]; st.State != "registered" {
			t.Fatalf("%s (%s) after %d keepalives unanswered, want still registered", st.State, st.Error, i)
		}
	}
	clk.Advance(defaultKeepalive)
	waitCond(t, "the registration lapsed", func() bool { return c.Status()[0].State == "registering" })
	if d := time.Since(began); d >= defaultKeepalive {
		t.Fatalf("lapsed after %v of real time: the keepalives are not on the client's clock", d)
	}
}

// The probe rounds run on the client's clock: after an introduction, a
// burst of probeBurstCount fast rounds (one every probeBurst), then, once
// the prober has no burst on, a round every probeInterval only (the loop
// slows its ticker down: an idle node wakes once a second, not ten times).
func TestProbeScheduleOnTheClock(t *testing.T) {
	clk := clock.NewManual(testStart)
	c := startClockedClient(t, clk)
	peer := bridgetest.Key(t).Public()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	c.Probe(Found{Key: peer, Endpoints: []netip.AddrPort{pc.LocalAddr().(*net.UDPAddr).AddrPort()}, loopback: true})
	const burstRounds = 8 // nat's probeBurstCount
	step := func(i int) int {
		clk.Advance(probeBurst)
		// The loop took tick i, so it is done with tick i-1: its probes
		// are counted, tick i's may be.
		waitCond(t, "the probe loop took its tick", func() bool { return clk.Unread() == 0 })
		return int(c.Stats().ProbesSent.Load())
	}
	// Round i of the burst runs at i*probeBurst and probes.
	for i := 1; i <= burstRounds; i++ {
		if sent := step(i); sent != i && sent != i-1 {
			t.Fatalf("burst round %d: %d probes sent, want %d (or %d)", i, sent, i, i-1)
		}
	}
	// Then one slow round a second: two by 3.2 s (about 1.9 s and 2.9 s,
	// a second after the loop saw the burst over), ten more in the next
	// ten seconds.
	for i := burstRounds + 1; i <= 32; i++ {
		step(i)
	}
	waitCond(t, "the last slow round's probe counted", func() bool { return c.Stats().ProbesSent.Load() >= burstRounds+2 })
	if sent := c.Stats().ProbesSent.Load(); sent != burstRounds+2 {
		t.Fatalf("%d probes by %v, want %d", sent, 32*probeBurst, burstRounds+2)
	}
	for i := 33; i <= 132; i++ {
		step(i)
	}
	waitCond(t, "the last slow round's probe counted", func() bool { return c.Stats().ProbesSent.Load() >= burstRounds+12 })
	if sent := c.Stats().ProbesSent.Load(); sent != burstRounds+12 {
		t.Fatalf("%d probes by %v, want %d: one slow round a second", sent, 132*probeBurst, burstRounds+12)
	}
	// A new introduction (another peer's) brings the fast rounds back.
	pc2, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc2.Close() })
	c.Probe(Found{Key: bridgetest.Key(t).Public(), Endpoints: []netip.AddrPort{pc2.LocalAddr().(*net.UDPAddr).AddrPort()}, loopback: true})
	before := c.Stats().ProbesSent.Load()
	for range 6 { // 0.6 s: at most one slow round
		step(0)
	}
	waitCond(t, "fast rounds again", func() bool { return c.Stats().ProbesSent.Load() >= before+4 })
}
