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
// burst of probeBurstCount fast rounds (one every probeBurst), then a
// round every probeInterval only.
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
	// Round i runs at i*probeBurst: rounds 1 to burstRounds probe (the
	// burst; the first is a slow round too, as none came before), then
	// every probeInterval/probeBurst-th (the slow ones).
	const burstRounds = 8 // nat's probeBurstCount
	probes := func(round int) int {
		n := min(round, burstRounds)
		for r := burstRounds + 1; r <= round; r++ {
			if (r-1)%int(probeInterval/probeBurst) == 0 {
				n++
			}
		}
		return n
	}
	const rounds = 32
	for i := 1; i <= rounds; i++ {
		clk.Advance(probeBurst)
		// The loop took tick i, so it is done with tick i-1: its probes
		// are counted, tick i's may be.
		waitCond(t, "the probe loop took its tick", func() bool { return clk.Unread() == 0 })
		sent := int(c.Stats().ProbesSent.Load())
		if sent != probes(i-1) && sent != probes(i) {
			t.Fatalf("round %d (%v): %d probes sent, want %d (or %d)", i, time.Duration(i)*probeBurst, sent, probes(i-1), probes(i))
		}
	}
	// The burst, then the slow rounds at 1.1 s, 2.1 s and 3.1 s.
	if sent := c.Stats().ProbesSent.Load(); sent != burstRounds+3 {
		t.Fatalf("%d probes in %v, want %d", sent, rounds*probeBurst, burstRounds+3)
	}
}
