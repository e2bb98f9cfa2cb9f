package bridge

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/bridgetest"
	"github.com/tomoe-net/tomoe/internal/bridge/client"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// A Register stamped more than wire.MaxClockSkew from the bridge's clock is
// refused, either way, with a reason that says which way and by how much,
// and registers nothing: a captured Register is worthless after the
// window, and one stamped far ahead cannot become the newest time that
// locks the key out later. One inside the window is accepted.
func TestRegisterClockWindow(t *testing.T) {
	a := testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public()}})
	na := h.udpNode(a)
	for _, c := range []struct {
		off  time.Duration
		want string
	}{
		{-wire.MaxClockSkew - time.Second, "clock is 2m1s behind the bridge's"},
		{wire.MaxClockSkew + time.Minute, "clock is 3m0s ahead of the bridge's"},
		{-30 * 365 * 24 * time.Hour, "clock is more than 10 years behind"},
	} {
		na.send(wire.Message{Kind: wire.KindRegister, Time: h.clk.Now().Add(c.off).UnixNano()})
		m := na.expect(wire.KindRefused)
		if !strings.Contains(m.Text, c.want) || len(m.Text) > wire.MaxText {
			t.Errorf("stamped %s off: refused with %q, want it to say %q", c.off, m.Text, c.want)
		}
	}
	if nodes := h.s.Nodes(); len(nodes) != 0 {
		t.Fatalf("registered by a stale Register: %+v", nodes)
	}
	// Just inside the window: accepted.
	na.send(wire.Message{Kind: wire.KindRegister, Time: h.clk.Now().Add(-wire.MaxClockSkew + time.Second).UnixNano()})
	na.expect(wire.KindRegistered)
	if st := h.s.Stats(); st.Refused != 3 || st.Registrations != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A Register captured before a bridge restart (which forgot the newest
// time) and replayed from elsewhere after the window cannot re-point the
// node: it is refused, and the refusal goes to where the replay came from.
func TestStaleRegisterReplayedAfterRestart(t *testing.T) {
	a := testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public()}})
	na := h.udpNode(a)
	captured := na.seal(wire.Message{Kind: wire.KindRegister})
	na.sendRaw(captured)
	na.expect(wire.KindRegistered)

	h2 := newSrvHarness(t, ServerConfig{Key: h.key, Allow: []identity.PublicKey{a.Public()}})
	h2.clk.Advance(wire.MaxClockSkew + time.Second)
	thief := h2.udpNode(a) // sends a's frame: it cannot make its own
	thief.sendRaw(captured)
	if m := thief.expect(wire.KindRefused); !strings.Contains(m.Text, "clock") {
		t.Fatalf("refused with %q", m.Text)
	}
	if nodes := h2.s.Nodes(); len(nodes) != 0 {
		t.Fatalf("a Register replayed after the window registered the node at %s", nodes[0].Endpoint)
	}
}

// Lookups and Unregisters stamped outside the window do nothing: a lookup
// captured long ago cannot make the bridge introduce anyone.
func TestStaleLookupAndUnregisterIgnored(t *testing.T) {
	a, b := testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public(), b.Public()}})
	na, nb := h.udpNode(a), h.udpNode(b)
	na.mustRegister()
	nb.mustRegister()
	na.send(wire.Message{Kind: wire.KindLookup, Seq: 1, Address: b.Public().Address(), Time: h.clk.Now().Add(-wire.MaxClockSkew - time.Second).UnixNano()})
	na.send(wire.Message{Kind: wire.KindUnregister, Time: h.clk.Now().Add(wire.MaxClockSkew + time.Second).UnixNano()})
	waitCond(t, "two stale messages", func() bool { return h.s.Stats().Stale == 2 })
	if st := h.s.Stats(); st.Lookups != 0 || st.Introductions != 0 || st.Registered != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// The newest Register time per key outlives a restart: a Register
// captured before it and replayed after it, inside the clock window, is a
// replay still.
func TestRegisterTimesSurviveRestart(t *testing.T) {
	a := testKey(t)
	state := filepath.Join(t.TempDir(), "bridge.json")
	cfg := ServerConfig{Allow: []identity.PublicKey{a.Public()}, StateFile: state}
	h := newSrvHarness(t, cfg)
	na := h.udpNode(a)
	captured := na.seal(wire.Message{Kind: wire.KindRegister})
	na.sendRaw(captured)
	na.expect(wire.KindRegistered)
	na.mustRegister() // a keepalive: the newest time
	h.s.Close()

	cfg.Key = h.key
	h2 := newSrvHarness(t, cfg)
	thief := h2.udpNode(a)
	thief.sendRaw(captured)
	waitCond(t, "the replay seen", func() bool { return h2.s.Stats().Replays == 1 })
	if nodes := h2.s.Nodes(); len(nodes) != 0 {
		t.Fatalf("a Register replayed after a restart registered the node at %s", nodes[0].Endpoint)
	}
	// The node itself goes on, its clock a second later.
	h2.clk.Advance(time.Second)
	na2 := h2.udpNode(a)
	na2.mustRegister()
}

