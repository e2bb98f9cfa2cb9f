package orgs

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/clock"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node/orgs/greetings"
	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/orgsync"
	"github.com/tomoe-net/tomoe/internal/packet"
	"github.com/tomoe-net/tomoe/internal/policy"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// fakeNode is the node an Engine serves, with one peer in session.
type fakeNode struct {
	peer identity.PublicKey

	mu       sync.Mutex // guards cuts and injected
	cuts     map[identity.PublicKey]string
	injected [][]byte
}

func (f *fakeNode) Inject(p []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.injected = append(f.injected, slices.Clone(p))
}

// hellosAsking counts the Hellos asking for certificates that the engine
// sent the peer so far.
func (f *fakeNode) hellosAsking(t *testing.T) int {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, p := range f.injected {
		m, err := orgsync.Unmarshal(p[packet.IPv6HeaderLen+8:])
		if err != nil {
			t.Fatalf("engine sent a message that does not parse: %v", err)
		}
		if m.Type == orgsync.TypeHello && m.WantCerts {
			n++
		}
	}
	return n
}
func (f *fakeNode) PeerKey(a netip.Addr) (identity.PublicKey, bool) {
	return f.peer, a == f.peer.Address()
}
func (f *fakeNode) SessionPeers() []netip.Addr { return []netip.Addr{f.peer.Address()} }
func (f *fakeNode) Cut(keys []identity.PublicKey, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range keys {
		f.cuts[k] = reason
	}
}
func (f *fakeNode) cut(k identity.PublicKey) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	why, ok := f.cuts[k]
	return why, ok
}
func (f *fakeNode) Settled(identity.PublicKey, bool)                 {}
func (f *fakeNode) MembersChanged(policy.Directory, []policy.Member) {}
func (f *fakeNode) OrgRules(string, uint64, []policy.Rule)           {}
func (f *fakeNode) SendBridge(identity.PublicKey, []byte) error      { return nil }
func (f *fakeNode) Bridges() []identity.PublicKey                    { return nil }
func (f *fakeNode) Event(string, string, string)                     {}
func newKey(t *testing.T) identity.PublicKey {
	k, err := identity.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

// pendingLab is an engine that trusts only globex, and a peer in acme and
// globex that it admitted pending its certificate.
type pendingLab struct {
	t              *testing.T
	e              *Engine
	node           *fakeNode
	clk            *clock.Manual
	acme, globex   *org.Signer
	acmeC, globexC *org.Cert
}

func newPendingLab(t *testing.T) *pendingLab {
	t.Helper()
	l := &pendingLab{t: t, clk: clock.NewManual(time.Now()), node: &fakeNode{peer: newKey(t), cuts: map[identity.PublicKey]string{}}}
	var err error
	if l.acme, err = org.Init("acme", filepath.Join(t.TempDir(), "acme.key")); err != nil {
		t.Fatal(err)
	}
	if l.globex, err = org.Init("globex", filepath.Join(t.TempDir(), "globex.key")); err != nil {
		t.Fatal(err)
	}
	sign := func(s *org.Signer, name string) *org.Cert {
		c, err := s.SignCert(org.CertRequest{Node: l.node.peer, Name: name, Groups: []string{"ops"}, TTL: time.Hour}, l.clk.Now())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	l.acmeC, l.globexC = sign(l.acme, "both.acme"), sign(l.globex, "both@ops.globex")
	done := make(chan struct{})
	l.e, err = New(Config{
		Orgs:  []Org{{Name: "globex", Key: l.globex.Public()}},
		Self:  newKey(t),
		Clock: l.clk, Done: done, ControlPort: 4611,
	}, l.node)
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() { l.e.Run(); close(stopped) }()
	t.Cleanup(func() { close(done); <-stopped })
	testnet.WaitFor(t, 5*time.Second, "Run's ticker armed", func() bool { return l.clk.Pending() > 0 })
	l.e.Pending(l.node.peer)
	return l
}

// present hands the engine the peer's certificate, as its control
// messages would, and waits until the engine has handled it.
func (l *pendingLab) present(t *testing.T, c *org.Cert) {
	t.Helper()
	b, err := (&orgsync.Msg{Type: orgsync.TypeCert, Data: c.Binary()}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	l.e.OnControl(l.node.peer.Address(), b)
	l.sync()
}

// sync waits until the engine has handled everything queued before.
func (l *pendingLab) sync() {
	handled := make(chan struct{})
	l.e.enqueueFunc(func() { close(handled) })
	<-handled
}

// tick advances the clock by d, one engine tick at a time, waiting for
// the engine to handle each.
func (l *pendingLab) tick(d time.Duration) {
	for end := l.clk.Now().Add(d); l.clk.Now().Before(end); {
		l.clk.Advance(tick)
		testnet.WaitFor(l.t, 5*time.Second, "the engine took the tick", func() bool { return l.clk.Unread() == 0 })
		l.sync()
	}
}

// A member of two organisations presents the certificate of the one this
// node does not trust first: it is not cut for that, and the second
// admits it.
func TestPendingMemberOfTwoOrganisations(t *testing.T) {
	l := newPendingLab(t)
	l.present(t, l.acmeC)
	l.tick(2 * refusedGrace)
	if why, cut := l.node.cut(l.node.peer); cut {
		t.Fatalf("cut for a certificate of an organisation this node does not trust: %s", why)
	}
	l.present(t, l.globexC)
	// Run rebuilds the directory once its queue is drained.
	testnet.WaitFor(t, 5*time.Second, "the globex certificate makes the peer a member", func() bool { return l.e.IsMember(l.node.peer.Address()) })
	l.tick(PendingTimeout + 2*tick)
	if why, cut := l.node.cut(l.node.peer); cut {
		t.Fatalf("a member cut: %s", why)
	}
}

// A refused certificate of a trusted organisation cuts a pending peer
// within refusedGrace (and a tick), unless another verifies meanwhile.
func TestPendingRefusedCertificateCuts(t *testing.T) {
	l := newPendingLab(t)
	other := newKey(t)
	forged, err := l.globex.SignCert(org.CertRequest{Node: other, Name: "other@ops.globex", TTL: time.Hour}, l.clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	l.present(t, forged) // another node's certificate
	if _, cut := l.node.cut(l.node.peer); cut {
		t.Fatal("cut before the grace passed")
	}
	l.tick(refusedGrace + tick)
	why, cut := l.node.cut(l.node.peer)
	if !cut || !strings.Contains(why, "certificate refused") || !strings.Contains(why, "presented by") {
		t.Fatalf("after a refused certificate and the grace: cut %v (%q), want cut naming the refusal", cut, why)
	}

	// Within the grace, a certificate that verifies saves the session.
	l = newPendingLab(t)
	l.present(t, forged)
	l.present(t, l.globexC)
	l.tick(PendingTimeout + 2*tick)
	if why, cut := l.node.cut(l.node.peer); cut {
		t.Fatalf("cut although a certificate verified within the grace: %s", why)
	}
}

// A peer that presents only certificates of organisations this node does
// not trust is cut when PendingTimeout passes.
func TestPendingOnlyUntrustedCutAtTimeout(t *testing.T) {
	l := newPendingLab(t)
	l.present(t, l.acmeC)
	l.tick(PendingTimeout - tick)
	if why, cut := l.node.cut(l.node.peer); cut {
		t.Fatalf("cut before PendingTimeout: %s", why)
	}
	l.tick(2 * tick)
	if why, cut := l.node.cut(l.node.peer); !cut || !strings.Contains(why, "no valid organisation certificate") {
		t.Fatalf("after PendingTimeout: cut %v (%q)", cut, why)
	}
}

// A greeted peer whose certificate does not come (the greeting or the
// answer lost) is asked again (greetings.Book.Due) until one verifies or
// greetings.AskFor has passed; nothing more after that.
func TestGreetAsksAgainUntilCertificate(t *testing.T) {
	l := newPendingLab(t)
	l.e.Greet(l.node.peer.Address())
	l.sync()
	if n := l.node.hellosAsking(t); n != 1 {
		t.Fatalf("the greeting sent %d Hellos asking for certificates, want 1", n)
	}
	l.tick(greetings.AskFirst)
	if n := l.node.hellosAsking(t); n != 2 {
		t.Fatalf("%s after the greeting, with no certificate: %d Hellos, want 2 (asked again)", greetings.AskFirst, n)
	}
	l.present(t, l.globexC)
	testnet.WaitFor(t, 5*time.Second, "the peer's certificate verified", func() bool { return l.e.IsMember(l.node.peer.Address()) })
	l.tick(time.Minute)
	if n := l.node.hellosAsking(t); n != 2 {
		t.Fatalf("asked %d times in all, although the certificate came after the second", n)
	}

	// A peer that never presents one is asked again while AskFor lasts
	// (at 2, 6, 14, 22, 30, 38, 46 and 54 s: greetings' TestDue), then
	// left alone.
	const want = 1 + 8 // the greeting and the asks
	l = newPendingLab(t)
	l.e.Greet(l.node.peer.Address())
	l.sync()
	l.tick(greetings.AskFor + 2*greetings.AskMaxWait)
	if n := l.node.hellosAsking(t); n != want {
		t.Fatalf("a peer that never answers was asked %d times, want %d", n, want)
	}
}
