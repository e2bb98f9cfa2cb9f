package node

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/firewall"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/names"
	"github.com/tomoe-net/tomoe/internal/node/peers"
	"github.com/tomoe-net/tomoe/internal/node/routing"
	"github.com/tomoe-net/tomoe/internal/offers"
	"github.com/tomoe-net/tomoe/internal/policy"
	"github.com/tomoe-net/tomoe/internal/routes"
)

// The host side of a kernel-mode node: the TUN's addresses and routes, the
// firewall, and the forwarding a node that offers routes needs. hostMu
// guards firewall and forward; it is taken after every other lock.

// newRouter makes the node's Router from the config's routes.
func (n *Node) newRouter() (*routing.Router, error) {
	cfg := routing.Config{
		Log: n.log, Self: n.pub, IPv4: n.ipv4, IPv4Setting: n.cfg.TUN.IPv4.String(), IPv4Space: n.cfg.TUN.IPv4Prefix.Prefix,
		Userspace: n.cfg.TUN.Mode != config.ModeKernel,
		Changes:   n.changes, Peers: n.peers, Node: routingNode{n}, Done: n.done, Clock: n.clock,
	}
	for _, o := range n.cfg.Routes.Offer {
		cfg.Offers = append(cfg.Offers, config.Offer{Prefix: o.Prefix.Prefix, Masquerade: o.Masquerade})
	}
	for _, a := range n.cfg.Routes.Accept {
		cfg.Accept = append(cfg.Accept, offers.Rule{From: a.From, Prefix: a.Prefix.Prefix})
	}
	return routing.New(cfg)
}

// routingNode is the node as its Router sees it (routing.Node).
type routingNode struct{ n *Node }

func (h routingNode) Matcher() *policy.Matcher               { return h.n.store.Matcher() }
func (h routingNode) Reconfigure(p *peers.Peer) error        { return h.n.activateLocked(p) }
func (h routingNode) RoutesChanged()                         { h.n.routesChangedLocked() }
func (h routingNode) SetLocal(l policy.Local)                { h.n.filter.SetLocal(l) }
func (h routingNode) Inject(pkt []byte)                      { h.n.wrapper.Inject(pkt) }
func (h routingNode) Closing() bool                          { return h.n.closing.Load() }
func (h routingNode) ApplyForwarding(o []config.Offer) error { return h.n.applyForwarding(o) }
func (h routingNode) EnsurePeer(ctx context.Context, a netip.Addr) error {
	return h.n.ensurePeer(ctx, a)
}

func (h routingNode) Forwarding() error {
	h.n.hostMu.Lock()
	defer h.n.hostMu.Unlock()
	if h.n.firewall == nil {
		return errors.New("offering a route needs the firewall (nftables), which this node could not install; see its log")
	}
	return nil
}

func (n *Node) configureInterface(pub identity.PublicKey) error {
	name, err := n.wrapper.Name()
	if err != nil {
		return fmt.Errorf("tun: %w", err)
	}
	uids, err := config.LookupUsers(n.cfg.AllowedLocalUsers)
	if err != nil {
		return fmt.Errorf("allowed_local_users: %w", err)
	}
	// The node's own underlay traffic carries routes.Mark, so that its
	// routes (an exit node's default above all) never capture it. (Off
	// Linux there is no mark, and no route that could capture it.)
	if routes.Mark != 0 {
		if err := n.engine.SetMark(routes.Mark); err != nil {
			return err
		}
	}
	opts := routes.Options{IPv4: n.ipv4, UIDs: uids}
	if n.cfg.TUN.DNS {
		opts.Service = names.Address
	}
	ifc, err := routes.Configure(name, pub.Address(), n.cfg.TUN.MTU, opts)
	if err != nil {
		return err
	}
	// The device is up already (engine.New): Admit may be inserting a
	// peer now, and insertLocked and forgetLocked read osRoutes under the
	// peer table's lock. So it is set under that lock, and the site
	// prefixes of peers admitted before get their routes here.
	n.peers.Lock()
	n.osRoutes = ifc
	for site, p := range n.peers.Sites() {
		if err := ifc.AddRoute(site); err != nil {
			n.log.Warn("cannot route site prefix", "peer", p.Key.ShortString(), "prefix", site, "err", err)
		}
	}
	n.peers.Unlock()
	n.routes.SetInterface(ifc)
	if err := ifc.WatchHost(n.routes.OnHostChange); err != nil {
		return err
	}
	if len(uids) > 0 {
		n.log.Info("only some local users reach the overlay", "allowed_local_users", n.cfg.AllowedLocalUsers, "uids", uids)
	}
	offered := n.routes.Offers()
	n.hostMu.Lock()
	fc := n.firewallConfigLocked(name, offered)
	n.hostMu.Unlock()
	fw, err := firewall.Open(fc)
	if err != nil {
		if n.cfg.Listen.Stealth || n.routes.Forwards() {
			return fmt.Errorf("firewall (nftables, needed by listen.stealth and routes.offer): %w", err)
		}
		n.log.Warn("cannot install the firewall rules (nftables): LAN neighbours could send packets with overlay source addresses through the physical interface", "err", err)
	}
	n.hostMu.Lock()
	n.firewall = fw
	n.hostMu.Unlock()
	if err := n.applyForwarding(offered); err != nil {
		return err
	}
	if err := n.startL2(name); err != nil {
		return err
	}
	if n.cfg.TUN.DNS {
		n.startDNS(name)
	}
	return nil
}

