// Package bridgetest holds what the tests of the bridge protocol's
// packages (wire, keycache, the bridge role, its client, nat) share: keys,
// the sample messages every encoder test and fuzz target starts from, and
// frames a forger could send. Only tests import it.
package bridgetest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/crypto/nacl/box"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/transport"
)

// Key is a new private key.
func Key(t testing.TB) identity.PrivateKey {
	t.Helper()
	k, err := identity.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// SampleMessages is one message of every kind and shape the wire carries:
// the seeds of the encoder tests and of the fuzz targets.
func SampleMessages() []wire.Message {
	k := identity.PublicKey{1, 2, 3}
	eps := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.7:4610"), netip.MustParseAddrPort("[2001:db8::1]:9")}
	return []wire.Message{
		{Kind: wire.KindRegister, Time: 42, Token: "tok", Endpoints: eps},
		{Kind: wire.KindRegister, Time: 43},
		{Kind: wire.KindRegister, Time: 44, Seq: 77, Token: "tok", Endpoints: eps[1:]},
		{Kind: wire.KindRegistered, Time: 1, Echo: 42, ID: 7, Interval: 20, Endpoints: eps[:1]},
		{Kind: wire.KindRefused, Time: 1, Echo: 43, Text: "not allowed"},
		{Kind: wire.KindLookup, Time: 1, Seq: 9, Address: k.Address()},
		{Kind: wire.KindLookupReply, Time: 1, Seq: 9, Address: k.Address()},
		{Kind: wire.KindLookupReply, Time: 1, Seq: 9, Address: k.Address(), Found: true, Key: k, ID: 3, Endpoints: eps},
		{Kind: wire.KindIntroduce, Time: 1, Key: k, ID: 3, Endpoints: eps},
		{Kind: wire.KindProbe, Time: 1, Seq: 1 << 60},
		{Kind: wire.KindProbeAck, Time: 1, Echo: 1 << 60, Seq: 5},
		{Kind: wire.KindProbeAck, Time: 2, Echo: 5},
		{Kind: wire.KindUnregister, Time: 1},
		{Kind: wire.KindChallenge, Time: 1, Echo: 44, Seq: 77},
		{Kind: wire.KindOrg, Time: 1, Data: []byte{0x20, 1, 1, 0}}, // an orgsync Hello that wants certificates
		{Kind: wire.KindOrg, Time: 2, Data: bytes.Repeat([]byte{0x5a}, wire.MaxOrgData)},
	}
}

// RandomKey is 32 random bytes: a public key nobody holds.
func RandomKey() identity.PublicKey {
	var k identity.PublicKey
	rand.Read(k[:])
	return k
}

// ForgedFlood is n control frames that claim the senders claim(i) and
// carry garbage, each from a source in a /64 of its own: what anyone can
// send, spoofed or not, without holding any key. What it costs a
// receiver is one X25519 per frame whose claimed sender's key is not
// cached, unless a budget stops it.
func ForgedFlood(n int, claim func(i int) identity.PublicKey) ([][]byte, []netip.AddrPort) {
	frames := make([][]byte, n)
	srcs := make([]netip.AddrPort, n)
	for i := range n {
		f := make([]byte, wire.ControlHeaderSize+64)
		f[0], f[1] = wire.FrameControl, wire.Version
		k := claim(i)
		copy(f[4:], k[:])
		rand.Read(f[4+identity.KeySize:])
		frames[i] = f
		srcs[i] = netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i), 15: 1}), 4610)
	}
	return frames, srcs
}

// SealPlain seals arbitrary plaintext as a control frame from priv to
// the key to: what a bridge or peer holding its key could send.
func SealPlain(priv identity.PrivateKey, to identity.PublicKey, plain []byte) []byte {
	shared := wire.Precompute(priv, to)
	from := priv.Public()
	var nonce [24]byte
	b := append([]byte{wire.FrameControl, wire.Version, 0, 0}, from[:]...)
	b = append(b, nonce[:]...)
	k := [32]byte(shared)
	return box.SealAfterPrecomputation(b, plain, &nonce, &k)
}

// X25519Here counts the X25519 operations keys (a keycache.Cache) does
// from now on on the calling goroutine: the receive goroutine, where a
// test calls HandleFrames as a Bind's receive goroutine would. (A subtest
// runs on a goroutine of its own: call it there.)
func X25519Here(keys interface{ OnX25519(func()) }) func() int64 {
	id := goroutineID()
	var n atomic.Int64
	keys.OnX25519(func() {
		if goroutineID() == id {
			n.Add(1)
		}
	})
	return n.Load
}

// goroutineID is the calling goroutine's number (tests only).
func goroutineID() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	id, _ := strconv.ParseUint(string(b[:bytes.IndexByte(b, ' ')]), 10, 64)
	return id
}

// OpenBind opens a real Bind on a free port and runs its receive loops
// (what wireguard-go does), so frames reach its FrameHandler.
func OpenBind(t *testing.T) (*transport.Bind, uint16) {
	t.Helper()
	return openBind(t, transport.NewBind(nil), 0)
}

// OpenBindOn is OpenBind over inner (an in-memory network's Bind), on
// port (0: a free one).
func OpenBindOn(t *testing.T, inner conn.Bind, port uint16) (*transport.Bind, uint16) {
	t.Helper()
	return openBind(t, transport.NewBindOn(inner, nil), port)
}

func openBind(t *testing.T, b *transport.Bind, port uint16) (*transport.Bind, uint16) {
	t.Helper()
	fns, port, err := b.Open(port)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bufs := make([][]byte, b.BatchSize())
			for i := range bufs {
				bufs[i] = make([]byte, 2048)
			}
			sizes := make([]int, len(bufs))
			eps := make([]conn.Endpoint, len(bufs))
			for {
				if _, err := fn(bufs, sizes, eps); err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
				}
			}
		}()
	}
	t.Cleanup(func() { b.Close(); wg.Wait() })
	return b, port
}

// RelayFrame is a relay frame to (or from) relay id id carrying payload.
func RelayFrame(id uint32, payload string) []byte {
	f := make([]byte, wire.RelayHeaderSize+len(payload))
	wire.RelayHeader(f, id)
	copy(f[wire.RelayHeaderSize:], payload)
	return f
}

// HandleWhileClosing hands frames to handle in a loop on another goroutine
// while closeIt runs, then once more after it, and closes a second time:
// what a receive goroutine does to a bridge role that shuts down under it.
// It returns when the loop has stopped.
func HandleWhileClosing(handle func([][]byte, []netip.AddrPort), closeIt func(), frames [][]byte, srcs []netip.AddrPort) {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			handle(frames, srcs)
		}
	}()
	closeIt()
	handle(frames, srcs) // after Close
	closeIt()            // twice
	close(stop)
	<-done
}
