package tunwrap

import (
	"bytes"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/packet"
	"github.com/tomoe-net/tomoe/internal/policy"
)

const testControlPort = 4610

type controlLog struct {
	mu   sync.Mutex
	got  [][]byte
	from []netip.Addr
}

func (c *controlLog) record(src netip.Addr, payload []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, append([]byte(nil), payload...))
	c.from = append(c.from, src)
}

func newControlFixture(t testing.TB, me identity.PublicKey, log *controlLog) (*chanDev, *Wrapper) {
	dev := newChanDev()
	f := policy.NewFilter(policy.Local{Addr: me.Address(), Site: me.SitePrefix()}, policy.Compile(nil), policy.NewConntrack(0), nil)
	w := New(dev, Config{Filter: f, Local: me.Address(), ControlPort: testControlPort, Control: log.record})
	return dev, w
}

// Control datagrams from peers go to the node, before the filter (no rule
// allows them) and never to the local stack; local programs cannot send
// to a control port, the node's own injected packets can.
func TestControlPort(t *testing.T) {
	fx := newFixture(t, time.Second)
	var log controlLog
	dev, w := newControlFixture(t, fx.me, &log)
	defer w.Close()
	w.SetPeer(fx.bob.Address(), true)

	in := packet.UDP(fx.bob.Address(), fx.me.Address(), testControlPort, testControlPort, []byte("offer"))
	if _, err := w.Write([][]byte{in}, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-dev.toStack:
		t.Fatalf("control datagram reached the local stack: %x", p)
	default:
	}
	if len(log.got) != 1 || !bytes.Equal(log.got[0], []byte("offer")) || log.from[0] != fx.bob.Address() {
		t.Fatalf("control got %q from %v", log.got, log.from)
	}

	out := packet.UDP(fx.me.Address(), fx.bob.Address(), 5555, testControlPort, []byte("forged offer"))
	dev.fromStack <- out
	bufs, sizes := [][]byte{make([]byte, 2000)}, []int{0}
	n, _ := w.Read(bufs, sizes, 0)
	if n != 1 || sizes[0] != 0 {
		t.Fatalf("a local program's datagram to the control port was sent (n=%d size=%d)", n, sizes[0])
	}
	w.Inject(out)
	n, _ = w.Read(bufs, sizes, 0)
	if n != 1 || sizes[0] != len(out) {
		t.Fatalf("the node's own control datagram was dropped (n=%d size=%d)", n, sizes[0])
	}
}

// FuzzWriteControl feeds arbitrary decrypted packets to the wrapper's
// inbound path with a control handler: no panic, whatever the lengths say.
func FuzzWriteControl(f *testing.F) {
	me := identity.PublicKey{1}
	peer := identity.PublicKey{2}
	f.Add(packet.UDP(peer.Address(), me.Address(), 1, testControlPort, []byte{1, 2, 0, 0, 0, 0, 0, 0, 0, 0}))
	f.Add(packet.UDP(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), 1, testControlPort, nil))
	f.Add(packet.TCP(peer.Address(), me.Address(), 1, 22, packet.TCPSyn, nil))
	var log controlLog
	dev, w := newControlFixture(f, me, &log)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-dev.toStack:
			case <-dev.closed:
				return
			}
		}
	}()
	defer func() { w.Close(); <-done }()
	f.Fuzz(func(t *testing.T, b []byte) {
		w.Write([][]byte{append([]byte(nil), b...)}, 0)
	})
}

// TestControlPortRefusesHostedDevice: a device this node hosts is no node:
// its datagrams to the home's control port (route offers, organisation
// documents) are dropped, never handed to the node, nor forwarded to
// another node's control port.
func TestControlPortRefusesHostedDevice(t *testing.T) {
	fx := newFixture(t, time.Second)
	var log controlLog
	dev, w := newControlFixture(t, fx.me, &log)
	defer w.Close()
	D := key(t).Address()
	w.cfg.Filter.SetHosted([]netip.Addr{D})
	w.SetPeer(D, true)
	w.SetPeer(fx.bob.Address(), true)

	offer := packet.UDP(D, fx.me.Address(), testControlPort, testControlPort, []byte("offer"))
	if _, err := w.Write([][]byte{offer}, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-dev.toStack:
		t.Fatalf("the device's control datagram reached the local stack: %x", p)
	default:
	}
	log.mu.Lock()
	n := len(log.got)
	log.mu.Unlock()
	if n != 0 {
		t.Fatalf("the device's control datagram reached the node: %q", log.got)
	}
	if w.Stats().Dropped[policy.DropDenied].Load() != 1 {
		t.Fatal("the device's control datagram was not counted as denied")
	}
	// Forwarded to another node's control port: dropped too.
	fwd := packet.UDP(D, fx.bob.Address(), testControlPort, testControlPort, []byte("offer"))
	if _, err := w.Write([][]byte{fwd}, 0); err != nil {
		t.Fatal(err)
	}
	if w.Stats().Hairpinned.Load() != 0 {
		t.Fatal("the device's control datagram to bob was forwarded")
	}
	// A peer's control datagram still reaches the node.
	in := packet.UDP(fx.bob.Address(), fx.me.Address(), testControlPort, testControlPort, []byte("offer"))
	if _, err := w.Write([][]byte{in}, 0); err != nil {
		t.Fatal(err)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.got) != 1 || log.from[0] != fx.bob.Address() {
		t.Fatalf("bob's control datagram: got %q from %v", log.got, log.from)
	}
}
