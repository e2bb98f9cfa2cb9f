package vnet

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// The Bind's own contract: StdNetEndpoints both ways, net.ErrClosed after
// Close, and Open again after Close.
func TestBindContract(t *testing.T) {
	p := newPair(t, Config{})
	b := p.hb.NewBind()
	fns, port, err := b.Open(51820)
	if err != nil || port != 51820 || len(fns) != 1 {
		t.Fatalf("Open: %v, %d, %d fns", err, port, len(fns))
	}
	if _, _, err := b.Open(0); !errors.Is(err, conn.ErrBindAlreadyOpen) {
		t.Errorf("second Open: %v", err)
	}
	to := netip.AddrPortFrom(p.hb.Addr(), port)
	send(t, p.a, to, "one")
	send(t, p.a, to, "two")
	bufs := [][]byte{make([]byte, 100), make([]byte, 100)}
	sizes, eps := make([]int, 2), make([]conn.Endpoint, 2)
	n, err := fns[0](bufs, sizes, eps)
	if err != nil || n != 2 {
		t.Fatalf("receive: %d, %v", n, err)
	}
	for i, want := range []string{"one", "two"} {
		std, ok := eps[i].(*conn.StdNetEndpoint)
		if !ok || std.AddrPort != p.a.LocalAddrPort() || string(bufs[i][:sizes[i]]) != want {
			t.Fatalf("packet %d: %q from %#v", i, bufs[i][:sizes[i]], eps[i])
		}
	}
	if err := b.Send([][]byte{[]byte("back")}, eps[0]); err != nil {
		t.Fatal(err)
	}
	if _, msg, ok := poll(p.a); !ok || msg != "back" {
		t.Fatalf("reply: %q", msg)
	}
	ep, err := b.ParseEndpoint("[::ffff:10.0.0.1]:1000")
	if err != nil || ep.(*conn.StdNetEndpoint).AddrPort != p.a.LocalAddrPort() {
		t.Errorf("ParseEndpoint: %v, %v", ep, err)
	}
	if err := b.Send([][]byte{{1}}, fakeEndpoint{}); !errors.Is(err, conn.ErrWrongEndpointType) {
		t.Errorf("Send to a foreign endpoint: %v", err)
	}

	// A receive blocked in Close returns net.ErrClosed, as do later ones.
	errc := make(chan error, 1)
	go func() {
		_, err := fns[0](bufs, sizes, eps)
		errc <- err
	}()
	b.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("receive across Close: %v", err)
	}
	if _, err := fns[0](bufs, sizes, eps); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("receive after Close: %v", err)
	}
	if err := b.Send([][]byte{{1}}, eps[0]); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	// The port is free again, and the Bind opens on it.
	fns, port, err = b.Open(51820)
	if err != nil || port != 51820 {
		t.Fatalf("Open after Close: %d, %v", port, err)
	}
	send(t, p.a, to, "three")
	if n, err := fns[0](bufs, sizes, eps); err != nil || n != 1 || string(bufs[0][:sizes[0]]) != "three" {
		t.Fatalf("receive after reopening: %d, %v", n, err)
	}
	b.Close()
}

type fakeEndpoint struct{}

func (fakeEndpoint) ClearSrc()           {}
func (fakeEndpoint) SrcToString() string { return "" }
func (fakeEndpoint) DstToString() string { return "" }
func (fakeEndpoint) DstToBytes() []byte  { return nil }
func (fakeEndpoint) DstIP() netip.Addr   { return netip.Addr{} }
func (fakeEndpoint) SrcIP() netip.Addr   { return netip.Addr{} }

// wgDevice is stock wireguard-go on a vnet Bind, with a channel TUN.
type wgDevice struct {
	pub  [32]byte
	ip   netip.Addr // inside the tunnel
	tun  *tuntest.ChannelTUN
	dev  *device.Device
	bind *Bind
}

func newWGDevice(t *testing.T, h *Host, ip string, port uint16) *wgDevice {
	t.Helper()
	var priv [32]byte
	rand.Read(priv[:])
	priv[0] &= 248
	priv[31] = priv[31]&127 | 64
	pub, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		t.Fatal(err)
	}
	d := &wgDevice{ip: netip.MustParseAddr(ip), tun: tuntest.NewChannelTUN(), bind: h.NewBind()}
	copy(d.pub[:], pub)
	d.dev = device.NewDevice(d.tun.TUN(), d.bind, device.NewLogger(device.LogLevelError, h.Name()+": "))
	if err := d.dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=%d\n", hex.EncodeToString(priv[:]), port)); err != nil {
		t.Fatal(err)
	}
	if err := d.dev.Up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.dev.Close)
	return d
}

