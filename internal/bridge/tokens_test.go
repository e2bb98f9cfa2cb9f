package bridge

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/admission"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
)

func TestTokenEnrolment(t *testing.T) {
	state := filepath.Join(t.TempDir(), "bridge", "state.json")
	h := newSrvHarness(t, ServerConfig{StateFile: state})
	tok, info, err := h.s.CreateToken(2, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(tok))
	if info.ID != hex.EncodeToString(sum[:])[:8] || info.UsesLeft != 2 || !info.Expires.Equal(h.clk.Now().Add(time.Hour)) {
		t.Fatalf("token info %+v", info)
	}
	if got := h.s.Tokens(); len(got) != 1 || got[0] != info {
		t.Fatalf("Tokens() = %+v", got)
	}

	// Stored hashed: neither the token nor its random part is in the file.
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(tok)) || bytes.Contains(b, []byte(strings.TrimPrefix(tok, admission.TokenPrefix))) {
		t.Fatalf("state file holds the token:\n%s", b)
	}
	if !bytes.Contains(b, []byte(hex.EncodeToString(sum[:]))) {
		t.Fatalf("state file lacks the token's hash:\n%s", b)
	}
	if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v %v", fi.Mode(), err)
	}

	k1, k2, k3 := testKey(t), testKey(t), testKey(t)
	n1, n2, n3 := h.udpNode(k1), h.udpNode(k2), h.udpNode(k3)
	if m := n1.register("tomoe-join-wrong"); m.Kind != wire.KindRefused || m.Text != admission.RefuseBadToken {
		t.Fatalf("wrong token: %s %q", m.Kind, m.Text)
	}
	if m := n1.register(tok); m.Kind != wire.KindRegistered {
		t.Fatalf("token: %s %q", m.Kind, m.Text)
	}
	n1.mustRegister() // enrolled: no token needed any more, and no use spent
	if m := n2.register(tok); m.Kind != wire.KindRegistered {
		t.Fatalf("second use: %s %q", m.Kind, m.Text)
	}
	if m := n3.register(tok); m.Kind != wire.KindRefused || m.Text != admission.RefuseUsedUp {
		t.Fatalf("third use: %s %q", m.Kind, m.Text)
	}
	if got := h.s.Tokens(); got[0].UsesLeft != 0 {
		t.Fatalf("uses left %d", got[0].UsesLeft)
	}

	short, _, err := h.s.CreateToken(5, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	h.clk.Advance(2 * time.Minute)
	if m := n3.register(short); m.Kind != wire.KindRefused || m.Text != admission.RefuseExpired {
		t.Fatalf("expired token: %s %q", m.Kind, m.Text)
	}
	if st := h.s.Stats(); st.Enrolments != 2 || st.Refused != 3 {
		t.Fatalf("stats %+v", st)
	}

	// Enrolments survive a restart.
	h2 := newSrvHarness(t, ServerConfig{StateFile: state})
	h2.udpNode(k1).mustRegister()
	h2.udpNode(k2).mustRegister()
	if m := h2.udpNode(k3).register(""); m.Kind != wire.KindRefused {
		t.Fatalf("not enrolled after restart: %s", m.Kind)
	}
	if got := h2.s.Tokens(); len(got) != 2 || !slices.ContainsFunc(got, func(ti admission.TokenInfo) bool { return ti.ID == info.ID && ti.UsesLeft == 0 }) {
		t.Fatalf("tokens after restart %+v", got)
	}

	for _, bad := range []struct {
		uses int
		ttl  time.Duration
	}{{0, time.Hour}, {1, 0}, {-1, time.Hour}} {
		if _, _, err := h.s.CreateToken(bad.uses, bad.ttl); err == nil {
			t.Errorf("CreateToken(%d, %s) accepted", bad.uses, bad.ttl)
		}
	}
}

