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
// from the wg-quick file, reaches a service on another node through its
// home, with its own address as source, once that node's config names the
// device's home (added, then removed, by a reload).
func TestHostedDeviceUserspaceHome(t *testing.T) {
	h, n := prepare(t, "home"), prepare(t, "n")
	h.start(t, "")
	r, err := (DevicesArea{h.Node}).AddDevice(context.Background(), adminapi.DeviceAddRequest{Name: "phone", Endpoint: h.endpoint()})
	if err != nil {
		t.Fatal(err)
	}
	// n allows the device's key but does not know its home yet.
	n.startFile(t, peerDoc(h)+allowDoc(r.Device.PublicKey, "tcp", "7"))
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
	reach := func(timeout time.Duration) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c, err := tnet.DialContext(ctx, "tcp6", netip.AddrPortFrom(n.Address(), 7).String())
		if err != nil {
			return "", err
		}
		defer c.Close()
		if err := testnet.RoundTrip(c, "from a userspace-hosted device", timeout); err != nil {
			return "", err
		}
		return c.LocalAddr().String(), nil
	}
	// n drops the device's address from home until its config says home
	// hosts it.
	testnet.WaitFor(t, 10*time.Second, "the device's session with home", func() bool {
		_, _ = reach(500 * time.Millisecond)
		list, _ := (DevicesArea{h.Node}).Devices(context.Background())
		return len(list) == 1 && list[0].Up
	})
	if _, err := reach(2 * time.Second); err == nil {
		t.Fatal("n answered the device before its config named the device's home")
	}
	n.writeConfig(t, peerDoc(h)+fmt.Sprintf("devices = [%q]\n", r.Device.PublicKey)+allowDoc(r.Device.PublicKey, "tcp", "7"))
	if res := n.reload(t); res.Peers.Changed != 1 {
		t.Fatalf("reload: %+v", res)
	}
	var got string
	defer func() {
		if t.Failed() {
			for _, x := range []*testNode{h, n} {
				t.Logf("%s counters %+v", x.name, x.counters())
				ps, _ := x.StatusArea().Peers(context.Background())
				for _, p := range ps {
					t.Logf("%s peer %s %s active=%v up=%v rx=%d tx=%d", x.name, p.Name, p.Address, p.Active, p.Up, p.RxBytes, p.TxBytes)
				}
			}
			x, _ := n.engine.Stats()
			t.Logf("n engine %+v", x)
		}
	}()
	testnet.WaitFor(t, 20*time.Second, "the device reaches n through its userspace home", func() bool {
		var err error
		got, err = reach(3 * time.Second)
		return err == nil
	})
	if !strings.Contains(got, devAddr.String()) {
		t.Fatalf("the device's connection came from %s, want %s", got, devAddr)
	}
	if h.wrapper.Stats().Hairpinned.Load() == 0 {
		t.Fatal("nothing hairpinned on home")
	}
	// Reloaded without the devices line: refused again.
	n.writeConfig(t, peerDoc(h)+allowDoc(r.Device.PublicKey, "tcp", "7"))
	n.reload(t)
	if _, err := reach(2 * time.Second); err == nil {
		t.Fatal("n still answers the device after its home's devices line went")
	}
	// And back, the peer's session kept (updated in place).
	n.writeConfig(t, peerDoc(h)+fmt.Sprintf("devices = [%q]\n", r.Device.PublicKey)+allowDoc(r.Device.PublicKey, "tcp", "7"))
	n.reload(t)
	testnet.WaitFor(t, 10*time.Second, "the device reaches n again", func() bool {
		_, err := reach(3 * time.Second)
		return err == nil
	})
	if _, ok := n.logs.find("devices changed"); ok {
		t.Fatal("the home's session was cut for a change of its devices")
	}
}
