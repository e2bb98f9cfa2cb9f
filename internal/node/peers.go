package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/engine"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node/peers"
	"github.com/tomoe-net/tomoe/internal/packet"
)

// Peer lifecycle. Peers live in the WireGuard device only while they are
// in use ("active"), as DESIGN.md asks: a static peer from the config is
// activated when this node first sends to it or when it starts a handshake;
// an unknown key is activated when it starts a handshake and the policy
// admits it. Idle peers are removed from the device again (evictLoop);
// static ones stay registered, so the next packet brings them back.
const (
	// sessionLifetime: WireGuard rejects a session this long after its
	// handshake, so a peer with no newer handshake is down.
	sessionLifetime = 180 * time.Second
	// idleTimeout: an active peer without a handshake for this long is
	// removed from the device (unless it has a persistent keepalive).
	idleTimeout = 10 * time.Minute
	// unansweredTimeout: an activated peer that never completed a
	// handshake is removed after this long.
	unansweredTimeout = 2 * time.Minute
	// evictInterval: how often idle peers are looked for.
	evictInterval = 30 * time.Second
)

// addStatic registers the config's static peers (inactive).
func (n *Node) addStatic(list []config.Peer) error {
	n.peers.Lock()
	defer n.peers.Unlock()
	for i, cp := range list {
		if cp.PublicKey == n.pub {
			return fmt.Errorf("peers[%d]: that is this node's own key", i)
		}
		if _, err := n.hostedBy(cp); err != nil {
			return fmt.Errorf("peers[%d].%w", i, err)
		}
		n.insertLocked(n.staticPeerLocked(cp))
	}
	return nil
}

// hostedBy returns the node addresses of the devices static peer cp hosts
// (peers[].devices; config.Validate checked the rest), refusing this
// node's own key, which no peer may claim.
func (n *Node) hostedBy(cp config.Peer) ([]netip.Addr, error) {
	var out []netip.Addr
	for j, d := range cp.Devices {
		if d == n.pub {
			return nil, fmt.Errorf("devices[%d]: that is this node's own key", j)
		}
		out = append(out, d.Address())
	}
	return out, nil
}

// insertLocked adds p to the peer table and its indexes, and routes its
// site prefix into the kernel TUN (for every known site peer, active or
// not, so that packets to it reach the node and bring the peer up).
func (n *Node) insertLocked(p *peers.Peer) {
	n.peers.Insert(p)
	if p.Site && n.osRoutes != nil {
		if err := n.osRoutes.AddRoute(p.Key.SitePrefix()); err != nil {
			n.log.Warn("cannot route site prefix", "peer", p.Key.ShortString(), "prefix", p.Key.SitePrefix(), "err", err)
		}
	}
}

// activateLocked puts p into the device (or updates its configuration
// there). Its cost does not depend on the number of peers: only a peer
// with a site prefix or routes changes the route tables.
func (n *Node) activateLocked(p *peers.Peer) error {
	err := n.engine.SetPeer(engine.PeerConfig{Key: p.Key, Endpoint: p.Endpoint, AllowedIPs: p.AllowedIPs(), Keepalive: p.Keepalive})
	if err != nil {
		return err
	}
	if !p.Active {
		p.Active = true
		p.ActivatedAt = n.clock.Now()
		n.wrapper.SetPeer(p.Addr, true)
		for _, d := range p.Devices {
			n.wrapper.SetPeer(d, true)
		}
		n.log.Debug("peer added to the device", "peer", p.Key.ShortString(), "endpoint", p.Endpoint, "static", p.Static)
		n.events.Publish(Event{Type: EventPeerAdded, Peer: p.Key.String(), Address: p.Addr.String(), Endpoint: endpointString(p.Endpoint)})
		switch {
		case p.Device:
			// A plain WireGuard device speaks no tomoe protocol.
		case p.Responding:
			n.greetWhenConfirmed(p.Addr)
		default:
			n.orgs.Greet(p.Addr)
		}
		if p.Site || len(p.RouteIPs) > 0 {
			n.routesChangedLocked()
		}
	}
	return nil
}

