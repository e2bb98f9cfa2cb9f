package nat

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/bridgetest"
	"github.com/tomoe-net/tomoe/internal/bridge/keycache"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/testnet/vnet"
	"github.com/tomoe-net/tomoe/internal/transport"
)

// vnode is a node on the in-memory internet as far as probing goes: its
// Bind (the real one, over a vnet.Bind), a prober on it, and the direct
// paths the prober proved.
type vnode struct {
	key    identity.PrivateKey
	bind   *transport.Bind
	prober *Prober

	mu     sync.Mutex
	direct map[identity.PublicKey]netip.AddrPort
}

// vnodePaths is the node's Bind, with the proofs recorded on the way.
type vnodePaths struct {
	*transport.Bind
	n *vnode
}

func (v vnodePaths) DirectWorks(key identity.PublicKey, addr netip.AddrPort) {
	v.n.mu.Lock()
	v.n.direct[key] = addr
	v.n.mu.Unlock()
	v.Bind.DirectWorks(key, addr)
}

func newVnode(t *testing.T, h *vnet.Host) *vnode {
	t.Helper()
	n := &vnode{key: bridgetest.Key(t), direct: map[identity.PublicKey]netip.AddrPort{}}
	n.bind, _ = bridgetest.OpenBindOn(t, h.NewBind(), 4610)
	n.prober = NewProber(Config{Paths: vnodePaths{n.bind, n}, Sealer: keycache.New(n.key, 16, nil)})
	return n
}

// talksTo makes n open the frames of peer (what a node's bridge client
// does) and hand them to its prober.
func (n *vnode) talksTo(t *testing.T, peer *vnode) {
	shared := wire.Precompute(n.key, peer.key.Public())
	n.bind.SetFrameHandler(frameFunc(func(frames [][]byte, srcs []netip.AddrPort) {
		for i, f := range frames {
			if m, err := wire.Open(f, &shared); err == nil {
				n.prober.Handle(peer.key.Public(), &shared, m, srcs[i])
			}
		}
	}))
}

func (n *vnode) directTo(peer *vnode) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.direct[peer.key.Public()]
	return ok
}

type frameFunc func(frames [][]byte, srcs []netip.AddrPort)

func (f frameFunc) HandleFrames(frames [][]byte, srcs []netip.AddrPort) { f(frames, srcs) }

// easyPair builds two sites behind NATs with cfg on an internet with
// hops routers between them and a bridge host, a node on each, and
// returns the nodes and the endpoints the bridge observed for them.
func easyPair(t *testing.T, cfg vnet.NATConfig, hops uint8) (a, b *vnode, ea, eb netip.AddrPort, w *vnet.World) {
	t.Helper()
	w = vnet.New(vnet.Config{})
	t.Cleanup(func() { w.Close() })
	internet, err := w.NewNetwork("internet", netip.MustParsePrefix("203.0.113.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	internet.SetHops(hops)
	bh, err := internet.AddHost("bridge")
	if err != nil {
		t.Fatal(err)
	}
	bridge, err := bh.ListenUDP(4610)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bridge.Close() })
	site := func(name string, octet byte) *vnode {
		lan, err := w.NewNetwork(name+"-lan", netip.PrefixFrom(netip.AddrFrom4([4]byte{10, octet, 0, 0}), 24))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.NewNAT(name+"-nat", lan, internet, cfg); err != nil {
			t.Fatal(err)
		}
		h, err := lan.AddHost(name)
		if err != nil {
			t.Fatal(err)
		}
		return newVnode(t, h)
	}
	a, b = site("a", 1), site("b", 2)
	a.talksTo(t, b)
	b.talksTo(t, a)
	// Registering: the bridge observes each node's endpoint.
	observed := func(n *vnode) netip.AddrPort {
		if err := n.bind.SendFrames([][]byte{[]byte("register")}, bridge.LocalAddrPort()); err != nil {
			t.Fatal(err)
		}
		bridge.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, from, err := bridge.ReadFromUDPAddrPort(make([]byte, 64))
		if err != nil {
			t.Fatal(err)
		}
		return from
	}
	return a, b, observed(a), observed(b), w
}

// rounds runs the nodes' probe rounds as a node's bridge client times
// them (every probeBurst, slow every tenth) until done or d passes, and
// reports whether done. Before each round, step(i) may introduce them.
func rounds(d time.Duration, nodes []*vnode, step func(i int), done func() bool) bool {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(d)
	for i := 0; time.Now().Before(deadline); i++ {
		if done() {
			return true
		}
		now := <-tick.C
		step(i)
		for _, n := range nodes {
			n.prober.Round(now, i%10 == 0)
		}
	}
	return done()
}

func directBoth(a, b *vnode) func() bool {
	return func() bool { return a.directTo(b) && b.directTo(a) }
}