// addPeer makes o a peer of d, at endpoint if it is not empty.
func (d *wgDevice) addPeer(t *testing.T, o *wgDevice, endpoint string) {
	t.Helper()
	cfg := fmt.Sprintf("public_key=%s\nallowed_ip=%s/32\n", hex.EncodeToString(o.pub[:]), o.ip)
	if endpoint != "" {
		cfg += "endpoint=" + endpoint + "\n"
	}
	if err := d.dev.IpcSet(cfg); err != nil {
		t.Fatal(err)
	}
}

// endpointOf returns the endpoint d has for peer o.
func (d *wgDevice) endpointOf(t *testing.T, o *wgDevice) string {
	t.Helper()
	s, err := d.dev.IpcGet()
	if err != nil {
		t.Fatal(err)
	}
	in := false
	for _, line := range strings.Split(s, "\n") {
		if k, ok := strings.CutPrefix(line, "public_key="); ok {
			in = k == hex.EncodeToString(o.pub[:])
		}
		if e, ok := strings.CutPrefix(line, "endpoint="); ok && in {
			return e
		}
	}
	return ""
}

// ping sends an ICMP packet into from's tunnel and waits for it to come
// out of to's.
func ping(t *testing.T, from, to *wgDevice) {
	t.Helper()
	msg := tuntest.Ping(to.ip, from.ip)
	timeout := time.After(10 * time.Second)
	select {
	case from.tun.Outbound <- msg:
	case <-timeout:
		t.Fatalf("%v -> %v: the device took no packet", from.ip, to.ip)
	}
	select {
	case got := <-to.tun.Inbound:
		if !bytes.Equal(got, msg) {
			t.Fatalf("%v -> %v: packet changed", from.ip, to.ip)
		}
	case <-timeout:
		t.Fatalf("%v -> %v: nothing came through the tunnel", from.ip, to.ip)
	}
}

// Two stock wireguard-go devices on one network, with each other's
// endpoints: a handshake, packets both ways, and again after BindUpdate
// closed and reopened both Binds.
func TestWireGuardOneNetwork(t *testing.T) {
	w := newWorld(t, Config{})
	lan := must(w.NewNetwork("lan", lanPrefix))
	ha, hb := must(lan.AddHost("a")), must(lan.AddHost("b"))
	a := newWGDevice(t, ha, "192.168.99.1", 51820)
	b := newWGDevice(t, hb, "192.168.99.2", 51820)
	a.addPeer(t, b, hb.Addr().String()+":51820")
	b.addPeer(t, a, ha.Addr().String()+":51820")
	ping(t, a, b)
	ping(t, b, a)
	for _, d := range []*wgDevice{a, b} {
		if err := d.dev.BindUpdate(); err != nil {
			t.Fatal(err)
		}
	}
	ping(t, a, b)
	ping(t, b, a)
}

// A device behind an endpoint-independent NAT that knows a public
// device's endpoint: its handshake goes out through the NAT, the public
// device learns the NAT's mapping from it (WireGuard's roaming) and
// answers there, with some delay on the way.
func TestWireGuardThroughNAT(t *testing.T) {
	s := newSite(t, newWorld(t, Config{}), NATConfig{})
	s.a.Link().Set(LinkConfig{Delay: 5 * time.Millisecond})
	s.s1.Link().Set(LinkConfig{Delay: 10 * time.Millisecond})
	inside := newWGDevice(t, s.a, "192.168.99.1", 51820)
	public := newWGDevice(t, s.s1, "192.168.99.2", 51820)
	inside.addPeer(t, public, "203.0.113.1:51820")
	public.addPeer(t, inside, "")
	ping(t, inside, public)
	ping(t, public, inside)
	want := netip.AddrPortFrom(s.nat.Public(), 51820).String() // the port is kept
	if got := public.endpointOf(t, inside); got != want {
		t.Errorf("the public device has endpoint %q for the inside one, want the NAT's mapping %s", got, want)
	}
	// The NAT's address changes: the inside device's next packets come
	// from the new one, and the public device follows.
	if err := s.nat.SetPublicAddr(netip.MustParseAddr("203.0.113.51")); err != nil {
		t.Fatal(err)
	}
	ping(t, inside, public)
	ping(t, public, inside)
	if got := public.endpointOf(t, inside); got != "203.0.113.51:51820" {
		t.Errorf("after the move the public device has %q", got)
	}
}
