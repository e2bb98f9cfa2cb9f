package routing

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/clock"
	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node/changes"
	"github.com/tomoe-net/tomoe/internal/node/peers"
	"github.com/tomoe-net/tomoe/internal/offers"
	"github.com/tomoe-net/tomoe/internal/policy"
	"github.com/tomoe-net/tomoe/internal/statefile"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// fakeNode records what the Router asks of the node. A unit test's fake:
// the node package's tests and e2e's VPN lab run the real one.
type fakeNode struct {
	matcher     *policy.Matcher
	injected    [][]byte
	reconfig    map[identity.PublicKey][]netip.Prefix // RouteIPs at the last Reconfigure
	changed     int
	forwardErr  error
	forwardings [][]config.Offer
}

func (f *fakeNode) Matcher() *policy.Matcher { return f.matcher }
func (f *fakeNode) Reconfigure(p *peers.Peer) error {
	f.reconfig[p.Key] = slices.Clone(p.RouteIPs)
	return nil
}
func (f *fakeNode) RoutesChanged()        { f.changed++ }
func (f *fakeNode) SetLocal(policy.Local) {}
func (f *fakeNode) Inject(pkt []byte)     { f.injected = append(f.injected, pkt) }
func (f *fakeNode) EnsurePeer(context.Context, netip.Addr) error {
	return errors.New("no bridges here")
}
func (f *fakeNode) Forwarding() error { return f.forwardErr }
func (f *fakeNode) ApplyForwarding(o []config.Offer) error {
	f.forwardings = append(f.forwardings, o)
	return nil
}
func (f *fakeNode) Closing() bool { return false }

func testKey(i byte) identity.PublicKey {
	return identity.PrivateKeyFromBytes([32]byte{1: i, 2: 9}).Public()
}

func newTestRouter(t *testing.T, userspace bool, accept ...offers.Rule) (*Router, *fakeNode, *peers.Table) {
	return newTestRouterOn(t, nil, nil, userspace, accept...)
}