// Two nodes behind "easy" NATs (endpoint-independent mapping, conntrack's
// filtering) whose routers have no input firewall, with a router between
// them, are introduced by a bridge, one a few rounds before the other (the
// bridge's paths to them differ), and probe each other on their rounds as
// a node's bridge client times them. The first probe to reach a router
// before its side has sent would leave a conntrack entry there that takes
// the port the hole needs; the openers keep any probe from arriving
// unsolicited, so they go direct both ways. With an input firewall they
// did anyway; without the router between, the openers themselves reach
// the far router and the pair stays apart, as before openers.
func TestEasyNATsWithoutInputFirewall(t *testing.T) {
	for _, tc := range []struct {
		noInput bool
		hops    uint8
		direct  bool
	}{
		{noInput: false, hops: 1, direct: true},
		{noInput: true, hops: 1, direct: true},
		{noInput: true, hops: 0, direct: false},
	} {
		t.Run(fmt.Sprintf("no input firewall %v, %d hops between", tc.noInput, tc.hops), func(t *testing.T) {
			t.Parallel()
			a, b, ea, eb, w := easyPair(t, vnet.NATConfig{NoInputFirewall: tc.noInput}, tc.hops)
			const skew = 2 // rounds between a's introduction and b's
			at := time.Now().UnixNano()
			got := rounds(5*time.Second, []*vnode{a, b}, func(i int) {
				switch i {
				case 0:
					a.prober.AddIntroduced(b.key.Public(), []netip.AddrPort{eb}, false, at)
				case skew:
					b.prober.AddIntroduced(a.key.Public(), []netip.AddrPort{ea}, false, at)
				}
			}, directBoth(a, b))
			if got != tc.direct {
				t.Fatalf("direct both ways = %v (a->b %v, b->a %v), want %v; a sent %d openers, %d probes; world: %+v",
					got, a.directTo(b), b.directTo(a), tc.direct, a.prober.stats.Openers.Load(), a.prober.stats.Sent.Load(), w.Stats())
			}
		})
	}
}

// sent counts the openers and probes n sent.
func (n *vnode) sent() uint64 { return n.prober.stats.Openers.Load() + n.prober.stats.Sent.Load() }

func (n *vnode) failed(peer *vnode) bool {
	n.prober.mu.Lock()
	defer n.prober.mu.Unlock()
	cs := n.prober.candidates[peer.key.Public()]
	return cs != nil && cs.failed
}

// The pair of easy NATs without input firewalls, when b's introduction
// was lost: a's attempt alone leaves a stray entry at b's router; b's
// attempt alone, at the next introduction (a is quiet by then), leaves
// from the wrong port. Both stay silent towards each other until an
// introduction in the next retry window, which both take up: the strays
// have expired by then (the NATs here forget an unsolicited flow, and a
// mapping, 2.5 s after its last packet, longer than an attempt as
// Linux's 30 s are; a mapping that saw replies lasts 120 s there), and
// they go direct.
func TestEasyNATsRetryAfterALostIntroduction(t *testing.T) {
	t.Parallel()
	const expiry = 2500 * time.Millisecond
	a, b, ea, eb, w := easyPair(t, vnet.NATConfig{NoInputFirewall: true, UnsolicitedTimeout: expiry, MappingTimeout: expiry}, 1)
	both := []*vnode{a, b}
	base := (time.Now().UnixNano()/int64(retryPeriod) + 1) * int64(retryPeriod) // a retry period's start, by the bridge's clock
	introduce := func(n, peer *vnode, ep netip.AddrPort, at time.Duration) {
		n.prober.AddIntroduced(peer.key.Public(), []netip.AddrPort{ep}, false, base+int64(at))
	}

	// a alone (b's introduction lost).
	if rounds(5*time.Second, both, func(i int) {
		if i == 0 {
			introduce(a, b, eb, time.Second)
		}
	}, func() bool { return a.failed(b) }); !a.failed(b) || directBoth(a, b)() {
		t.Fatalf("a's lone attempt: failed %v, direct %v", a.failed(b), directBoth(a, b)())
	}
	// The next introduction, outside the retry window: a stays quiet, b
	// makes its first attempt, alone.
	if rounds(5*time.Second, both, func(i int) {
		if i == 0 {
			introduce(a, b, eb, retryWindow+5*time.Second)
			introduce(b, a, ea, retryWindow+5*time.Second)
		}
	}, func() bool { return b.failed(a) }); !b.failed(a) || directBoth(a, b)() {
		t.Fatalf("b's lone attempt: failed %v, direct %v", b.failed(a), directBoth(a, b)())
	}
	// Quiet: nothing more to each other, whatever the rounds (slow ones
	// included) and introductions in this period.
	sa, sb := a.sent(), b.sent()
	rounds(expiry+time.Second, both, func(i int) {
		if i == 3 {
			introduce(a, b, eb, retryPeriod-time.Second)
			introduce(b, a, ea, retryPeriod-time.Second)
		}
	}, func() bool { return false })
	if a.sent() != sa || b.sent() != sb {
		t.Fatalf("while quiet a sent %d and b %d openers and probes", a.sent()-sa, b.sent()-sb)
	}
	// The next period's window: both try again, and go direct.
	if !rounds(5*time.Second, both, func(i int) {
		if i == 0 {
			introduce(a, b, eb, retryPeriod+time.Second)
			introduce(b, a, ea, retryPeriod+time.Second)
		}
	}, directBoth(a, b)) {
		t.Fatalf("no direct path after the retry: a->b %v, b->a %v; world %+v", a.directTo(b), b.directTo(a), w.Stats())
	}
}
