package tunwrap

import (
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/packet"
	"github.com/tomoe-net/tomoe/internal/policy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// chanDev is an in-memory Device: the test plays the local stack.
type chanDev struct {
	fromStack chan []byte // packets the "stack" sends (Read returns them)
	toStack   chan []byte // packets written to the "stack"
	interrupt chan struct{}
	closed    chan struct{}
	once      sync.Once
}

func newChanDev() *chanDev {
	return &chanDev{fromStack: make(chan []byte, 64), toStack: make(chan []byte, 64), interrupt: make(chan struct{}, 1), closed: make(chan struct{})}
}

func (d *chanDev) File() *os.File           { return nil }
func (d *chanDev) MTU() (int, error)        { return 1400, nil }
func (d *chanDev) Name() (string, error)    { return "chan", nil }
func (d *chanDev) Events() <-chan tun.Event { return nil }
func (d *chanDev) BatchSize() int           { return 8 }
func (d *chanDev) Close() error             { d.once.Do(func() { close(d.closed) }); return nil }
func (d *chanDev) Interrupt() {
	select {
	case d.interrupt <- struct{}{}:
	default:
	}
}

func (d *chanDev) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case p := <-d.fromStack:
		sizes[0] = copy(bufs[0][offset:], p)
		return 1, nil
	case <-d.interrupt:
		return 0, nil
	case <-d.closed:
		return 0, os.ErrClosed
	}
}

func (d *chanDev) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		d.toStack <- append([]byte(nil), b[offset:]...)
	}
	return len(bufs), nil
}

type fixture struct {
	me, bob, eve identity.PublicKey
	dev          *chanDev
	w            *Wrapper
	filter       *policy.Filter
	resolved     chan netip.Addr
}

func key(t *testing.T) identity.PublicKey {
	k, err := identity.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

func newFixture(t *testing.T, hold time.Duration) *fixture {
	fx := &fixture{me: key(t), bob: key(t), eve: key(t), dev: newChanDev(), resolved: make(chan netip.Addr, 8)}
	rule, _ := policy.ParseRule(fx.bob.String(), "tcp", "22")
	fx.filter = policy.NewFilter(policy.Local{Addr: fx.me.Address(), Site: fx.me.SitePrefix()}, policy.Compile([]policy.Rule{rule}), policy.NewConntrack(0), nil)
	fx.w = New(fx.dev, Config{
		Filter:      fx.filter,
		Local:       fx.me.Address(),
		Resolve:     func(dst netip.Addr) { fx.resolved <- dst },
		HoldTimeout: hold,
	})
	fx.w.SetPeer(fx.bob.Address(), true)
	fx.w.SetRoutes([]netip.Prefix{fx.bob.SitePrefix()}, nil)
	t.Cleanup(func() { fx.w.Close() })
	return fx
}

// read performs one wrapper Read and returns the packets that survived.
func (fx *fixture) read(t *testing.T) [][]byte {
	t.Helper()
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 2000)
	}
	sizes := make([]int, 8)
	done := make(chan int, 1)
	var err error
	go func() {
		var n int
		n, err = fx.w.Read(bufs, sizes, 16)
		done <- n
	}()
	select {
	case n := <-done:
		if err != nil {
			t.Fatal(err)
		}
		var out [][]byte
		for i := 0; i < n; i++ {
			if sizes[i] > 0 {
				out = append(out, bufs[i][16:16+sizes[i]])
			}
		}
		return out
	case <-time.After(3 * time.Second):
		t.Fatal("Read blocked")
		return nil
	}
}

// pump performs one Read in the background, as WireGuard's reader would,
// discarding what it returns.
func (fx *fixture) pump() {
	bufs := [][]byte{make([]byte, 2000)}
	fx.w.Read(bufs, []int{0}, 16)
}

func tcp(src, dst netip.Addr, sport, dport uint16, flags uint8) []byte {
	return packet.TCP(src, dst, sport, dport, flags, nil)
}

func (fx *fixture) write(pkts ...[]byte) {
	bufs := make([][]byte, len(pkts))
	for i, p := range pkts {
		bufs[i] = append(make([]byte, 16), p...)
	}
	fx.w.Write(bufs, 16)
}

func (fx *fixture) expectToStack(t *testing.T, within time.Duration) []byte {
	t.Helper()
	select {
	case p := <-fx.dev.toStack:
		return p
	case <-time.After(within):
		t.Fatal("nothing delivered to the stack")
		return nil
	}
}

