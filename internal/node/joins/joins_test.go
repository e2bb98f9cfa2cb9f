package joins

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/orgsync"
)

// host is a fake Host: it records what is sent and installed, and runs
// answer (if set) for each message sent to a bridge, as the bridge would.
type host struct {
	mu         sync.Mutex
	bridges    []identity.PublicKey
	sent       map[identity.PublicKey][]orgsync.Msg
	installed  []*org.Cert
	saves      int
	installErr error
	answer     func(b identity.PublicKey, m orgsync.Msg)
}

func (h *host) SendBridge(b identity.PublicKey, p []byte) error {
	m, err := orgsync.Unmarshal(bytes.Clone(p))
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.sent[b] = append(h.sent[b], m)
	f := h.answer
	h.mu.Unlock()
	if f != nil {
		go f(b, m)
	}
	return nil
}
func (h *host) Bridges() []identity.PublicKey                { return h.bridges }
func (h *host) Trusted(org.PublicKey) (string, string, bool) { return "", "", false }
func (h *host) Install(c *org.Cert) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.installErr != nil {
		return h.installErr
	}
	h.installed = append(h.installed, c)
	return nil
}
func (h *host) Holds(c *org.Cert) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, i := range h.installed {
		if i.Fingerprint() == c.Fingerprint() {
			return true
		}
	}
	return false
}
func (h *host) Save() error                  { h.mu.Lock(); h.saves++; h.mu.Unlock(); return nil }
func (h *host) Event(string, string, string) {}

func key(b byte) identity.PublicKey { var k identity.PublicKey; k[0], k[31] = b, 1; return k }

func newTest(t *testing.T, bridges ...identity.PublicKey) (*Requests, *host, *org.Signer) {
	t.Helper()
	s, err := org.Init("acme", filepath.Join(t.TempDir(), "acme.key"))
	if err != nil {
		t.Fatal(err)
	}
	h := &host{bridges: bridges, sent: map[identity.PublicKey][]orgsync.Msg{}}
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	r := New(key(1), h, nil, nil, done)
	r.wait = 300 * time.Millisecond
	return r, h, s
}

