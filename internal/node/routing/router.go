// Package routing is a node's tunnelled routes: the route-offer protocol
// with its peers, and the plan of what is installed for whom.
//
// A node offers prefixes (routes.offer, plus its own tun.ipv4 as a /32) to
// the peers its policy lets in; a node that accepts (routes.accept) some
// of what a peer offers puts those prefixes into that peer's AllowedIPs
// and routes them into the TUN. Offers travel as UDP to offers.ControlPort
// inside WireGuard, so their source address, checked by WireGuard, says
// who offers. They are sent when a session comes up, on request, when the
// offer changes, and every offerRefresh; a node asks the peers its accept
// rules name for their offer until it has one.
//
// The Router owns this node's offers and accept rules (the config's, with
// the admin API's persisted changes), what peers offer, and the plan
// package routeplan computes from them. It applies each plan: the peers'
// AllowedIPs (through the node), the OS routes (kernel mode), the TUN
// wrapper and the filter. What it needs of the node is the Node interface.
//
// Locks: the Router's lock comes before the peer table's. Lock and Unlock
// take both; methods ending in Locked need both held. The plan now
// installed is also kept in an atomic pointer, so that the data path and
// the peer table's holders read it without the Router's lock.
package routing

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/tomoe-net/tomoe/internal/clock"
	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node/changes"
	"github.com/tomoe-net/tomoe/internal/node/peers"
	"github.com/tomoe-net/tomoe/internal/offers"
	"github.com/tomoe-net/tomoe/internal/policy"
	"github.com/tomoe-net/tomoe/internal/routeplan"
	"github.com/tomoe-net/tomoe/internal/routes"
)

// Node is what the Router needs of the node it serves.
type Node interface {
	// Matcher is the policy now.
	Matcher() *policy.Matcher
	// Reconfigure puts an active peer's new AllowedIPs into the device.
	// The peer table's lock is held.
	Reconfigure(p *peers.Peer) error
	// RoutesChanged tells the TUN wrapper and the filter which routes
	// have an active peer now (Router.Owners). The peer table's lock is
	// held.
	RoutesChanged()
	// SetLocal tells the filter what this node owns and forwards.
	SetLocal(policy.Local)
	// Inject hands a datagram to the overlay, as if this node's programs
	// had sent it. It must not block.
	Inject(pkt []byte)
	// EnsurePeer brings the peer that owns addr into the device, asking
	// the bridges if no known peer owns it.
	EnsurePeer(ctx context.Context, addr netip.Addr) error
	// Forwarding reports whether this node can forward into its LAN (a
	// kernel-mode node with its firewall): nil, or why not.
	Forwarding() error
	// ApplyForwarding makes the host forward what offers say (kernel
	// mode: sysctls, the firewall's masquerade). The Router's lock is
	// held; the peer table's may be.
	ApplyForwarding(offers []config.Offer) error
	// Closing reports whether the node is shutting down (set with both
	// locks held).
	Closing() bool
}

// Config is what a Router is made from.
type Config struct {
	Log  *slog.Logger
	Self identity.PublicKey
	// IPv4 is tun.ipv4 (invalid when unset), offered by itself as a /32,
	// IPv4Setting how the config gives it ("auto" or an address), and
	// IPv4Space is tun.ipv4_prefix.
	IPv4        netip.Addr
	IPv4Setting string
	IPv4Space   netip.Prefix
	// Userspace is true for a node without a kernel TUN: it cannot offer.
	Userspace bool
	// Offers and Accept are the config file's; Changes has the API's.
	Offers  []config.Offer
	Accept  []offers.Rule
	Changes *changes.Store
	Peers   *peers.Table
	Node    Node
	// Done is closed when the node shuts down: Run returns, and waits for
	// peers end.
	Done <-chan struct{}
	// Clock times the offers' refresh, requests and expiry; nil: real
	// time.
	Clock clock.Clock
}

// Router is a node's routes. Create it with New.
type Router struct {
	log     *slog.Logger
	self    identity.PublicKey
	ipv4    netip.Addr
	space   netip.Prefix
	user    bool
	changes *changes.Store
	peers   *peers.Table
	node    Node
	done    <-chan struct{}
	clock   clock.Clock

	control    chan controlMsg
	controlBad atomic.Uint64 // control datagrams that did not decode
	ask        chan struct{} // ask the peers accept rules name for their offer now

	plan atomic.Pointer[routeplan.Plan] // the plan installed now: set under mu, read anywhere

	mu        sync.Mutex // guards the fields below, and the host's routes
	boot, seq uint32
	offers    []config.Offer   // this node's offers (tun.ipv4 included)
	rules     []offers.Rule    // accept rules
	learned   *routeplan.Table // what peers offer
	installed *routeplan.Plan  // what is installed, for whom: the one source of route ownership
	os        *routes.Interface
	osRouted  map[netip.Prefix]bool
	host      routes.Host // the host's own networks and addresses (kernel mode)
}

type controlMsg struct {
	src netip.Addr
	msg offers.Message
}

const controlBacklog = 64

