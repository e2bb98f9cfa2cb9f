package tunwrap

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/packet"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// A source waiting for its certificate has its packets held (up to the
// bound), judged when released, dropped when its wait ends badly; other
// sources are not delayed.
func TestInboundHold(t *testing.T) {
	fx := newFixture(t, time.Second)
	A, B, E := fx.me.Address(), fx.bob.Address(), fx.eve.Address()
	if !fx.w.HoldFrom(E) {
		t.Fatal("HoldFrom refused the first source")
	}
	var syns [][]byte
	for i := range maxHeldInPerSrc + 4 {
		syns = append(syns, tcp(E, A, uint16(5000+i), 22, packet.TCPSyn))
	}
	fx.write(syns...)
	fx.write(tcp(B, A, 6000, 22, packet.TCPSyn))
	if got := fx.expectToStack(t, time.Second); !from(got, B) {
		t.Fatal("a source that does not wait was held")
	}
	fx.expectNothingToStack(t)
	st := fx.w.Stats()
	if st.HeldInbound.Load() != maxHeldInPerSrc || st.Dropped[policy.DropDenied].Load() != 4 {
		t.Fatalf("held %d, dropped %d; want %d and 4", st.HeldInbound.Load(), st.Dropped[policy.DropDenied].Load(), maxHeldInPerSrc)
	}

	// Its certificate verified, and a rule now admits it.
	bob, _ := policy.ParseRule(fx.bob.String(), "tcp", "22")
	eve, _ := policy.ParseRule(fx.eve.String(), "tcp", "22")
	fx.filter.SetMatcher(policy.Compile([]policy.Rule{bob, eve}))
	fx.w.ReleaseInbound(E)
	for range maxHeldInPerSrc {
		if got := fx.expectToStack(t, time.Second); !from(got, E) {
			t.Fatal("released a packet from elsewhere")
		}
	}
	if fx.w.HeldSources() != 0 {
		t.Fatal("the source still waits after its release")
	}
	fx.write(tcp(E, A, 7000, 22, packet.TCPSyn))
	fx.expectToStack(t, time.Second) // no longer held

	// A wait that ends badly drops what was held.
	fx.w.HoldFrom(E)
	fx.write(tcp(E, A, 7001, 22, packet.TCPSyn))
	fx.w.DropInbound(E)
	fx.expectNothingToStack(t)

	// Only so many sources wait; the others meet the filter at once.
	for i := range maxHeldInSrcs {
		if !fx.w.HoldFrom(netip.AddrFrom16([16]byte{0xfc, 1, 15: byte(i)})) {
			t.Fatalf("source %d refused", i)
		}
	}
	if fx.w.HoldFrom(E) {
		t.Fatal("more sources than the bound wait")
	}
}

func from(pkt []byte, src netip.Addr) bool {
	var p packet.Parsed
	return p.Decode(pkt) == nil && p.Src == src
}

// OnFirstFrom calls back on the next packet from its source only, once.
func TestOnFirstFrom(t *testing.T) {
	fx := newFixture(t, time.Second)
	A, B, E := fx.me.Address(), fx.bob.Address(), fx.eve.Address()
	called := make(chan netip.Addr, 4)
	fx.w.OnFirstFrom(E, func() { called <- E })
	fx.w.OnFirstFrom(B, func() { called <- B })
	if !fx.w.CancelFirst(B) || fx.w.CancelFirst(B) {
		t.Fatal("CancelFirst does not report the wait once")
	}
	fx.write(tcp(B, A, 5000, 22, packet.TCPSyn))
	fx.expectToStack(t, time.Second)
	fx.write(tcp(E, A, 5000, 22, packet.TCPSyn), tcp(E, A, 5001, 22, packet.TCPSyn))
	select {
	case a := <-called:
		if a != E {
			t.Fatalf("called for %s", a)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no call for the first packet")
	}
	select {
	case a := <-called:
		t.Fatalf("called again, for %s", a)
	case <-time.After(100 * time.Millisecond):
	}
	if fx.w.CancelFirst(E) {
		t.Fatal("the wait is still there after its packet")
	}
}