// The times are written on the janitor's timer when they changed (not at
// every keepalive), hold only keys the bridge admits, and forget times
// the clock window has made useless; a crash loses at most one interval.
func TestRegisterTimesWrittenOnATimer(t *testing.T) {
	a := testKey(t)
	state := filepath.Join(t.TempDir(), "bridge.json")
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public()}, StateFile: state})
	path := registerTimesPath(state)
	stored := func() map[identity.PublicKey]time.Time {
		t.Helper()
		var st registerTimesFile
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		out := map[identity.PublicKey]time.Time{}
		for _, rt := range st.Times {
			out[rt.Key] = rt.Time
		}
		return out
	}
	na := h.udpNode(a)
	if m := h.udpNode(testKey(t)).register(""); m.Kind != wire.KindRefused {
		t.Fatalf("stranger: %s", m.Kind)
	}
	for range 3 {
		na.mustRegister()
	}
	h.s.saveTimesDue(h.clk.Now(), false) // the first tick writes
	if got := stored(); len(got) != 1 || got[a.Public()].UnixNano() != na.last {
		t.Fatalf("stored %v, want only a's newest time %d", got, na.last)
	}
	na.mustRegister()
	h.clk.Advance(timesSaveInterval / 2)
	h.s.saveTimesDue(h.clk.Now(), false) // too soon
	if h.s.timesSaves.Load() != 1 {
		t.Fatalf("%d writes, want 1", h.s.timesSaves.Load())
	}
	h.clk.Advance(timesSaveInterval / 2)
	h.s.saveTimesDue(h.clk.Now(), false)
	if got := stored(); h.s.timesSaves.Load() != 2 || got[a.Public()].UnixNano() != na.last {
		t.Fatalf("stored %v after %d writes, want %d", got, h.s.timesSaves.Load(), na.last)
	}
	h.clk.Advance(timesSaveInterval)
	h.s.saveTimesDue(h.clk.Now(), false) // nothing changed: no write
	if h.s.timesSaves.Load() != 2 {
		t.Fatalf("%d writes, want 2", h.s.timesSaves.Load())
	}
	h.clk.Advance(wire.MaxClockSkew)
	h.s.Revoke(a.Public())
	h.s.saveTimesDue(h.clk.Now(), false)
	if got := stored(); len(got) != 0 {
		t.Fatalf("stored %v, want nothing", got)
	}
}

// A corrupt times file stops the bridge with an error that names it and
// says what removing it forgets; a time far ahead locks a key out for no
// longer than the clock window.
func TestRegisterTimesFileChecked(t *testing.T) {
	a := testKey(t)
	state := filepath.Join(t.TempDir(), "bridge.json")
	path := registerTimesPath(state)
	os.WriteFile(path, []byte(`{"version":1,"times":[{"time":"2026-03-01T12:00:00Z"}]}`), 0o600)
	_, err := NewServer(ServerConfig{Key: testKey(t), StateFile: state, Sender: &discardSender{}})
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "Register time") {
		t.Fatalf("corrupt times file: %v", err)
	}
	os.WriteFile(path, []byte(`{"version":1,"times":[{"key":"`+a.Public().String()+`","time":"2999-01-01T00:00:00Z"}]}`), 0o600)
	s, err := NewServer(ServerConfig{Key: testKey(t), StateFile: state, Sender: &discardSender{}, Allow: []identity.PublicKey{a.Public()}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, limit := s.lastTime[a.Public()], time.Now().Add(wire.MaxClockSkew).UnixNano(); got > limit {
		t.Fatalf("a time in 2999 loaded as %d, beyond the window's end %d", got, limit)
	}
}

// A node whose clock is off learns why the bridge refuses it: the reason
// is its bridge's error in `tomoe status`, not silence.
func TestClockRefusalReachesNodeStatus(t *testing.T) {
	nodeKey := testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{nodeKey.Public()}})
	h.clk.AdvanceTo(time.Now().Add(-time.Hour)) // the client's clock (the real one) is an hour ahead
	bind, _ := bridgetest.OpenBind(t)
	bind.SetPrivateKey(nodeKey)
	c := client.New(client.Config{Key: nodeKey, Bind: bind, Bridges: []client.BridgeConfig{{Endpoint: h.addr().String(), Key: h.key.Public()}}})
	bind.SetFrameHandler(c)
	c.Start()
	t.Cleanup(c.Close)
	waitCond(t, "refused", func() bool { return c.Status()[0].State == "refused" })
	if st := c.Status()[0]; !strings.Contains(st.Error, "clock is 1h0m") || !strings.Contains(st.Error, "ahead of the bridge's") {
		t.Fatalf("status %+v: the error does not say the clock is off", st)
	}
}

// The newest times are kept for admitted keys only, and only while the
// clock window needs them, file or not: the map holds the keys active in
// the last minutes.
func TestRegisterTimesBounded(t *testing.T) {
	a := testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public()}})
	h.udpNode(a).mustRegister()
	for range 3 {
		if m := h.udpNode(testKey(t)).register(""); m.Kind != wire.KindRefused {
			t.Fatalf("stranger: %s", m.Kind)
		}
	}
	held := func() int {
		h.s.mu.RLock()
		defer h.s.mu.RUnlock()
		return len(h.s.lastTime)
	}
	if n := held(); n != 1 {
		t.Fatalf("%d times held, want 1 (strangers are not remembered)", n)
	}
	h.clk.Advance(wire.MaxClockSkew + time.Second)
	h.s.saveTimesDue(h.clk.Now(), false)
	if n := held(); n != 0 {
		t.Fatalf("%d times held after the window", n)
	}
}
