package node

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// wgKeyHex turns a wg-quick base64 key into the hex the UAPI takes.
func wgKeyHex(t *testing.T, b64 string) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(b) != 32 {
		t.Fatalf("key %q: %v", b64, err)
	}
	return hex.EncodeToString(b)
}

// A home node in userspace mode hosts a device too: upstream wireguard-go
// (the library, with its own netstack, as the apps embed it), configured
// from the wg-quick file alone, reaches a service on another node through
// its home, with its own address as source.
func TestHostedDeviceUserspaceHome(t *testing.T) {
	h, n := prepare(t, "home"), prepare(t, "n")
	h.start(t, "")
	r, err := (DevicesArea{h.Node}).AddDevice(context.Background(), adminapi.DeviceAddRequest{Name: "phone", Endpoint: h.endpoint()})
	if err != nil {
		t.Fatal(err)
	}
	n.start(t, peerDoc(h)+fmt.Sprintf("devices = [%q]\n", r.Device.PublicKey)+allowDoc(r.Device.PublicKey, "tcp", "7"))
	n.echoServer(t, 7)
	// home learns n only when n sends first: make n a static peer of home
	// by restarting it with the entry (the device stays hosted).
	h.Close()
	h.start(t, peerDoc(n))
	// Its port changed: the device is given the new one (the e2e test
	// uses the file's Endpoint as it is).
	var priv, pub, addr string
	for _, l := range strings.Split(r.Config, "\n") {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		switch k, v = strings.TrimSpace(k), strings.TrimSpace(v); k {
		case "PrivateKey":
			priv = v
		case "PublicKey":
			pub = v
		case "Address":
			addr = v
		}
	}
	devAddr := netip.MustParsePrefix(addr).Addr()
	tunDev, tnet, err := netstack.CreateNetTUN([]netip.Addr{devAddr}, nil, 1400)
	if err != nil {
		t.Fatal(err)
	}
	dev := device.NewDevice(tunDev, conn.NewDefaultBind(), device.NewLogger(device.LogLevelError, "device: "))
	t.Cleanup(dev.Close)
	uapi := fmt.Sprintf("private_key=%s\npublic_key=%s\nendpoint=%s\nallowed_ip=fc00::/8\npersistent_keepalive_interval=25\n",
		wgKeyHex(t, priv), wgKeyHex(t, pub), h.endpoint())
	if err := dev.IpcSet(uapi); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	var got string
	testnet.WaitFor(t, 20*time.Second, "the device reaches n through its userspace home", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c, err := tnet.DialContext(ctx, "tcp6", netip.AddrPortFrom(n.Address(), 7).String())
		if err != nil {
			return false
		}
		defer c.Close()
		if err := testnet.RoundTrip(c, "from a userspace-hosted device", 3*time.Second); err != nil {
			return false
		}
		got = c.LocalAddr().String()
		return true
	})
	if !strings.Contains(got, devAddr.String()) {
		t.Fatalf("the device's connection came from %s, want %s", got, devAddr)
	}
	if h.wrapper.Stats().Hairpinned.Load() == 0 {
		t.Fatal("nothing hairpinned on home")
	}
}
