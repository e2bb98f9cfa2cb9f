package node

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/engine"
	"github.com/tomoe-net/tomoe/internal/identity"
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
	// maxDynamicPeers bounds peers admitted by policy rather than config.
	maxDynamicPeers = 8192
)

// peerTable is the node's record of its peers, with its own lock: mu
// guards the maps, the counters and every peer's fields. Functions ending
// in Locked need it. It is never held while taking the node's rtMu (that
// one comes first). Everything it does costs the same whatever the number
// of peers: indexes and counters, never a scan, except in the periodic
// eviction and the API's listings.
type peerTable struct {
	mu         sync.Mutex
	peers      map[identity.PublicKey]*peer
	byAddr     map[netip.Addr]*peer
	bySite     map[netip.Prefix]*peer   // peers whose site prefix is theirs (peer.site)
	byEndpoint map[netip.AddrPort]*peer // static peers by their endpoint
	dynamic    int                      // peers not from the config
	wild       wildcardState            // the quota of peers only "*" let in
	// deniedAt and deniedLog limit the reports of refused handshakes.
	deniedAt  map[identity.PublicKey]time.Time
	deniedLog *rate.Limiter
	// forgotten are peers forgotten since routeLoop last dropped their
	// offers (forgetLocked holds mu, and dropping offers needs rtMu),
	// signalled on forgottenSig.
	forgotten    []identity.PublicKey
	forgottenSig chan struct{}
}

func newPeerTable() peerTable {
	return peerTable{
		peers:        make(map[identity.PublicKey]*peer),
		byAddr:       make(map[netip.Addr]*peer),
		bySite:       make(map[netip.Prefix]*peer),
		byEndpoint:   make(map[netip.AddrPort]*peer),
		wild:         newWildcardState(),
		deniedAt:     make(map[identity.PublicKey]time.Time),
		deniedLog:    rate.NewLimiter(deniedLogRate, deniedLogBurst),
		forgottenSig: make(chan struct{}, 1),
	}
}

// peer is the node's record of one peer. Guarded by peerTable.mu.
type peer struct {
	key       identity.PublicKey
	addr      netip.Addr
	name      string
	static    bool
	endpoint  netip.AddrPort // where to send first: configured or observed
	host      string         // configured endpoint host, when it is a DNS name
	port      uint16
	keepalive time.Duration
	// site is true when the peer's site prefix is in its AllowedIPs: for
	// static peers and peers a rule names explicitly, never for peers that
	// only a "*" rule admits (the site prefix has only 56 bits).
	site bool
	// viaBridge: found by a lookup through a bridge.
	viaBridge bool
	// routes are the tunnelled prefixes this node accepted from the peer;
	// routeIPs what they are in its AllowedIPs (see offers.Pieces).
	routes   []netip.Prefix
	routeIPs []netip.Prefix
	// offered: this node has sent the peer its route offer.
	offered bool
	// wildcard: only a "*" rule let this peer in, and this node has not
	// wanted it since; it counts against the wildcard quota (admission.go)
	// under source, and waits in the unanswered list until its first
	// handshake completes.
	wildcard   bool
	source     netip.Addr
	unanswered *list.Element

	active      bool
	activatedAt time.Time
	lastHS      time.Time
	up          bool
	rx, tx      uint64
}

func (p *peer) allowedIPs() []netip.Prefix {
	out := []netip.Prefix{netip.PrefixFrom(p.addr, 128)}
	if p.site {
		out = append(out, p.key.SitePrefix())
	}
	return append(out, p.routeIPs...)
}

// addStatic registers the config's static peers (inactive).
func (n *Node) addStatic(peers []config.Peer) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, cp := range peers {
		k := cp.PublicKey
		if k == n.pub {
			return fmt.Errorf("peers[%d]: that is this node's own key", i)
		}
		ep := cp.Endpoint
		p := &peer{key: k, addr: k.Address(), name: cp.Name, static: true, host: ep.Name, port: ep.Port, keepalive: cp.Keepalive(), site: true}
		if ep.Addr.IsValid() {
			p.endpoint = netip.AddrPortFrom(ep.Addr.Unmap(), ep.Port)
		}
		if owner := n.bySite[k.SitePrefix()]; owner != nil {
			n.log.Warn("two static peers have the same site prefix; only the first gets it", "peer", k.ShortString(), "other", owner.key.ShortString())
			p.site = false
		}
		n.insertLocked(p)
	}
	return nil
}

// insertLocked adds p to the peer table and its indexes, and routes its
// site prefix into the kernel TUN (for every known site peer, active or
// not, so that packets to it reach the node and bring the peer up).
func (n *Node) insertLocked(p *peer) {
	n.peers[p.key] = p
	n.byAddr[p.addr] = p
	if p.site {
		n.bySite[p.key.SitePrefix()] = p
		if n.osRoutes != nil {
			if err := n.osRoutes.AddRoute(p.key.SitePrefix()); err != nil {
				n.log.Warn("cannot route site prefix", "peer", p.key.ShortString(), "prefix", p.key.SitePrefix(), "err", err)
			}
		}
	}
	if p.static && p.endpoint.IsValid() {
		n.byEndpoint[p.endpoint] = p
	}
	if !p.static {
		n.dynamic++
	}
}