// firewallConfigLocked is the nftables ruleset for offered. It needs
// hostMu.
func (n *Node) firewallConfigLocked(tunName string, offered []config.Offer) firewall.Config {
	pub := n.pub
	fc := firewall.Config{TUN: tunName, NodeAddr: pub.Address(), IPv4: n.ipv4, Site: pub.SitePrefix(), ClampMSS: true,
		Stealth: n.cfg.Listen.Stealth, UDPPort: n.engine.ListenPort(), ForwardTUNOnly: len(n.forward.Changed()) > 0,
		HandshakeRate: handshakeKernelRate, Bridges: n.bridges}
	if n.cfg.Bridge.Enable && n.cfg.Bridge.TCP.IsValid() {
		fc.TCPPorts = append(fc.TCPPorts, n.cfg.Bridge.TCP.Port())
	}
	for _, o := range offered {
		if o.Masquerade {
			fc.Masquerade = append(fc.Masquerade, o.Prefix)
		}
	}
	return fc
}

// syncFirewallPeers tells the firewall the peers' current addresses,
// whose handshakes pass its flood limit (kernel mode).
func (n *Node) syncFirewallPeers() {
	n.hostMu.Lock()
	fw := n.firewall
	n.hostMu.Unlock()
	if fw == nil {
		return
	}
	if err := fw.SetPeers(n.bind.PeerAddrs()); err != nil {
		n.log.Warn("cannot update the firewall's set of peers' addresses", "err", err)
	}
}

// handshakeKernelRate is the kernel's limit on handshake initiations to
// this node's port, a second, beyond which (and not from a peer's
// address) they are dropped before they reach the socket: a flood above
// what one receive goroutine can screen would otherwise drop the peers'
// packets with it (bench/RESULTS.md, "Handshake floods"). 20,000 a second
// is far above what any number of peers rekeying needs, and what the
// node screens in a small share of a core.
const handshakeKernelRate = 20000

// forwardingRecord is where a kernel-mode node records the forwarding
// sysctls it switched on, until it switches them off again.
func forwardingRecord(cfg *config.Config) string {
	return filepath.Join(filepath.Dir(cfg.KeyFile), "forwarding.json")
}

// recoverForwarding (kernel mode, at start, before anything enables
// forwarding) puts back the forwarding sysctls that a run of this node
// which did not exit cleanly left switched on.
func (n *Node) recoverForwarding() error {
	n.hostMu.Lock()
	defer n.hostMu.Unlock()
	n.forward.Record = forwardingRecord(n.cfg)
	restored, err := n.forward.Recover()
	if err != nil {
		return err
	}
	if len(restored) > 0 {
		n.log.Warn("switched forwarding back off: tomoe had switched it on and did not exit cleanly", "sysctls", restored, "record", n.forward.Record)
	}
	return nil
}

// applyForwarding makes the host forward what this node offers (kernel
// mode): forwarding sysctls and the firewall's masquerade rules.
func (n *Node) applyForwarding(offered []config.Offer) error {
	if n.osRoutes == nil {
		return nil
	}
	n.hostMu.Lock()
	defer n.hostMu.Unlock()
	var v4, v6 bool
	v4addr := n.ipv4
	for _, o := range offered {
		if o.Prefix.Addr().Is4() && !(o.Prefix.Bits() == 32 && o.Prefix.Addr() == v4addr) {
			v4 = true
		}
		if o.Prefix.Addr().Is6() {
			v6 = true
		}
	}
	before := len(n.forward.Changed())
	if err := n.forward.Enable(v4, v6); err != nil {
		return err
	}
	if ch := n.forward.Changed(); len(ch) > before {
		n.log.Warn("enabled forwarding to carry offered routes; restored on shutdown", "sysctls", ch[before:])
	}
	if n.firewall != nil {
		name, err := n.wrapper.Name()
		if err != nil {
			return err
		}
		if err := n.firewall.Update(n.firewallConfigLocked(name, offered)); err != nil {
			return fmt.Errorf("firewall: %w", err)
		}
	}
	return nil
}
