package node

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/names"
	"github.com/tomoe-net/tomoe/internal/node/peers"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// The node's DNS server (kernel mode): names under .tomoe on
// names.Address, port 53, of the TUN interface.
//
// Why that address reaches only this host's own processes:
//   - It is on the TUN interface, so the kernel delivers packets to it
//     locally; deprecated (routes.Options.Service), so the host never
//     sends from it.
//   - The sockets are bound to the TUN device (SO_BINDTODEVICE): a packet
//     for the address that arrives through a physical interface (a LAN
//     neighbour routing fc00::53 to this host; Linux takes packets for
//     any of its addresses on any interface) finds no socket.
//   - Through the TUN come only packets that peers encrypted. Their
//     destination must be an address this node owns or forwards
//     (policy.Filter.Inbound: DropNotLocal), which names.Address is not:
//     it is in the overlay's own prefix, which no offered route may cover;
//     and the firewall's input rule drops what comes in through the TUN
//     for any other address of this host. No honest peer even routes it
//     here: its AllowedIPs for this node hold the node address, the site
//     prefix and routes outside the overlay's spaces.

// dnsState is the node's DNS server and what it answers from.
type dnsState struct {
	server   *names.Server
	resolved *names.Resolved // nil: not registered with systemd-resolved

	// static maps static peers' names ([[peers]] name, lowercase) to
	// their node addresses; replaced by a reload. certs holds
	// the certificates' names (peers' and this node's own), rebuilt by
	// MembersChanged.
	static atomic.Pointer[nameIndex]
	certs  atomic.Pointer[nameIndex]
}

// nameIndex maps names (lowercase, without .tomoe) to node addresses. A
// name with no addresses is an empty non-terminal: "acme" for
// "web1.acme".
type nameIndex map[string][]netip.Addr

func (x nameIndex) add(name string, a netip.Addr) {
	name = strings.ToLower(name)
	if name == "" {
		return
	}
	if !slices.Contains(x[name], a) {
		x[name] = append(x[name], a)
	}
	for i := strings.IndexByte(name, '.'); i >= 0; i = strings.IndexByte(name, '.') {
		name = name[i+1:]
		if _, ok := x[name]; !ok {
			x[name] = nil
		}
	}
}

// setStatic indexes the static peers' names (at start, and on a reload).
func (d *dnsState) setStatic(list []config.Peer) {
	x := nameIndex{}
	for _, p := range list {
		x.add(p.Name, p.PublicKey.Address())
	}
	d.static.Store(&x)
}

// setCertNames indexes the certificates' names: dir's (peers') and self's.
func (d *dnsState) setCertNames(dir policy.Directory, self netip.Addr, own []policy.Member) {
	x := nameIndex{}
	for a, ms := range dir {
		for _, m := range ms {
			x.add(m.Name, a)
		}
	}
	for _, m := range own {
		x.add(m.Name, self)
	}
	for _, as := range x {
		slices.SortFunc(as, netip.Addr.Compare)
	}
	d.certs.Store(&x)
}

// startDNS starts the DNS server on the TUN device tun (kernel mode, the
// interface configured with names.Address) and registers it with
// systemd-resolved where that runs. Neither failing stops the node: it
// logs why, and status shows no dns.
func (n *Node) startDNS(tun string) {
	d := &n.dns
	d.setStatic(n.cfg.Peers)
	s, err := names.Serve(names.ServerConfig{
		Addr: netip.AddrPortFrom(names.Address, names.Port), Device: tun,
		Names: names.NamesFunc(n.lookupDNSName),
	})
	if err != nil {
		n.log.Warn("cannot serve DNS for the overlay's names", "addr", names.Address, "err", err)
		return
	}
	d.server = s
	r := &names.Resolved{Link: tun, Addr: names.Address}
	switch err := r.Register(); {
	case err == nil:
		d.resolved = r
		n.log.Info("serving DNS for .tomoe, registered with systemd-resolved", "addr", names.Address, "interface", tun)
	case errors.Is(err, names.ErrNoResolved):
		n.log.Info("serving DNS for .tomoe; to use it, send the host's queries for .tomoe to it (see README, \"Names\")", "addr", names.Address, "why_not_registered", err)
	default:
		n.log.Warn("serving DNS for .tomoe, but cannot register it with systemd-resolved: names under .tomoe will not resolve on this host until it is", "addr", names.Address, "err", err)
	}
}

// stopDNS undoes startDNS.
func (n *Node) stopDNS() {
	d := &n.dns
	if d.resolved != nil {
		if err := d.resolved.Revert(); err != nil {
			n.log.Warn("cannot revert the DNS settings of systemd-resolved", "err", err)
		}
		d.resolved = nil
	}
	if d.server != nil {
		d.server.Close()
	}
}

// dnsAddr is the DNS server's address while it serves ("" if not).
func (n *Node) dnsAddr() (string, bool) {
	if n.dns.server == nil {
		return "", false
	}
	return names.Address.String(), n.dns.resolved != nil
}

// lookupDNSName answers the DNS server: a static peer's name first (as
// resolveName does), else a certificate's name. A node's IPv4 address is
// known for this node (tun.ipv4), and for a peer where one of its
// addresses (peerIPv4Locked) is an installed route to it: then packets to
// it reach that peer.
func (n *Node) lookupDNSName(name string) (names.Record, bool) {
	var addrs []netip.Addr
	ok := false
	if x := n.dns.static.Load(); x != nil {
		addrs, ok = (*x)[name]
	}
	if !ok {
		if x := n.dns.certs.Load(); x != nil {
			addrs, ok = (*x)[name]
		}
	}
	if !ok {
		return names.Record{}, false
	}
	var r names.Record
	n.peers.Lock()
	defer n.peers.Unlock()
	for _, a := range addrs {
		r.IPv6 = append(r.IPv6, a)
		if a == n.Address() {
			if n.ipv4.IsValid() {
				r.IPv4 = append(r.IPv4, n.ipv4)
			}
			continue
		}
		p := n.peers.ByAddr(a)
		if p == nil {
			continue
		}
		for _, v4 := range n.peerIPv4Locked(p) {
			if slices.Contains(p.Routes, netip.PrefixFrom(v4, 32)) && !slices.Contains(r.IPv4, v4) {
				r.IPv4 = append(r.IPv4, v4)
			}
		}
	}
	return r, true
}

// peerIPv4Locked are the IPv4 addresses p may be known by: the one its
// key derives in this node's tun.ipv4_prefix, and those its valid
// certificates carry. (A /32 route alone is no name: it may lead to a
// host behind the peer.) It needs the peer table's lock.
func (n *Node) peerIPv4Locked(p *peers.Peer) []netip.Addr {
	var out []netip.Addr
	if space := n.cfg.TUN.IPv4Prefix; space.IsValid() {
		if v4, err := p.Key.IPv4Address(space.Prefix); err == nil {
			out = append(out, v4)
		}
	}
	for _, m := range n.orgs.Members(p.Addr) {
		out = append(out, m.IPv4...)
	}
	return out
}