// A token's use count holds when many nodes join at once.
func TestTokenUsesConcurrent(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.json")
	h := newSrvHarness(t, ServerConfig{StateFile: state})
	tok, _, err := h.s.CreateToken(5, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	const joins = 20
	nodes := make([]*srvNode, joins)
	frames := make([][]byte, joins)
	for i := range nodes {
		nodes[i] = h.udpNode(testKey(t))
		frames[i] = nodes[i].seal(wire.Message{Kind: wire.KindRegister, Token: tok})
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() {
			<-start
			h.s.HandleFrames([][]byte{frames[i]}, []netip.AddrPort{nodes[i].addr()})
		})
	}
	close(start)
	wg.Wait()

	accepted := 0
	for _, n := range nodes {
		m, err := wire.Open(n.recv(), &n.shared)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case m.Kind == wire.KindRegistered:
			accepted++
		case m.Kind != wire.KindRefused || m.Text != admission.RefuseUsedUp:
			t.Fatalf("got %s %q", m.Kind, m.Text)
		}
	}
	if accepted != 5 || len(h.s.Nodes()) != 5 || h.s.Stats().Enrolments != 5 {
		t.Fatalf("%d joins accepted, %d nodes registered; want 5", accepted, len(h.s.Nodes()))
	}
	var st struct { // the state file's form (package admission)
		Tokens []struct {
			UsesLeft int `json:"uses_left"`
		} `json:"tokens"`
		Enrolled []json.RawMessage `json:"enrolled"`
	}
	b, _ := os.ReadFile(state)
	if err := json.Unmarshal(b, &st); err != nil || len(st.Enrolled) != 5 || st.Tokens[0].UsesLeft != 0 {
		t.Fatalf("state file (%v):\n%s", err, b)
	}
}

func TestRevoke(t *testing.T) {
	a, b, c := testKey(t), testKey(t), testKey(t)
	state := filepath.Join(t.TempDir(), "state.json")
	allow := []identity.PublicKey{a.Public(), b.Public(), c.Public()}
	h := newSrvHarness(t, ServerConfig{Allow: allow, StateFile: state, TCP: "127.0.0.1:0"})
	na, nb, tc := h.udpNode(a), h.udpNode(b), h.tcpNode(c)
	idA, idB := na.mustRegister(), nb.mustRegister()
	tc.mustRegister()
	na.sendRaw(relayFrame(idB, "before"))
	nb.expectRelay()

	if known, err := h.s.Revoke(a.Public()); err != nil || !known {
		t.Fatalf("Revoke = %v, %v", known, err)
	}
	if slices.ContainsFunc(h.s.Nodes(), func(n NodeInfo) bool { return n.PublicKey == a.Public() }) {
		t.Fatal("revoked node still registered")
	}
	// Both directions stop at once.
	h.s.HandleFrames([][]byte{relayFrame(idB, "after")}, []netip.AddrPort{na.addr()})
	h.s.HandleFrames([][]byte{relayFrame(idA, "to a")}, []netip.AddrPort{nb.addr()})
	if st := h.s.Stats(); st.RelayDroppedUnregistered != 1 || st.RelayDroppedUnknownID != 1 {
		t.Fatalf("stats %+v", st)
	}
	if m := na.register(""); m.Kind != wire.KindRefused || m.Text != admission.RefuseRevoked {
		t.Fatalf("revoked key: %s %q", m.Kind, m.Text)
	}

	// A TCP node's connection is closed.
	if known, err := h.s.Revoke(c.Public()); err != nil || !known {
		t.Fatalf("Revoke = %v, %v", known, err)
	}
	if _, err := tc.recvErr(5 * time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("revoked node's connection: %v", err)
	}
	if known, err := h.s.Revoke(testKey(t).Public()); err != nil || known {
		t.Fatalf("Revoke(unknown) = %v, %v", known, err)
	}

	// It persists, and overrides the allow list and tokens.
	h2 := newSrvHarness(t, ServerConfig{Allow: allow, StateFile: state})
	tok, _, err := h2.s.CreateToken(1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if m := h2.udpNode(a).register(tok); m.Kind != wire.KindRefused || m.Text != admission.RefuseRevoked {
		t.Fatalf("after restart: %s %q", m.Kind, m.Text)
	}
	h2.udpNode(b).mustRegister()
}

func TestBadStateFile(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.json")
	for _, content := range []string{"{", `{"version":2}`, `{"version":1,"tokens":[{"sha256":"zz"}]}`} {
		os.WriteFile(state, []byte(content), 0o600)
		_, err := NewServer(ServerConfig{Key: testKey(t), StateFile: state, Sender: &discardSender{}})
		if err == nil || !strings.Contains(err.Error(), state) {
			t.Errorf("%s: error %v does not name the file", content, err)
		}
	}
}
