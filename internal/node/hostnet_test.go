package node

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/offers"
	"github.com/tomoe-net/tomoe/internal/routes"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// What the node makes of the host's networks (routes.Interface.WatchHost
// reports them in kernel mode; here they are handed to onHostChange): an
// accepted route inside one is not installed (conflict, host_network),
// the host's networks are left out of the peer's AllowedIPs, the host's
// addresses are neither forwarded nor dialled through the proxies, and
// all of it follows a change of network.
func TestHostNetworksAreNotTunnelled(t *testing.T) {
	g, x := prepare(t, "g"), prepare(t, "x")
	x.start(t, allowDoc(g.key.Public().String(), "icmp", ""))
	g.start(t, peerDoc(x)+acceptDoc(x.Address().String(), "192.168.0.0/16")+allowDoc(x.key.Public().String(), "icmp", ""))
	if _, err := g.StatusArea().Ping(context.Background(), adminapi.PingRequest{Address: x.Address().String()}); err != nil {
		t.Fatalf("g pings x: %v", err)
	}
	testnet.WaitFor(t, 10*time.Second, "g has x's own (empty) offer", func() bool {
		return g.routes.Learned(x.key.Public())
	})
	g.routes.HandleControl(x.Address(), offers.Message{Type: offers.TypeOffer, Boot: 1, Seq: 1,
		Routes: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("192.168.1.7/32")}})

	home := netip.MustParsePrefix("192.168.1.0/24")
	g.routes.OnHostChange(routes.Host{Networks: []netip.Prefix{home, netip.MustParsePrefix("192.168.1.1/32")}, Addrs: []netip.Addr{netip.MustParseAddr("192.168.1.2")}}, nil)
	if l := g.learned(x, "192.168.1.7/32"); l.State != "conflict" || l.Reason != "host_network" {
		t.Errorf("a route inside the host's LAN: %+v", l)
	}
	if l := g.learned(x, "192.168.0.0/16"); l.State != "installed" {
		t.Errorf("a route around the host's LAN: %+v", l)
	}
	allowed := func() []netip.Prefix {
		g.routes.Lock()
		defer g.routes.Unlock()
		return slices.Clone(g.peers.Get(x.key.Public()).RouteIPs)
	}
	in := func(ps []netip.Prefix, a string) bool {
		return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(netip.MustParseAddr(a)) })
	}
	if ips := allowed(); in(ips, "192.168.1.7") || in(ips, "192.168.1.1") || !in(ips, "192.168.2.5") || !in(ips, "192.168.0.1") {
		t.Errorf("x's AllowedIPs for its routes: %v", ips)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := g.dialOverlay(ctx, "tcp", "192.168.1.2:22"); err == nil || !strings.Contains(err.Error(), "an address of this host") {
		t.Errorf("the proxies dial the host's own address: %v", err)
	}

	// The host leaves that LAN.
	g.routes.OnHostChange(routes.Host{Networks: []netip.Prefix{netip.MustParsePrefix("172.20.0.0/24")}, Addrs: []netip.Addr{netip.MustParseAddr("172.20.0.2")}}, nil)
	if l := g.learned(x, "192.168.1.7/32"); l.State != "installed" {
		t.Errorf("after the host left its LAN: %+v", l)
	}
	if ips := allowed(); !slices.Contains(ips, netip.MustParsePrefix("192.168.0.0/16")) || !in(ips, "192.168.1.7") {
		t.Errorf("x's AllowedIPs after the host left its LAN: %v", ips)
	}
}
