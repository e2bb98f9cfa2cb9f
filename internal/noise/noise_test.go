package noise

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/packet"
)

func newKey(t testing.TB) identity.PrivateKey {
	t.Helper()
	k, err := identity.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// wgDevice is stock wireguard-go on stock sockets with key k.
func wgDevice(t *testing.T, k identity.PrivateKey) *device.Device {
	t.Helper()
	dev := device.NewDevice(tuntest.NewChannelTUN().TUN(), conn.NewStdNetBind(), device.NewLogger(device.LogLevelSilent, ""))
	raw := k.Raw()
	if err := dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\n", hex.EncodeToString(raw[:]))); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dev.Close)
	return dev
}

func addPeer(t *testing.T, dev *device.Device, pub identity.PublicKey, endpoint string) {
	t.Helper()
	cfg := fmt.Sprintf("public_key=%s\nallowed_ip=%s/128\n", hex.EncodeToString(pub[:]), pub.Address())
	if endpoint != "" {
		cfg += "endpoint=" + endpoint + "\n"
	}
	if err := dev.IpcSet(cfg); err != nil {
		t.Fatal(err)
	}
}

func listenPort(t *testing.T, dev *device.Device) int {
	t.Helper()
	s, _ := dev.IpcGet()
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(line, "listen_port="); ok {
			var p int
			fmt.Sscan(v, &p)
			return p
		}
	}
	t.Fatal("no listen_port")
	return 0
}

// captureInitiation has stock WireGuard send a real initiation to a socket
// we hold, so the opener is checked against the reference implementation.
func captureInitiation(t *testing.T, to identity.PublicKey) (from identity.PrivateKey, msg []byte) {
	t.Helper()
	sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	from = newKey(t)
	ctun := tuntest.NewChannelTUN()
	dev := device.NewDevice(ctun.TUN(), conn.NewStdNetBind(), device.NewLogger(device.LogLevelSilent, ""))
	t.Cleanup(dev.Close)
	raw := from.Raw()
	if err := dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\n", hex.EncodeToString(raw[:]))); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	addPeer(t, dev, to, sock.LocalAddr().String())
	ctun.Outbound <- packet.EchoRequest(from.Public().Address(), to.Address(), 1, 1, nil)
	sock.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, _, err := sock.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != InitiationSize || buf[0] != TypeInitiation {
		t.Fatalf("captured %d bytes of type %d", n, buf[0])
	}
	return from, buf[:n]
}

func TestOpenAgainstWireGuard(t *testing.T) {
	me := newKey(t)
	from, msg := captureInitiation(t, me.Public())
	o := NewOpener(me)
	got, ts, x, err := o.Open(msg)
	if err != nil || got != from.Public() || x != 2 {
		t.Fatalf("Open = %v, %d X25519, %v; want %s", got, x, err, from.Public())
	}
	// The timestamp is the initiator's TAI64N clock, about now.
	secs := int64(binary.BigEndian.Uint64(ts[:8]) - (1<<62 + 10))
	if d := time.Since(time.Unix(secs, 0)); d < -time.Minute || d > time.Minute {
		t.Fatalf("timestamp %x is %v away from now", ts, d)
	}
	// Someone else's key cannot open it.
	if _, _, _, err := NewOpener(newKey(t)).Open(msg); err == nil {
		t.Fatal("opened with the wrong key")
	}
	// Any flipped bit before the MACs fails.
	for _, i := range []int{5, offEphemeral + 3, offStatic + 7, offTimestamp + 1} {
		bad := append([]byte{}, msg...)
		bad[i] ^= 1
		if _, _, _, err := o.Open(bad); err == nil {
			t.Errorf("bit flip at %d accepted", i)
		}
	}
}

