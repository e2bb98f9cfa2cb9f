package tunwrap

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/packet"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// REVIEW (adversarial): a hosted device (a stolen phone: a key the home
// does not control) sends packets to arbitrary node addresses. Each
// unroutable one is held in the home's own hold queue (256 destinations,
// shared with the home's own traffic) and makes the home resolve it
// (node.resolve: ensurePeer, a bridge lookup, and a session of the home's
// own with whatever node answers). TCP segments without SYN are not even
// charged to the device's flow quota (OutboundFor accepts them without
// an entry). Afterwards the home's own first packet to a new destination
// gets "unreachable" instead of being held and resolved.
func TestReviewDeviceFillsHomeHoldQueue(t *testing.T) {
	me, bob, dev := key(t), key(t), key(t)
	D := dev.Address()
	f := policy.NewFilter(policy.Local{Addr: me.Address(), Site: me.SitePrefix()}, policy.Compile(nil), policy.NewConntrack(0), nil)
	f.SetHosted([]netip.Addr{D})
	var resolves atomic.Int64
	cd := newChanDev()
	w := New(cd, Config{Filter: f, Local: me.Address(), Resolve: func(netip.Addr) { resolves.Add(1) }, HoldTimeout: 30 * time.Second})
	t.Cleanup(func() { w.Close() })
	w.SetPeer(D, true)
	w.SetPeer(bob.Address(), true)
	fx := &fixture{me: me, bob: bob, dev: cd, w: w, filter: f}

	for i := 0; i < maxHeldDsts; i++ {
		var k [32]byte
		k[0], k[1], k[2] = byte(i), byte(i>>8), 0x5a
		dst := identity.PublicKey(k).Address()
		fx.write(tcp(D, dst, 40000, 80, packet.TCPAck))
	}
	for w.Stats().Hairpinned.Load() > 0 && len(fx.read(t)) == 0 && w.Pending() < maxHeldDsts {
	}
	t.Logf("after the device's packets: %d destinations held, %d resolves asked by the device", w.Pending(), resolves.Load())
	if got := resolves.Load(); got >= maxHeldDsts {
		t.Errorf("the device made its home resolve %d addresses of its choosing", got)
	}
	// The home's own first packet to a new destination.
	X := key(t).Address()
	before := resolves.Load()
	cd.fromStack <- tcp(me.Address(), X, 1000, 22, packet.TCPSyn)
	fx.read(t)
	if resolves.Load() == before {
		t.Errorf("the home's own packet to a new destination was not held and resolved (hold queue full of the device's: %d)", w.Pending())
	}
}