// deactivateLocked removes p from the device: its session ends at once.
func (n *Node) deactivateLocked(p *peers.Peer, why string) {
	if !p.Active {
		return
	}
	n.engine.RemovePeer(p.Key)
	n.wrapper.SetPeer(p.Addr, false)
	for _, d := range p.Devices {
		n.wrapper.SetPeer(d, false)
	}
	p.Active, p.Up = false, false
	n.log.Info("peer removed from the device", "peer", p.Key.ShortString(), "reason", why)
	n.events.Publish(Event{Type: EventPeerRemoved, Peer: p.Key.String(), Address: p.Addr.String(), Detail: why})
	if p.Site || len(p.RouteIPs) > 0 {
		n.routesChangedLocked()
	}
}

// forgetLocked drops a dynamic peer's record entirely.
func (n *Node) forgetLocked(p *peers.Peer, why string) {
	n.deactivateLocked(p, why)
	if p.Site && n.osRoutes != nil && n.peers.BySite(p.Key.SitePrefix()) == p {
		n.osRoutes.DelRoute(p.Key.SitePrefix())
	}
	// Its offers go too, but that needs rtMu: routeLoop drops them (the
	// table queues the key). Until then the plan may still name p;
	// nothing routes to a peer that is not in the table.
	n.peers.Remove(p)
}

// routesChangedLocked tells the TUN wrapper and the filter which site
// prefixes and tunnelled routes have an active peer (node addresses are
// told one by one: activateLocked).
func (n *Node) routesChangedLocked() {
	var sites []netip.Prefix
	owners := map[netip.Prefix]netip.Addr{}
	for site, p := range n.peers.Sites() {
		if p.Active {
			sites = append(sites, site)
			owners[site] = p.Addr
		}
	}
	routed := n.routes.Owners()
	prefixes := make([]netip.Prefix, len(routed))
	for i, r := range routed {
		prefixes[i] = r.Prefix
	}
	n.wrapper.SetRoutes(sites, prefixes)
	n.filter.SetSites(owners)
	n.filter.SetRouted(routed)
}

// lookupPeer returns the known peer that owns dst (its node address, or an
// address in its site prefix), or nil. Without bridges only peers from the
// config, or that reached us, are known.
func (n *Node) lookupPeer(dst netip.Addr) *peers.Peer {
	n.peers.Lock()
	defer n.peers.Unlock()
	if p := n.peers.ByAddr(dst); p != nil {
		return p
	}
	if p := n.peers.ByDevice(dst); p != nil {
		return p // a device hosted by p: reached through it
	}
	if identity.IsSiteAddress(dst) {
		site, _ := dst.Prefix(64)
		return n.peers.BySite(site)
	}
	if identity.IsNodeAddress(dst) {
		return nil
	}
	return n.routes.OwnerOf(dst)
}

// ErrNoPeer is returned for a destination no known peer owns.
var ErrNoPeer error = noPeerError{}

type noPeerError struct{}

func (noPeerError) Error() string { return "no known peer has this address" }

// SOCKSReply makes the SOCKS5 proxy answer "host unreachable".
func (noPeerError) SOCKSReply() byte { return 0x04 }

// ensurePeer makes sure the peer owning dst is in the device, asking the
// bridges if no known peer owns it.
func (n *Node) ensurePeer(ctx context.Context, dst netip.Addr) error {
	p := n.lookupPeer(dst)
	if p == nil {
		_, err := n.lookupViaBridges(ctx, dst)
		return err
	}
	return n.activate(p)
}

// resolve answers the TUN wrapper's question about a held destination.
func (n *Node) resolve(dst netip.Addr) {
	go func() {
		if err := n.ensurePeer(context.Background(), dst); err != nil {
			if !errors.Is(err, ErrNoPeer) {
				n.log.Warn("cannot reach peer", "addr", dst, "err", err)
			}
			n.wrapper.Reject(dst, packet.UnreachAddress)
			return
		}
		n.wrapper.Release(dst)
	}()
}