// TestInitiationAgainstWireGuard: what Initiation builds, stock WireGuard
// accepts (it answers with a handshake response), and Open reads back.
func TestInitiationAgainstWireGuard(t *testing.T) {
	resp := newKey(t)
	dev := wgDevice(t, resp)
	from := newKey(t)
	addPeer(t, dev, from.Public(), "")
	ts := TimestampOf(time.Now())
	msg, err := Initiation(from, resp.Public(), ts, 77)
	if err != nil {
		t.Fatal(err)
	}
	got, gotTS, _, err := NewOpener(resp).Open(msg)
	if err != nil || got != from.Public() || gotTS != ts {
		t.Fatalf("Open = %v, %x, %v; want %s, %x", got, gotTS, err, from.Public(), ts)
	}
	sock, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: listenPort(t, dev)}
	if _, err := sock.WriteToUDP(msg, dst); err != nil {
		t.Fatal(err)
	}
	sock.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 256)
	n, _, err := sock.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("no answer from WireGuard: %v", err)
	}
	if n != ResponseSize || buf[0] != TypeResponse || binary.LittleEndian.Uint32(buf[8:12]) != 77 {
		t.Fatalf("WireGuard answered %d bytes of type %d for receiver %d", n, buf[0], binary.LittleEndian.Uint32(buf[8:12]))
	}
}

// TestCookieAgainstWireGuard: a cookie reply made by wireguard-go's
// CookieChecker opens, and the mac2 it gives satisfies the checker.
func TestCookieAgainstWireGuard(t *testing.T) {
	resp, from := newKey(t), newKey(t)
	var cc device.CookieChecker
	cc.Init(device.NoisePublicKey(resp.Public()))
	msg, err := Initiation(from, resp.Public(), TimestampOf(time.Now()), 5)
	if err != nil {
		t.Fatal(err)
	}
	src := []byte("192.0.2.1:4610")
	if cc.CheckMAC2(msg, src) {
		t.Fatal("mac2 valid before any cookie")
	}
	r, err := cc.CreateReply(msg, 5, src)
	if err != nil {
		t.Fatal(err)
	}
	reply := make([]byte, CookieSize)
	binary.LittleEndian.PutUint32(reply[0:], r.Type)
	binary.LittleEndian.PutUint32(reply[4:], r.Receiver)
	copy(reply[8:], r.Nonce[:])
	copy(reply[32:], r.Cookie[:])
	c, err := OpenCookieReply(reply, resp.Public(), msg)
	if err != nil {
		t.Fatal(err)
	}
	SetMAC2(msg, c)
	if !cc.CheckMAC2(msg, src) {
		t.Fatal("mac2 from the cookie is not accepted")
	}
	if cc.CheckMAC2(msg, []byte("192.0.2.2:4610")) {
		t.Fatal("the cookie works for another source")
	}
	if !NewOpener(resp).CheckMAC1(msg) {
		t.Fatal("SetMAC2 broke mac1")
	}
}

func BenchmarkOpenBadMAC1(b *testing.B) {
	o := NewOpener(newKey(b))
	msg := make([]byte, InitiationSize)
	msg[0] = TypeInitiation
	b.ReportAllocs()
	for b.Loop() {
		o.Open(msg) // fails at mac1: the cheap rejection
	}
}

func BenchmarkOpenValid(b *testing.B) {
	me, from := newKey(b), newKey(b)
	msg, err := Initiation(from, me.Public(), TimestampOf(time.Now()), 1)
	if err != nil {
		b.Fatal(err)
	}
	o := NewOpener(me)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := o.Open(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzOpenInitiation(f *testing.F) {
	o := NewOpener(identity.PrivateKeyFromBytes([32]byte{1, 2, 3}))
	seed := make([]byte, InitiationSize)
	seed[0] = TypeInitiation
	f.Add(seed)
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, msg []byte) {
		if _, _, _, err := o.Open(msg); err == nil {
			t.Fatalf("random message opened: %x", msg)
		}
		// The mac1-valid path must not panic either: fix the mac.
		if len(msg) == InitiationSize {
			fixed := append([]byte{}, msg...)
			fixed[0], fixed[1], fixed[2], fixed[3] = TypeInitiation, 0, 0, 0
			mac := MAC(o.mac1Key[:], fixed[:OffMAC1])
			copy(fixed[OffMAC1:OffMAC2], mac[:])
			o.Open(fixed)
		}
	})
}

func FuzzOpenCookieReply(f *testing.F) {
	resp := identity.PrivateKeyFromBytes([32]byte{4})
	msg := make([]byte, InitiationSize)
	f.Add(make([]byte, CookieSize))
	f.Fuzz(func(t *testing.T, reply []byte) {
		if _, err := OpenCookieReply(reply, resp.Public(), msg); err == nil {
			t.Fatalf("random cookie reply opened: %x", reply)
		}
	})
}