// New makes a Router from the config's offers and accept rules with the
// persisted changes applied.
func New(cfg Config) (*Router, error) {
	var b [4]byte
	rand.Read(b[:])
	r := &Router{
		log: cfg.Log, self: cfg.Self, ipv4: cfg.IPv4, space: cfg.IPv4Space, user: cfg.Userspace,
		changes: cfg.Changes, peers: cfg.Peers, node: cfg.Node, done: cfg.Done, clock: clock.Or(cfg.Clock),
		control:  make(chan controlMsg, controlBacklog),
		ask:      make(chan struct{}, 1),
		boot:     binary.BigEndian.Uint32(b[:]),
		learned:  routeplan.NewTable(),
		osRouted: make(map[netip.Prefix]bool),
	}
	r.installed = routeplan.Compute(routeplan.Input{})
	r.plan.Store(r.installed)
	list, err := r.changes.Offers(slices.Clone(cfg.Offers))
	if err != nil {
		return nil, err
	}
	r.offers = list
	if v4 := r.ipv4; v4.IsValid() {
		self := netip.PrefixFrom(v4, 32)
		if slices.ContainsFunc(r.offers, func(o config.Offer) bool { return o.Prefix == self }) {
			// Validate catches an explicit tun.ipv4; "auto" needs the key.
			return nil, fmt.Errorf("routes.offer: %s is tun.ipv4 (%q in %s), which is offered by itself: remove the entry", self, cfg.IPv4Setting, r.space)
		}
		r.offers = append(r.offers, config.Offer{Prefix: self})
	}
	if len(r.offers) > offers.MaxRoutes {
		return nil, fmt.Errorf("routes.offer: %d routes with tun.ipv4 and the API's changes (%s), more than one offer carries (%d)", len(r.offers), r.changes.Path(), offers.MaxRoutes)
	}
	if r.rules, err = r.changes.Accepts(slices.Clone(cfg.Accept)); err != nil {
		return nil, err
	}
	for _, rule := range r.rules {
		if rule.Prefix.Addr().Is4() && !r.ipv4.IsValid() {
			r.log.Info("an accept rule has an IPv4 prefix but tun.ipv4 is not set: this node forwards IPv4 to it, but its own programs have no IPv4 source on the overlay", "prefix", rule.Prefix)
			break
		}
	}
	for _, rule := range r.rules {
		if rule.From.Any && rule.Prefix.Addr().Is4() && rule.Prefix.Bits() > 0 && !rule.Prefix.Overlaps(r.space) {
			// A plan of explicit addresses (from = "*" within 10.99.0.0/24)
			// that worked before addresses were bound to keys.
			r.log.Info("a \"*\" accept rule outside tun.ipv4_prefix takes the prefixes offered there, but no /32: a \"*\" rule takes a node's address only as the one its key derives in tun.ipv4_prefix (tun.ipv4 = \"auto\"); other addresses need a rule naming the node", "prefix", rule.Prefix, "tun.ipv4_prefix", r.space)
		}
	}
	return r, nil
}

// Lock takes the Router's lock and then the peer table's.
func (r *Router) Lock() {
	r.mu.Lock()
	r.peers.Lock()
}

// Unlock releases both.
func (r *Router) Unlock() {
	r.peers.Unlock()
	r.mu.Unlock()
}

// Offers returns this node's offers now.
func (r *Router) Offers() []config.Offer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.offers)
}

// Forwards reports whether this node offers routes other than its own
// tun.ipv4.
func (r *Router) Forwards() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, o := range r.offers {
		if !r.isSelf(o.Prefix) {
			return true
		}
	}
	return false
}

func (r *Router) isSelf(p netip.Prefix) bool {
	return r.ipv4.IsValid() && p == netip.PrefixFrom(r.ipv4, 32)
}

// LocalPolicy is what the filter must know this node owns and forwards.
func (r *Router) LocalPolicy() policy.Local {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.localPolicyLocked()
}

func (r *Router) localPolicyLocked() policy.Local {
	l := policy.Local{Addr: r.self.Address(), Site: r.self.SitePrefix(), IPv4: r.ipv4, Host: r.host.Addrs}
	for _, o := range r.offers {
		if o.Prefix.Bits() == 32 && o.Prefix.Addr() == l.IPv4 {
			continue
		}
		l.Offered = append(l.Offered, offers.Forwarded(o.Prefix)...)
	}
	return l
}

// SetInterface gives a kernel-mode Router the TUN's OS routes and the
// host's networks, before there are peers.
func (r *Router) SetInterface(ifc *routes.Interface) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.os = ifc
	r.host = ifc.Host()
	r.node.SetLocal(r.localPolicyLocked())
}

// HostAddr reports whether a is one of the host's own addresses.
func (r *Router) HostAddr(a netip.Addr) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := slices.BinarySearchFunc(r.host.Addrs, a, netip.Addr.Compare)
	return ok
}

// ControlMalformed counts control datagrams that did not decode.
func (r *Router) ControlMalformed() uint64 { return r.controlBad.Load() }

// Owners returns the plan's routes of active peers, as they are in
// AllowedIPs, longest prefixes first, for the wrapper and the filter. The
// peer table's lock is held.
func (r *Router) Owners() []policy.RouteOwner {
	return r.plan.Load().Owners(func(k identity.PublicKey) (netip.Addr, bool) {
		p := r.peers.Get(k)
		if p == nil || !p.Active {
			return netip.Addr{}, false
		}
		return p.Addr, true
	})
}

// OwnerOf returns the peer an installed route for dst leads to, or nil.
// The peer table's lock is held.
func (r *Router) OwnerOf(dst netip.Addr) *peers.Peer {
	if k, ok := r.plan.Load().OwnerOf(dst); ok {
		return r.peers.Get(k)
	}
	return nil
}

// Installed reports whether p is installed now, and for whom.
func (r *Router) Installed(p netip.Prefix) (identity.PublicKey, bool) {
	k, ok := r.plan.Load().Installed[p]
	return k, ok
}

// Learned reports whether k's offer has arrived.
func (r *Router) Learned(k identity.PublicKey) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.learned.Has(k)
}
