package bridge

import (
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// A Register stamped more than maxClockSkew from the bridge's clock is
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
		{-maxClockSkew - time.Second, "clock is 2m1s behind the bridge's"},
		{maxClockSkew + time.Minute, "clock is 3m0s ahead of the bridge's"},
		{-30 * 365 * 24 * time.Hour, "clock is more than 10 years behind"},
	} {
		na.send(Message{Kind: KindRegister, Time: h.clk.Now().Add(c.off).UnixNano()})
		m := na.expect(KindRefused)
		if !strings.Contains(m.Text, c.want) || len(m.Text) > maxText {
			t.Errorf("stamped %s off: refused with %q, want it to say %q", c.off, m.Text, c.want)
		}
	}
	if nodes := h.s.Nodes(); len(nodes) != 0 {
		t.Fatalf("registered by a stale Register: %+v", nodes)
	}
	// Just inside the window: accepted.
	na.send(Message{Kind: KindRegister, Time: h.clk.Now().Add(-maxClockSkew + time.Second).UnixNano()})
	na.expect(KindRegistered)
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
	captured := na.seal(Message{Kind: KindRegister})
	na.sendRaw(captured)
	na.expect(KindRegistered)

	h2 := newSrvHarness(t, ServerConfig{Key: h.key, Allow: []identity.PublicKey{a.Public()}})
	h2.clk.Advance(maxClockSkew + time.Second)
	thief := h2.udpNode(a) // sends a's frame: it cannot make its own
	thief.sendRaw(captured)
	if m := thief.expect(KindRefused); !strings.Contains(m.Text, "clock") {
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
	na.send(Message{Kind: KindLookup, Seq: 1, Address: b.Public().Address(), Time: h.clk.Now().Add(-maxClockSkew - time.Second).UnixNano()})
	na.send(Message{Kind: KindUnregister, Time: h.clk.Now().Add(maxClockSkew + time.Second).UnixNano()})
	waitCond(t, "two stale messages", func() bool { return h.s.Stats().Stale == 2 })
	if st := h.s.Stats(); st.Lookups != 0 || st.Introductions != 0 || st.Registered != 2 {
		t.Fatalf("stats %+v", st)
	}
}