func (fx *fixture) expectNothingToStack(t *testing.T) {
	t.Helper()
	select {
	case p := <-fx.dev.toStack:
		t.Fatalf("unexpected delivery %x", p)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestOutboundFilterAndRoutes(t *testing.T) {
	fx := newFixture(t, time.Second)
	A, B, E := fx.me.Address(), fx.bob.Address(), fx.eve.Address()
	fx.dev.fromStack <- tcp(A, B, 1000, 22, packet.TCPSyn)
	if got := fx.read(t); len(got) != 1 {
		t.Fatalf("allowed outbound: %d packets", len(got))
	}
	// Spoofed source: dropped, counted.
	fx.dev.fromStack <- tcp(E, B, 1000, 22, packet.TCPSyn)
	if got := fx.read(t); len(got) != 0 {
		t.Fatal("spoofed packet passed")
	}
	if fx.w.Stats().Dropped[policy.DropSpoofed].Load() != 1 {
		t.Fatal("spoof not counted")
	}
	// To a site behind bob: routed.
	fx.dev.fromStack <- tcp(A, fx.bob.SitePrefix().Addr().Next(), 1000, 80, packet.TCPSyn)
	if got := fx.read(t); len(got) != 1 {
		t.Fatal("site-prefix destination not routed")
	}
}

func TestHoldReleaseAndReject(t *testing.T) {
	fx := newFixture(t, 10*time.Second)
	A, E := fx.me.Address(), fx.eve.Address()
	first := tcp(A, E, 1000, 80, packet.TCPSyn)
	fx.dev.fromStack <- first
	fx.dev.fromStack <- tcp(A, E, 1001, 80, packet.TCPSyn)
	if got := fx.read(t); len(got) != 0 {
		t.Fatal("packet for an unknown destination was not held")
	}
	fx.read(t)
	select {
	case dst := <-fx.resolved:
		if dst != E {
			t.Fatalf("resolving %v", dst)
		}
	case <-time.After(time.Second):
		t.Fatal("resolver not called")
	}
	select {
	case <-fx.resolved:
		t.Fatal("resolver called twice for one destination")
	default:
	}
	fx.w.SetPeer(fx.bob.Address(), true)
	fx.w.SetPeer(E, true)
	fx.w.Release(E)
	got := fx.read(t)
	if len(got) != 2 || string(got[0]) != string(first) {
		t.Fatalf("released %d packets", len(got))
	}

	// Another unknown destination, rejected: the program gets ICMP unreachable.
	X := key(t).Address()
	orig := tcp(A, X, 1000, 80, packet.TCPSyn)
	fx.dev.fromStack <- orig
	fx.read(t)
	<-fx.resolved
	fx.w.Reject(X, packet.UnreachAddress)
	icmp := fx.expectToStack(t, time.Second)
	var p packet.Parsed
	if err := p.Decode(icmp); err != nil || !p.IsICMPError() || p.ICMPCode != packet.UnreachAddress || p.Inner.Dst != X || p.Dst != A {
		t.Fatalf("unreachable: %v %+v", err, p)
	}
}

func TestHoldTimesOut(t *testing.T) {
	fx := newFixture(t, 300*time.Millisecond)
	fx.dev.fromStack <- tcp(fx.me.Address(), fx.eve.Address(), 1, 2, packet.TCPSyn)
	fx.read(t)
	icmp := fx.expectToStack(t, 2*time.Second)
	var p packet.Parsed
	if p.Decode(icmp) != nil || !p.IsICMPError() {
		t.Fatal("no unreachable after the hold timeout")
	}
	if fx.w.Pending() != 0 {
		t.Fatal("expired entry kept")
	}
}

func TestInboundFilter(t *testing.T) {
	fx := newFixture(t, time.Second)
	A, B, E := fx.me.Address(), fx.bob.Address(), fx.eve.Address()
	fx.write(tcp(B, A, 5000, 22, packet.TCPSyn), tcp(E, A, 5000, 22, packet.TCPSyn), tcp(B, A, 5000, 23, packet.TCPSyn))
	got := fx.expectToStack(t, time.Second)
	var p packet.Parsed
	p.Decode(got)
	if p.Src != B || p.DstPort != 22 {
		t.Fatalf("delivered %+v", p.Flow)
	}
	fx.expectNothingToStack(t)
	if fx.filter.Denied(E) != 1 || fx.filter.Denied(B) != 1 {
		t.Fatal("denials not counted per peer")
	}
}

func TestPing(t *testing.T) {
	fx := newFixture(t, time.Second)
	A, B := fx.me.Address(), fx.bob.Address()
	type result struct {
		rtt time.Duration
		err error
	}
	res := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		rtt, err := fx.w.Ping(ctx, B, 56)
		res <- result{rtt, err}
	}()
	got := fx.read(t)
	if len(got) != 1 {
		t.Fatal("ping not injected")
	}
	var req packet.Parsed
	if err := req.Decode(got[0]); err != nil || !req.IsEchoRequest() || req.Src != A || req.Dst != B {
		t.Fatalf("injected %+v %v", req, err)
	}
	// A reply with the wrong payload is not ours: it goes to the stack (and
	// there, with no flow of its own... the filter lets it pass as a reply).
	reply := append([]byte(nil), got[0]...)
	copy(reply[8:24], got[0][24:40])
	copy(reply[24:40], got[0][8:24])
	icmp := reply[packet.IPv6HeaderLen:]
	icmp[0] = packet.ICMPv6EchoReply
	icmp[2], icmp[3] = 0, 0
	binary.BigEndian.PutUint16(icmp[2:4], packet.TransportChecksum(B, A, packet.ProtoICMPv6, icmp))
	fx.write(reply)
	r := <-res
	if r.err != nil || r.rtt <= 0 {
		t.Fatalf("ping: %v %v", r.rtt, r.err)
	}
	fx.expectNothingToStack(t)

	// No answer: the context ends it.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	go fx.pump()
	if _, err := fx.w.Ping(ctx, B, 56); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unanswered ping: %v", err)
	}
}