// activate resolves a static peer's DNS endpoint if needed (without holding
// the lock; with underlayResolver, so that an exit route cannot capture the
// lookup) and activates it.
func (n *Node) activate(p *peers.Peer) error {
	n.peers.Lock()
	host, port, active := p.Host, p.Port, p.Active
	n.peers.Unlock()
	var ep netip.AddrPort
	if host != "" && !active {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		addrs, err := n.underlayResolver().LookupNetIP(ctx, "ip", host)
		if err != nil || len(addrs) == 0 {
			return fmt.Errorf("resolve endpoint %s: %v", net.JoinHostPort(host, strconv.Itoa(int(port))), err)
		}
		ep = netip.AddrPortFrom(addrs[0].Unmap(), port)
	}
	n.peers.Lock()
	defer n.peers.Unlock()
	if n.closing.Load() {
		return errClosing
	}
	if ep.IsValid() {
		n.peers.SetEndpoint(p, ep)
	}
	// This node wants the peer now: it no longer counts against the
	// quota of peers that only a "*" rule let in.
	n.peers.Unmark(p)
	if p.Active {
		return nil
	}
	return n.activateLocked(p)
}

// unknownSession is the Bind's report of a message for a session we do not
// know, typically from a peer that kept its session while we restarted.
// If a known peer has that endpoint, a handshake with it restores the
// session at once. It must not block the receive path.
func (n *Node) unknownSession(src netip.AddrPort) {
	select {
	case n.rehandshake <- src:
	default:
	}
}

func (n *Node) rehandshakeLoop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.done:
			return
		case src := <-n.rehandshake:
			n.peers.Lock()
			p := n.peers.ByEndpoint(src) // static peers: others' endpoints are not known here
			if p != nil && n.cutLocked(p) {
				p = nil // a packet from its address does not bring a revoked peer back
			}
			var err error
			if p != nil && !n.closing.Load() {
				err = n.activateLocked(p)
			}
			n.peers.Unlock()
			if p == nil || err != nil {
				continue
			}
			n.log.Debug("unknown session from a known peer's endpoint: starting a handshake", "peer", p.Key.ShortString(), "endpoint", src)
			n.engine.Initiate(p.Key)
		}
	}
}

// evictLoop removes idle peers from the device.
func (n *Node) evictLoop() {
	defer n.wg.Done()
	t := n.clock.NewTicker(evictInterval)
	defer t.Stop()
	for {
		select {
		case <-n.done:
			return
		case now := <-t.C():
			n.evict(now)
			n.filter.Conntrack().GC(now.UnixNano())
		}
	}
}

func (n *Node) evict(now time.Time) {
	n.peers.Lock()
	defer n.peers.Unlock()
	for p := range n.peers.All() {
		if !p.Active || p.Keepalive > 0 {
			continue
		}
		idle := (p.LastHS.IsZero() && now.Sub(p.ActivatedAt) > unansweredTimeout) ||
			(!p.LastHS.IsZero() && now.Sub(p.LastHS) > idleTimeout)
		if !idle {
			continue
		}
		if p.Static {
			n.deactivateLocked(p, "idle")
		} else {
			n.forgetLocked(p, "idle")
		}
	}
}

func endpointString(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return ""
	}
	return ap.String()
}

// confirmWait bounds how long a greeting waits for the first packet of a
// peer whose handshake this node answered: an initiator with nothing to
// send confirms the session with a keepalive, which never reaches the
// wrapper.
const confirmWait = time.Second

// greetWhenConfirmed greets a peer whose handshake this node is answering
// once its first packet arrives (or after confirmWait): sending before
// then would make WireGuard start a handshake that crosses the peer's.
func (n *Node) greetWhenConfirmed(a netip.Addr) {
	if !n.orgs.Enabled() {
		return
	}
	var once sync.Once
	greet := func() { once.Do(func() { n.orgs.Greet(a) }) }
	n.wrapper.OnFirstFrom(a, greet)
	n.clock.AfterFunc(confirmWait, func() {
		if n.wrapper.CancelFirst(a) {
			greet()
		}
	})
}
