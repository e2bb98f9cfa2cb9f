package node

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// A device a peer hosts (peers[].devices) cannot take its address over by
// a direct session, even where a rule allows its key: its handshake is
// refused, and the address stays the home's in the device.
func TestHostedDeviceKeyCannotPeerDirectly(t *testing.T) {
	h, n, d := prepare(t, "home"), prepare(t, "n"), prepare(t, "device")
	h.start(t, "")
	kd := d.key.Public().String()
	n.start(t, peerDoc(h)+fmt.Sprintf("devices = [%q]\n", kd)+allowDoc(kd, "tcp", "7"))
	n.echoServer(t, 7)
	d.start(t, peerDoc(n))
	if c, err := d.dial(n.Address(), 7, 3*time.Second); err == nil {
		c.Close()
		t.Fatal("a device hosted by another peer opened a direct session")
	}
	testnet.WaitFor(t, 5*time.Second, "the refusal logged", func() bool {
		_, ok := n.logs.find("handshake refused: a device hosted by another peer", d.key.Public().ShortString())
		return ok
	})
	n.peers.Lock()
	p := n.peers.ByDevice(d.key.Public().Address())
	direct := n.peers.Get(d.key.Public())
	n.peers.Unlock()
	if p == nil || p.Key != h.key.Public() || direct != nil {
		t.Fatalf("the device's address belongs to %v (direct peer %v)", p, direct)
	}
	if got := p.AllowedIPs(); len(got) < 2 || got[len(got)-1].Addr() != d.key.Public().Address() {
		t.Fatalf("the home's AllowedIPs %v lack the device", got)
	}
}

// The home node refuses to host a key that is its own peer's, the node's
// own, or a device another peer hosts; the API's answers carry the status
// codes the CLI turns into exit statuses.
func TestDeviceAPI(t *testing.T) {
	h, n := prepare(t, "home"), prepare(t, "n")
	n.start(t, "")
	h.start(t, peerDoc(n))
	api := DevicesArea{h.Node}
	ctx := context.Background()
	if _, err := api.AddDevice(ctx, adminapi.DeviceAddRequest{Name: "phone"}); err == nil || !strings.Contains(err.Error(), "--endpoint") {
		// Userspace test nodes listen on every address; the test host may
		// have one: accept either a clear error or a working endpoint.
		if err != nil {
			t.Fatalf("no endpoint: %v", err)
		}
		if _, err := api.RemoveDevice(ctx, adminapi.DeviceRemoveRequest{Device: "phone"}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := api.AddDevice(ctx, adminapi.DeviceAddRequest{Name: "phone", Endpoint: "home.example.org:4610"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.Config, "Endpoint = home.example.org:4610\n") || !strings.Contains(r.Config, "AllowedIPs = fc00::/8\n") ||
		!strings.Contains(r.Config, "Address = "+r.Device.Address+"/128\n") || !strings.Contains(r.Peers, r.Device.PublicKey) {
		t.Fatalf("config:\n%s\n%s", r.Config, r.Peers)
	}
	if _, ok := h.logs.find("PrivateKey"); ok {
		t.Fatal("the private key was logged")
	}
	code := func(err error) int {
		if re, ok := err.(*adminapi.RequestError); ok {
			return re.Code
		}
		return 0
	}
	if _, err := api.AddDevice(ctx, adminapi.DeviceAddRequest{Name: "phone", Endpoint: "1.2.3.4:5"}); code(err) != 409 {
		t.Fatalf("duplicate name: %v", err)
	}
	for _, bad := range []adminapi.DeviceAddRequest{{Name: ""}, {Name: "a/b", Endpoint: "1.2.3.4:5"}, {Name: "ok", Endpoint: "1.2.3.4"}} {
		if _, err := api.AddDevice(ctx, bad); code(err) != 400 {
			t.Fatalf("%+v: %v", bad, err)
		}
	}
	if _, err := api.RemoveDevice(ctx, adminapi.DeviceRemoveRequest{Device: "tablet"}); code(err) != 404 {
		t.Fatalf("unknown device: %v", err)
	}
	list, _ := api.Devices(ctx)
	if len(list) != 1 || list[0].Name != "phone" || list[0].Up {
		t.Fatalf("list %+v", list)
	}
	if !h.filter.Hosts(h.devices.List()[0].Address()) {
		t.Fatal("the filter does not know the hosted device")
	}
	// Kept across a restart.
	h.Close()
	h.start(t, peerDoc(n))
	if list, _ := (DevicesArea{h.Node}).Devices(ctx); len(list) != 1 || list[0].PublicKey != r.Device.PublicKey {
		t.Fatalf("after restart: %+v", list)
	}
	if _, err := (DevicesArea{h.Node}).RemoveDevice(ctx, adminapi.DeviceRemoveRequest{Device: r.Device.Address}); err != nil {
		t.Fatal(err)
	}
	if h.filter.Hosts(netipMust(r.Device.Address)) {
		t.Fatal("still hosted after remove")
	}
}

func netipMust(s string) netip.Addr { return netip.MustParseAddr(s) }
