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

// TestHostedDeviceHoldBounded: a hosted device (a stolen phone: a key the
// home does not control) sends packets to arbitrary node addresses. Those
// that open nothing (TCP segments without SYN, accepted as replies with
// no flow charged to the device) are answered unreachable, never held or
// resolved; those that open flows wait within the device's bounds
// (maxHeldPerDevice destinations at a time), so the home's own first
// packet to a new destination is still held and resolved.
func TestHostedDeviceHoldBounded(t *testing.T) {
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
	drain := func() {
		for {
			w.injectMu.Lock()
			n := len(w.hairpin)
			w.injectMu.Unlock()
			if n == 0 {
				return
			}
			fx.read(t)
		}
	}
	addr := func(i int, tag byte) netip.Addr {
		var k [32]byte
		k[0], k[1], k[2] = byte(i), byte(i>>8), tag
		return identity.PublicKey(k).Address()
	}

	for i := 0; i < maxHeldDsts; i++ {
		fx.write(tcp(D, addr(i, 0x5a), 40000, 80, packet.TCPAck))
	}
	drain()
	if got, n := resolves.Load(), w.Pending(); got != 0 || n != 0 {
		t.Errorf("the device's segments on no flow of its own: %d resolves, %d destinations held", got, n)
	}
	if w.Stats().Unreachable.Load() != maxHeldDsts {
		t.Errorf("%d unreachable errors for the device's %d segments", w.Stats().Unreachable.Load(), maxHeldDsts)
	}

	for i := 0; i < maxHeldDsts; i++ {
		fx.write(tcp(D, addr(i, 0x5b), 40000, 80, packet.TCPSyn))
	}
	drain()
	if got, n := resolves.Load(), w.Pending(); got != maxHeldPerDevice || n != maxHeldPerDevice {
		t.Errorf("the device's SYNs to %d new destinations: %d resolves, %d destinations held, want %d", maxHeldDsts, got, n, maxHeldPerDevice)
	}

	// The home's own first packet to a new destination.
	X := key(t).Address()
	before := resolves.Load()
	cd.fromStack <- tcp(me.Address(), X, 1000, 22, packet.TCPSyn)
	fx.read(t)
	if resolves.Load() == before {
		t.Errorf("the home's own packet to a new destination was not held and resolved (%d held)", w.Pending())
	}

	// A destination the device made wait is released into the hairpin
	// queue (not Outbound, which refuses the device's source), frees the
	// device's slot, and its next new destination waits again.
	first := addr(0, 0x5b)
	w.SetPeer(first, true)
	w.Release(first)
	if got := fx.read(t); len(got) != 1 {
		t.Fatalf("released: %d packets out, want 1", len(got))
	}
	before = resolves.Load()
	fx.write(tcp(D, addr(0, 0x5c), 40000, 80, packet.TCPSyn))
	drain()
	if resolves.Load() != before+1 {
		t.Errorf("after a release, the device's next new destination was not held")
	}
}

// TestDeviceResolveBudget: a device makes at most deviceResolveBurst new
// destinations wait at once, then deviceResolveRate a second; devices
// together at most maxHeldDeviceDsts at a time.
func TestDeviceResolveBudget(t *testing.T) {
	var q holdQueue
	q.init()
	D := key(t).Address()
	now := time.Now()
	n := 0
	for i := 0; i < 100; i++ {
		if q.admitDeviceLocked(D, now) {
			n++
			q.devices, q.byDev[D] = 0, 0 // as if taken at once
		}
	}
	if n != deviceResolveBurst {
		t.Fatalf("burst: %d admitted, want %d", n, deviceResolveBurst)
	}
	if !q.admitDeviceLocked(D, now.Add(time.Second)) || q.admitDeviceLocked(D, now.Add(time.Second)) {
		t.Fatal("a second later: want exactly one more")
	}
	q.forgetBudgetsLocked(now.Add(time.Second))
	if len(q.budgets) != 1 {
		t.Fatal("an empty bucket was forgotten")
	}
	q.devices, q.byDev[D] = 0, 0
	q.forgetBudgetsLocked(now.Add(time.Minute))
	if len(q.budgets) != 0 {
		t.Fatal("a full bucket was kept")
	}
	// All devices together.
	admitted := 0
	for i := 0; i < 2*maxHeldDeviceDsts; i++ {
		if q.admitDeviceLocked(key(t).Address(), now) {
			admitted++
		}
	}
	if admitted != maxHeldDeviceDsts {
		t.Fatalf("devices together: %d destinations, want %d", admitted, maxHeldDeviceDsts)
	}
}
