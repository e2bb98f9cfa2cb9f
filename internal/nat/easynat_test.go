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
			w := vnet.New(vnet.Config{})
			t.Cleanup(func() { w.Close() })
			internet, err := w.NewNetwork("internet", netip.MustParsePrefix("203.0.113.0/24"))
			if err != nil {
				t.Fatal(err)
			}
			internet.SetHops(tc.hops)
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
				if _, err := w.NewNAT(name+"-nat", lan, internet, vnet.NATConfig{NoInputFirewall: tc.noInput}); err != nil {
					t.Fatal(err)
				}
				h, err := lan.AddHost(name)
				if err != nil {
					t.Fatal(err)
				}
				return newVnode(t, h)
			}
			a, b := site("a", 1), site("b", 2)
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
			ea, eb := observed(a), observed(b)

			// The probe loop: a round every probeBurst, a slow one every
			// second; b is introduced two rounds after a.
			const skew = 2
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			deadline := time.Now().Add(5 * time.Second)
			for i := 0; !(a.directTo(b) && b.directTo(a)) && time.Now().Before(deadline); i++ {
				now := <-tick.C
				if i == 0 {
					a.prober.AddCandidates(b.key.Public(), []netip.AddrPort{eb}, false)
				}
				if i == skew {
					b.prober.AddCandidates(a.key.Public(), []netip.AddrPort{ea}, false)
				}
				slow := i%10 == 0
				a.prober.Round(now, slow)
				if i >= skew {
					b.prober.Round(now, slow)
				}
			}
			if got := a.directTo(b) && b.directTo(a); got != tc.direct {
				t.Fatalf("direct both ways = %v (a->b %v, b->a %v), want %v; a sent %d openers, %d probes; world: %+v",
					got, a.directTo(b), b.directTo(a), tc.direct, a.prober.stats.Openers.Load(), a.prober.stats.Sent.Load(), w.Stats())
			}
		})
	}
}
