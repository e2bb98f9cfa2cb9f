//go:build linux

package firewall

import (
	"net/netip"
	"testing"

	"github.com/tomoe-net/tomoe/internal/testnet"
)

// Through TUN, gw answers only on its overlay addresses (node address,
// tun.ipv4): its LAN addresses, and services bound to every address, are
// the host's, out of the overlay's reach, even on a node that forwards;
// forwarding to the LAN, and the LAN reaching gw, go on as before.
func TestOverlayReachesOnlyOverlayAddresses(t *testing.T) {
	t.Parallel()
	requireFirewall(t)
	l := newFwdLab(t, true)
	l.gw.Run("ip", "addr", "add", netip.PrefixFrom(nodeAddr, 128).String(), "dev", tun, "nodad")
	const port = 9000
	own := []netip.Addr{gwTun4, nodeAddr} // overlay addresses: tun.ipv4 and the node address
	host := []netip.Addr{gwLAN4, gwLAN6}  // the host's own LAN addresses
	lanHosts := []netip.Addr{lan4, lan6}  // forwarded to
	for _, a := range append(append(own, host...), lanHosts...) {
		ns := l.gw
		if a == lan4 || a == lan6 {
			ns = l.lan
		}
		serveWho(t, ns, netip.AddrPortFrom(a, port))
	}
	reach := func(from *testnet.Netns, a netip.Addr, want bool) {
		t.Helper()
		wait := silence
		if want {
			wait = answerTimeout
		}
		_, err := who(from, netip.AddrPortFrom(a, port), wait)
		if (err == nil) != want {
			t.Errorf("%s -> %v: %v, want reachable %v", from.Name, a, err, want)
		}
	}
	for _, a := range append(append(own, host...), lanHosts...) {
		reach(l.remote, a, true) // the lab delivers them all without the firewall
	}

	open(t, l.gw, Config{TUN: tun, NodeAddr: nodeAddr, IPv4: gwTun4, Site: site})
	for _, a := range own {
		reach(l.remote, a, true)
	}
	for _, a := range host {
		reach(l.remote, a, false)
	}
	for _, a := range lanHosts {
		reach(l.remote, a, true)
	}
	for _, a := range host {
		reach(l.lan, a, true)
	}
	wantRules(t, l.gw, []string{
		`iifname "tomoe0" ip daddr != 100.64.0.1 counter packets`,
		`iifname "tomoe0" ip6 daddr != fc12:3456:789a::1 ip6 daddr != 312:3456:789a:bcde::/64 counter packets`,
	}, nil)
}
