package orgs

import (
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/clock"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/orgsync"
	"github.com/tomoe-net/tomoe/internal/policy"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// bridgeNode is the node as the engine sees it: no peers, some bridges,
// and a record of what was sent to each.
type bridgeNode struct {
	mu      sync.Mutex
	bridges []identity.PublicKey
	sent    map[identity.PublicKey][]orgsync.Msg
}

func (f *bridgeNode) Inject([]byte) {}
func (f *bridgeNode) PeerKey(netip.Addr) (identity.PublicKey, bool) {
	return identity.PublicKey{}, false
}
func (f *bridgeNode) SessionPeers() []netip.Addr                       { return nil }
func (f *bridgeNode) Cut([]identity.PublicKey, string)                 {}
func (f *bridgeNode) MembersChanged(policy.Directory, []policy.Member) {}
func (f *bridgeNode) OrgRules(string, uint64, []policy.Rule)           {}
func (f *bridgeNode) Event(string, string, string)                     {}
func (f *bridgeNode) Settled(identity.PublicKey, bool)                 {}

func (f *bridgeNode) SendBridge(b identity.PublicKey, payload []byte) error {
	m, err := orgsync.Unmarshal(payload)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent[b] = append(f.sent[b], m)
	return nil
}

func (f *bridgeNode) Bridges() []identity.PublicKey {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]identity.PublicKey(nil), f.bridges...)
}

func (f *bridgeNode) setBridges(bs ...identity.PublicKey) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bridges = bs
}

// certsSent is how many certificates went to bridge b.
func (f *bridgeNode) certsSent(b identity.PublicKey) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, m := range f.sent[b] {
		if m.Type == orgsync.TypeCert {
			n++
		}
	}
	return n
}

// A member presents its certificate to a bridge when it registers and
// again every PresentInterval while registered: a presentation that was
// lost, or a registration the bridge dropped and took back without the
// member noticing, would otherwise leave the bridge without the member's
// certificate, and the bridge would never tell it of a new revocation
// list (found by bench/sim -scenario crl on a loaded machine: 164 of
// 1,000 members missing at the bridge).
func TestPresentAgainToBridges(t *testing.T) {
	s, err := org.Init("acme", filepath.Join(t.TempDir(), "acme.key"))
	if err != nil {
		t.Fatal(err)
	}
	priv, err := identity.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	bkey, err := identity.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	self, bridge := priv.Public(), bkey.Public()
	clk := clock.NewManual(time.Now())
	c, err := s.SignCert(org.CertRequest{Node: self, Name: "n1.acme", TTL: time.Hour}, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	fn := &bridgeNode{sent: map[identity.PublicKey][]orgsync.Msg{}}
	done := make(chan struct{})
	defer close(done)
	e, err := New(Config{Orgs: []Org{{Name: "acme", Key: s.Public(), Cert: c}}, Self: self, Clock: clk, Done: done}, fn)
	if err != nil {
		t.Fatal(err)
	}
	go e.Run()
	// settle waits until the engine has handled what is queued (twice:
	// a tick and the barrier may be ready at once).
	settle := func() {
		for range 2 {
			ran := make(chan struct{})
			e.enqueueFunc(func() { close(ran) })
			<-ran
		}
	}
	step := func(d time.Duration) {
		for end := clk.Now().Add(d); clk.Now().Before(end); {
			clk.Advance(tick)
			settle()
		}
	}

	fn.setBridges(bridge)
	e.BridgeRegistered(bridge)
	testnet.WaitFor(t, 5*time.Second, "the certificate presented on registering", func() bool { return fn.certsSent(bridge) == 1 })
	step(PresentInterval - 2*tick)
	if n := fn.certsSent(bridge); n != 1 {
		t.Fatalf("%d certificates sent before PresentInterval passed; want 1", n)
	}
	step(3 * tick)
	testnet.WaitFor(t, 5*time.Second, "the certificate presented again", func() bool { return fn.certsSent(bridge) == 2 })
	step(PresentInterval)
	testnet.WaitFor(t, 5*time.Second, "the certificate presented a third time", func() bool { return fn.certsSent(bridge) == 3 })

	// Each presentation carries a Hello naming the documents held.
	fn.mu.Lock()
	hellos := 0
	for _, m := range fn.sent[bridge] {
		if m.Type == orgsync.TypeHello {
			hellos++
		}
	}
	fn.mu.Unlock()
	if hellos != 3 {
		t.Fatalf("%d hellos with 3 presentations", hellos)
	}

	// Not registered: nothing is sent.
	fn.setBridges()
	step(2 * PresentInterval)
	if n := fn.certsSent(bridge); n != 3 {
		t.Fatalf("%d certificates sent, some while not registered; want 3", n)
	}
}