// Join waits for the bridges that answer, and says which did not.
func TestJoinAnswers(t *testing.T) {
	b1, b2 := key(10), key(11)
	r, h, s := newTest(t, b1, b2)
	h.answer = func(b identity.PublicKey, m orgsync.Msg) {
		if b == b1 && m.Type == orgsync.TypeJoin {
			r.Handle(b, &orgsync.Msg{Type: orgsync.TypeJoinAck, Org: m.Org, Echo: uint64(m.Join.Created), Status: orgsync.JoinHeld})
		}
	}
	res, err := r.Join(context.Background(), JoinParams{Org: s.Public(), Name: "web1.acme", Groups: []string{"web", "dev", "web"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Bridges) != 2 || res.Bridges[0].State != "held" || res.Bridges[1].State != "no_answer" {
		t.Fatalf("answers %+v", res.Bridges)
	}
	if len(res.Groups) != 2 || res.Groups[0] != "dev" {
		t.Fatalf("groups %v: want sorted, unique", res.Groups)
	}
	if saved := r.Saved(); len(saved) != 1 || saved[0].Name != "web1.acme" || h.saves == 0 {
		t.Fatalf("saved %+v (%d saves)", saved, h.saves)
	}
	if st := r.Status(s.Public()); st == nil || len(st.Bridges) != 1 || st.Bridges[0].State != "held" {
		t.Fatalf("status %+v", st)
	}
	// Bad input: a name that is no certificate name, a bad group, a
	// bridge this node is not registered with, no bridge at all.
	for _, p := range []JoinParams{
		{Org: s.Public(), Name: "Web1"},
		{Org: s.Public(), Name: "web1.acme", Groups: []string{"Bad Group"}},
		{Org: s.Public(), Name: "web1.acme", Bridge: key(99)},
		{Name: "web1.acme"},
	} {
		if _, err := r.Join(context.Background(), p); err == nil {
			t.Errorf("%+v: accepted", p)
		}
	}
	h.bridges = nil
	if _, err := r.Join(context.Background(), JoinParams{Org: s.Public(), Name: "web1.acme"}); err == nil {
		t.Error("join with no bridge registered: accepted")
	}
}

// A certificate from a bridge is installed only if this node asked for
// its organisation, it is for this node's key and it verifies.
func TestDeliverRefuses(t *testing.T) {
	b := key(10)
	r, h, s := newTest(t, b)
	other, _ := org.Init("acme", filepath.Join(t.TempDir(), "other.key"))
	if _, err := r.Join(context.Background(), JoinParams{Org: s.Public(), Name: "web1.acme"}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	sign := func(s *org.Signer, node identity.PublicKey, nb time.Time) *org.Cert {
		c, err := s.SignCert(org.CertRequest{Node: node, Name: "web1.acme", TTL: time.Hour, NotBefore: nb}, nb)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tampered := bytes.Clone(sign(s, key(1), now).Binary())
	tampered[len(tampered)-1] ^= 1
	for name, bad := range map[string][]byte{
		"for another key":              sign(s, key(2), now).Binary(),
		"of an organisation not asked": sign(other, key(1), now).Binary(),
		"tampered":                     tampered,
		"expired":                      sign(s, key(1), now.Add(-3*time.Hour)).Binary(),
		"garbage":                      []byte("tomoe"),
	} {
		r.Handle(b, &orgsync.Msg{Type: orgsync.TypeJoinCert, Data: bad})
		if len(h.installed) != 0 {
			t.Fatalf("a certificate %s was installed", name)
		}
	}
	h.installErr = errors.New("revoked")
	good := sign(s, key(1), now)
	r.Handle(b, &orgsync.Msg{Type: orgsync.TypeJoinCert, Data: good.Binary()})
	if len(r.Saved()) != 1 {
		t.Fatal("a certificate the host refused ended the request")
	}
	h.installErr = nil
	r.Handle(b, &orgsync.Msg{Type: orgsync.TypeJoinCert, Data: good.Binary()})
	if len(h.installed) != 1 || len(r.Saved()) != 0 {
		t.Fatalf("installed %d, requests left %d", len(h.installed), len(r.Saved()))
	}
	sent := h.sent[b]
	if last := sent[len(sent)-1]; last.Type != orgsync.TypeJoin || !last.Join.Withdraw {
		t.Fatalf("no withdrawal sent after installing: %+v", last)
	}
	// The same certificate again (from a second bridge): nothing happens.
	r.Handle(b, &orgsync.Msg{Type: orgsync.TypeJoinCert, Data: good.Binary()})
	if len(h.installed) != 1 {
		t.Fatal("installed twice")
	}
}

// A list merges the bridges' answers and says which list is incomplete.
func TestListMerges(t *testing.T) {
	b1, b2 := key(10), key(11)
	r, h, s := newTest(t, b1, b2)
	a, c := key(20), key(21)
	h.answer = func(b identity.PublicKey, m orgsync.Msg) {
		if m.Type != orgsync.TypeJoinQuery {
			return
		}
		q, _ := org.DecodeJoinQuery(m.Data)
		item := func(i, total uint16, node identity.PublicKey, name string) {
			r.Handle(b, &orgsync.Msg{Type: orgsync.TypeJoinItem, Org: q.Org, Echo: q.Nonce, Index: i, Total: total,
				Join: orgsync.Join{Node: node, Created: 100, State: orgsync.JoinPending, Name: name}})
		}
		if b == b1 {
			item(0, 2, a, "a.acme")
			item(1, 2, c, "c.acme")
		} else {
			item(0, 2, a, "a.acme") // the second never comes
		}
	}
	q, err := s.SignJoinQuery(org.JoinList, key(1), identity.PublicKey{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.List(context.Background(), q.Text())
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Requests) != 2 || len(res.Requests[0].Bridges) != 2 || res.Requests[0].Node != a.String() {
		t.Fatalf("requests %+v", res.Requests)
	}
	if res.Bridges[0].State != "answered" || res.Bridges[1].State != "partial" {
		t.Fatalf("bridges %+v", res.Bridges)
	}
	// A query for another node, a stale one, a reject as a list: refused
	// here already.
	forOther, _ := s.SignJoinQuery(org.JoinList, key(2), identity.PublicKey{}, time.Now())
	stale, _ := s.SignJoinQuery(org.JoinList, key(1), identity.PublicKey{}, time.Now().Add(-time.Hour))
	reject, _ := s.SignJoinQuery(org.JoinReject, key(1), a, time.Now())
	for _, bad := range []*org.JoinQuery{forOther, stale, reject} {
		if _, err := r.List(context.Background(), bad.Text()); err == nil {
			t.Errorf("%+v: listed", bad)
		}
	}
}