func newTestRouterOn(t *testing.T, c clock.Clock, done chan struct{}, userspace bool, accept ...offers.Rule) (*Router, *fakeNode, *peers.Table) {
	t.Helper()
	st, err := changes.Open(statefile.File{Path: filepath.Join(t.TempDir(), "services.json"), What: "test state"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rule, err := policy.ParseRule("*", "any", "")
	if err != nil {
		t.Fatal(err)
	}
	fn := &fakeNode{matcher: policy.Compile([]policy.Rule{rule}), reconfig: map[identity.PublicKey][]netip.Prefix{}}
	tb := peers.New(peers.Limits{})
	self := testKey(1)
	if done == nil {
		done = make(chan struct{})
	}
	r, err := New(Config{Log: slog.New(slog.DiscardHandler), Self: self, IPv4: netip.MustParseAddr("10.99.0.1"), IPv4Setting: "10.99.0.1",
		IPv4Space: netip.MustParsePrefix("10.99.0.0/24"), Userspace: userspace, Accept: accept, Changes: st, Peers: tb, Node: fn,
		Done: done, Clock: c})
	if err != nil {
		t.Fatal(err)
	}
	return r, fn, tb
}

// TestOfferInstallsForActivePeer: an offer that an accept rule covers is
// installed, the peer's AllowedIPs follow at once, and unaccepting it
// through the API takes it away again; an offer nobody accepts stays
// learned but not installed.
func TestOfferInstallsForActivePeer(t *testing.T) {
	peer := testKey(2)
	lan := netip.MustParsePrefix("192.168.7.0/24")
	id, _ := policy.ParseIdentity(peer.Address().String())
	r, fn, tb := newTestRouter(t, true, offers.Rule{From: id, Prefix: lan})
	tb.Lock()
	tb.Insert(&peers.Peer{Key: peer, Addr: peer.Address(), Active: true})
	tb.Unlock()

	other := netip.MustParsePrefix("172.16.0.0/16")
	r.HandleControl(peer.Address(), offers.Message{Type: offers.TypeOffer, Boot: 1, Seq: 1, Routes: []netip.Prefix{lan, other}})
	if k, ok := r.Installed(lan); !ok || k != peer {
		t.Fatalf("accepted offer not installed for the peer: %v %v", k, ok)
	}
	if _, ok := r.Installed(other); ok {
		t.Fatal("an offer no rule accepts was installed")
	}
	if got := fn.reconfig[peer]; !slices.Contains(got, lan) {
		t.Fatalf("the peer's AllowedIPs were not reconfigured with %s: %v", lan, got)
	}
	st, err := r.Routes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, l := range st.Learned {
		states[l.Prefix] = l.State
	}
	if states[lan.String()] != "installed" || states[other.String()] != "not_accepted" {
		t.Fatalf("learned routes: %+v", st.Learned)
	}

	if _, err := r.ChangeRoutes(context.Background(), adminapi.RouteChange{Op: adminapi.RouteUnaccept, From: peer.Address().String(), Prefix: lan.String()}); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Installed(lan); ok {
		t.Fatal("unaccepted route still installed")
	}
	if got := fn.reconfig[peer]; slices.Contains(got, lan) {
		t.Fatalf("the peer keeps %s in its AllowedIPs: %v", lan, got)
	}
}

// TestChangeRoutesRefusals: the API's refusals carry their status codes.
func TestChangeRoutesRefusals(t *testing.T) {
	ctx := context.Background()
	code := func(err error) int {
		var re *adminapi.RequestError
		if errors.As(err, &re) {
			return re.Code
		}
		return 0
	}
	user, _, _ := newTestRouter(t, true)
	if _, err := user.ChangeRoutes(ctx, adminapi.RouteChange{Op: adminapi.RouteOffer, Prefix: "192.168.1.0/24"}); code(err) != 400 {
		t.Fatalf("userspace offer: %v, want 400", err)
	}
	kern, fn, _ := newTestRouter(t, false)
	fn.forwardErr = errors.New("no firewall")
	if _, err := kern.ChangeRoutes(ctx, adminapi.RouteChange{Op: adminapi.RouteOffer, Prefix: "192.168.1.0/24"}); code(err) != 409 {
		t.Fatalf("offer without a firewall: %v, want 409", err)
	}
	fn.forwardErr = nil
	if _, err := kern.ChangeRoutes(ctx, adminapi.RouteChange{Op: adminapi.RouteOffer, Prefix: "192.168.1.0/24"}); err != nil {
		t.Fatal(err)
	}
	if len(fn.forwardings) != 1 || !slices.ContainsFunc(fn.forwardings[0], func(o config.Offer) bool { return o.Prefix.String() == "192.168.1.0/24" }) {
		t.Fatalf("forwarding not applied for the new offer: %v", fn.forwardings)
	}
	if _, err := kern.ChangeRoutes(ctx, adminapi.RouteChange{Op: adminapi.RouteOffer, Prefix: "192.168.1.0/24"}); code(err) != 409 {
		t.Fatalf("offered twice: %v, want 409", err)
	}
	if _, err := kern.ChangeRoutes(ctx, adminapi.RouteChange{Op: adminapi.RouteWithdraw, Prefix: "10.99.0.1/32"}); code(err) != 400 {
		t.Fatalf("withdrawing tun.ipv4: %v, want 400", err)
	}
	if _, err := kern.ChangeRoutes(ctx, adminapi.RouteChange{Op: adminapi.RouteWithdraw, Prefix: "192.168.2.0/24"}); code(err) != 404 {
		t.Fatalf("withdrawing what is not offered: %v, want 404", err)
	}
	if _, err := kern.ChangeRoutes(ctx, adminapi.RouteChange{Op: "steal", Prefix: "192.168.2.0/24"}); code(err) != 400 {
		t.Fatalf("unknown op: %v, want 400", err)
	}
}

// TestMalformedControlCounted: a datagram that does not decode is counted
// and queues nothing.
func TestMalformedControlCounted(t *testing.T) {
	r, _, _ := newTestRouter(t, true)
	r.OnControl(testKey(3).Address(), []byte{0xff, 0x00, 0x01})
	if r.ControlMalformed() != 1 || len(r.control) != 0 {
		t.Fatalf("malformed %d, queued %d", r.ControlMalformed(), len(r.control))
	}
}

// TestOfferExpiresOnTheClock: an offer the peer stops refreshing is
// dropped after offerExpiry on the Router's clock, by its refresh timer,
// without real waiting; one it refreshes stays.
func TestOfferExpiresOnTheClock(t *testing.T) {
	m := clock.NewManual(time.Now())
	done := make(chan struct{})
	peer, fresh := testKey(2), testKey(3)
	lan, dmz := netip.MustParsePrefix("192.168.7.0/24"), netip.MustParsePrefix("172.16.0.0/16")
	idOf := func(k identity.PublicKey) policy.Identity {
		id, err := policy.ParseIdentity(k.Address().String())
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	r, _, tb := newTestRouterOn(t, m, done, true, offers.Rule{From: idOf(peer), Prefix: lan}, offers.Rule{From: idOf(fresh), Prefix: dmz})
	tb.Lock()
	tb.Insert(&peers.Peer{Key: peer, Addr: peer.Address(), Active: true, Up: true})
	tb.Insert(&peers.Peer{Key: fresh, Addr: fresh.Address(), Active: true, Up: true})
	tb.Unlock()
	ran := make(chan struct{})
	go func() { defer close(ran); r.Run() }()
	t.Cleanup(func() { close(done); <-ran })
	testnet.WaitFor(t, 5*time.Second, "the Router's two tickers", func() bool { return m.Pending() >= 2 })

	seq := uint32(1)
	offer := func(k identity.PublicKey, p netip.Prefix) {
		r.HandleControl(k.Address(), offers.Message{Type: offers.TypeOffer, Boot: 1, Seq: seq, Routes: []netip.Prefix{p}})
		seq++
	}
	offer(peer, lan)
	offer(fresh, dmz)
	if _, ok := r.Installed(lan); !ok {
		t.Fatal("offer not installed")
	}
	// Refresh ticks up to just before the expiry: both stay; fresh's
	// offer is refreshed at each tick.
	for m.Now().Add(offerRefresh).Before(time.Now().Add(offerExpiry)) {
		m.Advance(offerRefresh)
		offer(fresh, dmz)
		testnet.WaitFor(t, 5*time.Second, "the refresh tick taken", func() bool { return m.Unread() == 0 })
	}
	if _, ok := r.Installed(lan); !ok {
		t.Fatal("offer expired early")
	}
	m.Advance(2 * offerRefresh)
	testnet.WaitFor(t, 5*time.Second, "the stale offer to expire", func() bool {
		_, ok := r.Installed(lan)
		return !ok
	})
	if _, ok := r.Installed(dmz); !ok {
		t.Fatal("a refreshed offer expired")
	}
}