// activateLocked puts p into the device (or updates its configuration
// there). Its cost does not depend on the number of peers: only a peer
// with a site prefix or routes changes the route tables.
func (n *Node) activateLocked(p *peer) error {
	err := n.engine.SetPeer(engine.PeerConfig{Key: p.key, Endpoint: p.endpoint, AllowedIPs: p.allowedIPs(), Keepalive: p.keepalive})
	if err != nil {
		return err
	}
	if !p.active {
		p.active = true
		p.activatedAt = time.Now()
		n.wrapper.SetPeer(p.addr, true)
		n.log.Debug("peer added to the device", "peer", p.key.ShortString(), "endpoint", p.endpoint, "static", p.static)
		n.events.publish(Event{Type: EventPeerAdded, Peer: p.key.String(), Address: p.addr.String(), Endpoint: endpointString(p.endpoint)})
		if p.site || len(p.routeIPs) > 0 {
			n.routesChangedLocked()
		}
	}
	return nil
}

// deactivateLocked removes p from the device: its session ends at once.
func (n *Node) deactivateLocked(p *peer, why string) {
	if !p.active {
		return
	}
	n.engine.RemovePeer(p.key)
	n.wrapper.SetPeer(p.addr, false)
	p.active, p.up = false, false
	n.log.Info("peer removed from the device", "peer", p.key.ShortString(), "reason", why)
	n.events.publish(Event{Type: EventPeerRemoved, Peer: p.key.String(), Address: p.addr.String(), Detail: why})
	if p.site || len(p.routeIPs) > 0 {
		n.routesChangedLocked()
	}
}

// forgetLocked drops a dynamic peer's record entirely.
func (n *Node) forgetLocked(p *peer, why string) {
	n.deactivateLocked(p, why)
	delete(n.peers, p.key)
	delete(n.byAddr, p.addr)
	if p.site {
		delete(n.bySite, p.key.SitePrefix())
		if n.osRoutes != nil {
			n.osRoutes.DelRoute(p.key.SitePrefix())
		}
	}
	if !p.static {
		n.dynamic--
	}
	n.unmarkWildcardLocked(p)
	// Its offers go too, but that needs rtMu: routeLoop drops them. Until
	// then the plan may still name p; nothing routes to a peer that is
	// not in the table.
	n.forgotten = append(n.forgotten, p.key)
	select {
	case n.forgottenSig <- struct{}{}:
	default:
	}
}

// routesChangedLocked tells the TUN wrapper and the filter which site
// prefixes and tunnelled routes have an active peer (node addresses are
// told one by one: activateLocked).
func (n *Node) routesChangedLocked() {
	var sites []netip.Prefix
	owners := map[netip.Prefix]netip.Addr{}
	for site, p := range n.bySite {
		if p.active {
			sites = append(sites, site)
			owners[site] = p.addr
		}
	}
	routed := n.routedOwnersLocked()
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
func (n *Node) lookupPeer(dst netip.Addr) *peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	if p := n.byAddr[dst]; p != nil {
		return p
	}
	if identity.IsSiteAddress(dst) {
		site, _ := dst.Prefix(64)
		return n.bySite[site]
	}
	if identity.IsNodeAddress(dst) {
		return nil
	}
	return n.routeOwnerLocked(dst)
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
func (n *Node) activate(p *peer) error {
	n.mu.Lock()
	host, port, active := p.host, p.port, p.active
	n.mu.Unlock()
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
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closing.Load() {
		return errClosing
	}
	if ep.IsValid() {
		if p.static && p.endpoint.IsValid() && n.byEndpoint[p.endpoint] == p {
			delete(n.byEndpoint, p.endpoint)
		}
		p.endpoint = ep
		if p.static {
			n.byEndpoint[ep] = p
		}
	}
	// This node wants the peer now: it no longer counts against the
	// quota of peers that only a "*" rule let in.
	n.unmarkWildcardLocked(p)
	if p.active {
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
			n.mu.Lock()
			p := n.byEndpoint[src] // static peers: others' endpoints are not known here
			if p != nil && n.cutLocked(p) {
				p = nil // a packet from its address does not bring a revoked peer back
			}
			var err error
			if p != nil && !n.closing.Load() {
				err = n.activateLocked(p)
			}
			n.mu.Unlock()
			if p == nil || err != nil {
				continue
			}
			n.log.Debug("unknown session from a known peer's endpoint: starting a handshake", "peer", p.key.ShortString(), "endpoint", src)
			n.engine.Initiate(p.key)
		}
	}
}

// evictLoop removes idle peers from the device.
func (n *Node) evictLoop() {
	defer n.wg.Done()
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-n.done:
			return
		case now := <-t.C:
			n.evict(now)
			n.filter.Conntrack().GC(now.UnixNano())
		}
	}
}

func (n *Node) evict(now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.peers {
		if !p.active || p.keepalive > 0 {
			continue
		}
		idle := (p.lastHS.IsZero() && now.Sub(p.activatedAt) > unansweredTimeout) ||
			(!p.lastHS.IsZero() && now.Sub(p.lastHS) > idleTimeout)
		if !idle {
			continue
		}
		if p.static {
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