func TestPingUnknownIsUnreachable(t *testing.T) {
	fx := newFixture(t, time.Second)
	X := key(t).Address()
	go func() {
		dst := <-fx.resolved
		fx.w.Reject(dst, packet.UnreachAddress)
	}()
	go fx.pump()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := fx.w.Ping(ctx, X, 56)
	var ue *UnreachableError
	if !errors.As(err, &ue) || ue.Code != packet.UnreachAddress {
		t.Fatalf("ping of an unknown address: %v", err)
	}
	fx.expectNothingToStack(t) // the error was the pinger's, not the stack's
}

func TestReadReturnsClosed(t *testing.T) {
	fx := newFixture(t, time.Second)
	done := make(chan error, 1)
	go func() {
		bufs := [][]byte{make([]byte, 100)}
		_, err := fx.w.Read(bufs, []int{0}, 0)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	fx.w.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Read after Close returned no error")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Read still blocked after Close")
	}
}

func BenchmarkWriteAllowed(b *testing.B) {
	me, bob := key(&testing.T{}), key(&testing.T{})
	rule, _ := policy.ParseRule(bob.String(), "tcp", "")
	f := policy.NewFilter(policy.Local{Addr: me.Address(), Site: me.SitePrefix()}, policy.Compile([]policy.Rule{rule}), policy.NewConntrack(0), nil)
	w := New(discardDev{}, Config{Filter: f, Local: me.Address()})
	defer w.Close()
	pkt := append(make([]byte, 16), tcp(bob.Address(), me.Address(), 1, 22, packet.TCPAck)...)
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = pkt
	}
	b.SetBytes(int64(len(bufs)))
	b.ReportAllocs()
	for b.Loop() {
		w.Write(bufs, 16)
	}
}

type discardDev struct{}

func (discardDev) File() *os.File                         { return nil }
func (discardDev) MTU() (int, error)                      { return 1400, nil }
func (discardDev) Name() (string, error)                  { return "discard", nil }
func (discardDev) Events() <-chan tun.Event               { return nil }
func (discardDev) BatchSize() int                         { return 64 }
func (discardDev) Close() error                           { return nil }
func (discardDev) Interrupt()                             {}
func (discardDev) Read([][]byte, []int, int) (int, error) { return 0, os.ErrClosed }
func (discardDev) Write(b [][]byte, _ int) (int, error)   { return len(b), nil }

// WaitStaged ends once WireGuard took the injected packets and came back
// for more (so it has queued them for their peers), not before.
func TestWaitStaged(t *testing.T) {
	fx := newFixture(t, time.Second)
	staged := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		return fx.w.WaitStaged(ctx)
	}
	if err := staged(); err != nil {
		t.Fatalf("nothing injected: %v", err)
	}
	fx.w.Inject(packet.UDP(fx.me.Address(), fx.bob.Address(), 4610, 4610, []byte("withdrawn")))
	if err := staged(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("before WireGuard read it: %v", err)
	}
	if got := fx.read(t); len(got) != 1 {
		t.Fatalf("read %d packets", len(got))
	}
	if err := staged(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read, but WireGuard has not come back for more: %v", err)
	}
	reading := make(chan struct{})
	go func() {
		defer close(reading)
		fx.w.Read([][]byte{make([]byte, 2000)}, []int{0}, 16) // blocks until Close
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := fx.w.WaitStaged(ctx); err != nil {
		t.Fatalf("WireGuard came back for more: %v", err)
	}
	fx.w.Close()
	<-reading
}
