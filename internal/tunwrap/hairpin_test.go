package tunwrap

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/packet"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// TestHairpinHostedDevice: packets between a device this node hosts and
// the overlay go back out through WireGuard, never to the local stack;
// the device opens what it likes, while flows to it need a rule naming
// its address (the fixture's rule for bob's port 22, without "to", is
// about this node only); replies to its flows pass.
func TestHairpinHostedDevice(t *testing.T) {
	fx := newFixture(t, time.Second)
	D := key(t).Address()
	B := fx.bob.Address()
	fx.filter.SetHosted([]netip.Addr{D})
	fx.w.SetPeer(D, true)

	out := func(what string, want int) [][]byte {
		t.Helper()
		if fx.w.Stats().Hairpinned.Load() == 0 && want > 0 {
			t.Fatalf("%s: nothing hairpinned", what)
		}
		got := fx.read(t)
		if len(got) != want {
			t.Fatalf("%s: %d packets out, want %d", what, len(got), want)
		}
		return got
	}

	// The device opens a flow to bob: forwarded, source kept.
	fx.write(tcp(D, B, 40000, 80, packet.TCPSyn))
	fx.expectNothingToStack(t)
	pkts := out("device -> bob", 1)
	var p packet.Parsed
	if err := p.Decode(pkts[0]); err != nil || p.Src != D || p.Dst != B {
		t.Fatalf("forwarded %v -> %v (%v)", p.Src, p.Dst, err)
	}
	// Bob's reply: forwarded to the device.
	fx.write(tcp(B, D, 80, 40000, packet.TCPSyn|packet.TCPAck))
	fx.expectNothingToStack(t)
	out("bob's reply", 1)

	// Bob opens a flow to the device's port 22: his rule here has no
	// "to", so it is about this node, not the device.
	before := fx.w.Stats().Dropped[policy.DropDenied].Load()
	fx.write(tcp(B, D, 1000, 22, packet.TCPSyn))
	fx.expectNothingToStack(t)
	if fx.w.Stats().Dropped[policy.DropDenied].Load() != before+1 {
		t.Fatal("a flow to the device without a rule naming it was not denied")
	}
	// A rule whose "to" is the device's address lets it through.
	r, err := policy.ParseRuleSpec(policy.RuleSpec{From: fx.bob.String(), Proto: "tcp", Ports: "22", To: D.String() + "/128"})
	if err != nil {
		t.Fatal(err)
	}
	r0, _ := policy.ParseRule(fx.bob.String(), "tcp", "22")
	fx.filter.SetMatcher(policy.Compile([]policy.Rule{r0, r}))
	fx.write(tcp(B, D, 1001, 22, packet.TCPSyn))
	fx.expectNothingToStack(t)
	out("bob -> device with a rule", 1)
	// A deny rule without "to" covers the device too.
	deny, _ := policy.ParseRuleSpec(policy.RuleSpec{Deny: true, From: fx.bob.String()})
	fx.filter.SetMatcher(policy.Compile([]policy.Rule{r0, r, deny}))
	fx.write(tcp(B, D, 1002, 22, packet.TCPSyn))
	fx.expectNothingToStack(t)
	if fx.w.Stats().Dropped[policy.DropDenied].Load() != before+2 {
		t.Fatal("a deny rule did not cover the hosted device")
	}

	// The device's packets to this node itself are not forwarded: the
	// filter judges them as inbound from the device (no rule: denied).
	fx.write(tcp(D, fx.me.Address(), 40001, 22, packet.TCPSyn))
	fx.expectNothingToStack(t)
	if fx.w.Stats().Dropped[policy.DropDenied].Load() != before+3 {
		t.Fatal("the device's packet to this node was not judged by this node's policy")
	}

	// No longer hosted: a packet to its address is not this node's.
	fx.filter.SetHosted(nil)
	fx.write(tcp(B, D, 80, 40000, packet.TCPAck))
	fx.expectNothingToStack(t)
	if fx.w.Stats().Dropped[policy.DropNotLocal].Load() == 0 {
		t.Fatal("a packet for a device no longer hosted was not dropped as not local")
	}
}

// TestHairpinHeldUntilPeer: a device's packet to a node without a peer in
// the device yet waits for it, and then passes Outbound.
func TestHairpinHeldUntilPeer(t *testing.T) {
	fx := newFixture(t, 5*time.Second)
	D := key(t).Address()
	E := fx.eve.Address()
	fx.filter.SetHosted([]netip.Addr{D})
	fx.w.SetPeer(D, true)
	fx.write(tcp(D, E, 40000, 80, packet.TCPSyn))
	if got := fx.read(t); len(got) != 0 {
		t.Fatal("sent to a destination without a peer")
	}
	select {
	case dst := <-fx.resolved:
		if dst != E {
			t.Fatalf("resolve %v", dst)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no resolve")
	}
	fx.w.SetPeer(E, true)
	fx.w.Release(E)
	if got := fx.read(t); len(got) != 1 {
		t.Fatalf("released: %d packets", len(got))
	}
}

// TestHairpinUnreachable: a device's packet to an address nobody owns is
// answered with ICMP unreachable sent back to the device, not to this
// node's own stack.
func TestHairpinUnreachable(t *testing.T) {
	fx := newFixture(t, 5*time.Second)
	D := key(t).Address()
	E := fx.eve.Address()
	fx.filter.SetHosted([]netip.Addr{D})
	fx.w.SetPeer(D, true)
	fx.write(tcp(D, E, 40000, 80, packet.TCPSyn))
	if got := fx.read(t); len(got) != 0 {
		t.Fatal("sent to a destination without a peer")
	}
	<-fx.resolved
	fx.w.Reject(E, packet.UnreachAddress)
	got := fx.read(t)
	if len(got) != 1 {
		t.Fatalf("%d packets out, want the ICMP error to the device", len(got))
	}
	var p packet.Parsed
	if err := p.Decode(got[0]); err != nil || !p.IsICMPError() || p.Dst != D || p.Src != fx.me.Address() {
		t.Fatalf("sent %v -> %v icmp error %v (%v)", p.Src, p.Dst, p.IsICMPError(), err)
	}
	fx.expectNothingToStack(t)
}

// BenchmarkHairpin: a batch of 64 segments of one flow from a hosted
// device to a peer, judged on the way in and read back out (per batch:
// SetBytes counts packets).
func BenchmarkHairpin(b *testing.B) {
	me, bob, dev := key(&testing.T{}), key(&testing.T{}), key(&testing.T{})
	f := policy.NewFilter(policy.Local{Addr: me.Address(), Site: me.SitePrefix()}, policy.Compile(nil), policy.NewConntrack(0), nil)
	f.SetHosted([]netip.Addr{dev.Address()})
	w := New(discardDev{}, Config{Filter: f, Local: me.Address()})
	defer w.Close()
	w.SetPeer(bob.Address(), true)
	seg := append(make([]byte, 16), packet.TCP(dev.Address(), bob.Address(), 40000, 80, packet.TCPAck, make([]byte, 1300))...)
	in := make([][]byte, 64)
	out := make([][]byte, 64)
	for i := range in {
		in[i] = seg
		out[i] = make([]byte, 2000)
	}
	sizes := make([]int, 64)
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		w.Write(in, 16)
		if n, _ := w.Read(out, sizes, 16); n != len(in) {
			b.Fatalf("read %d", n)
		}
	}
}
