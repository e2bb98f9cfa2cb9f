// Package orgs is a node's membership of organisations: its own
// certificates, the certificates of its peers that it verified (the
// directory the policy's group:, org: and name: rules match against), and
// the organisation documents (revocation lists and organisation policies)
// it holds and passes on.
//
// Certificates and documents travel by themselves (package orgsync): a
// node greets each peer whose session starts with its certificates and the
// versions of the documents it holds, asks for the peer's certificates,
// pulls newer documents, and announces a document it just got to every
// peer it has a session with and to its bridges; bridges return a looked-up
// node's certificates with the answer. Nothing here trusts a peer or a
// bridge: a certificate counts once it verifies against an organisation
// this node's config names, is for the key WireGuard authenticated, is in
// its validity period and not revoked by the newest list held; a document
// is kept once its organisation's signature verifies and it is newer.
//
// A list that revokes a peer cuts its sessions and flows at once (Node.Cut,
// the path of `tomoe policy revoke`). An organisation with crl_max_age
// whose newest list is older than that has its certificates refused (fail
// closed) until a fresh list arrives.
//
// The organisations trusted are the config's [[orgs]] and those this node
// joined by request (`tomoe org join`, package joins): a certificate that
// came back approved is kept in the state file and trusted as if the
// config named its organisation (joined.go).
//
// Locks: the Engine's lock guards its tables only; it is never held while
// calling the Node, which takes its own locks.
package orgs

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tomoe-net/tomoe/internal/clock"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node/joins"
	"github.com/tomoe-net/tomoe/internal/node/orgs/greetings"
	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/orgsync"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// Node is what the engine needs of the node it serves. Its methods are
// called without the engine's lock held.
type Node interface {
	// Inject hands a datagram this node sends into the overlay.
	Inject(pkt []byte)
	// PeerKey returns the key of the peer whose node address is addr.
	PeerKey(addr netip.Addr) (identity.PublicKey, bool)
	// SessionPeers lists the node addresses of the peers in the device.
	SessionPeers() []netip.Addr
	// Cut ends the sessions and flows of these peers (a revocation, or a
	// peer admitted pending a certificate that did not come or failed).
	Cut(keys []identity.PublicKey, reason string)
	// Settled ends the wait of the packets of a peer admitted pending its
	// certificate: judged by the rules now that it verified, or dropped.
	Settled(key identity.PublicKey, verified bool)
	// MembersChanged installs a new directory and this node's own
	// memberships into the policy.
	MembersChanged(dir policy.Directory, self []policy.Member)
	// OrgRules installs (nil: removes) an organisation policy's rules.
	OrgRules(orgName string, version uint64, rules []policy.Rule)
	// SendBridge sends a document message to a bridge this node is
	// registered with; Bridges lists those bridges.
	SendBridge(bridge identity.PublicKey, payload []byte) error
	Bridges() []identity.PublicKey
	// Event publishes an event for the admin API's stream.
	Event(kind, peer, detail string)
}

// Org is one organisation as the config names it.
type Org struct {
	Name      string
	Key       org.PublicKey
	Cert      *org.Cert // this node's own certificate; nil: it only verifies others
	CertFile  string    // where Cert came from, for messages
	CRLMaxAge time.Duration
	// AcceptPolicy: this node applies the organisation's policy documents.
	AcceptPolicy bool
	// Joined: Cert came by request (`tomoe org join`) and is kept in the
	// state file, not in the config.
	Joined bool
}

// orgSet is the organisations trusted, by key and by name, in config
// order (joined ones after).
type orgSet struct {
	list   []*Org
	byKey  map[org.PublicKey]*Org
	byName map[string]*Org
}

func newOrgSet(list []*Org) (*orgSet, error) {
	s := &orgSet{list: list, byKey: make(map[org.PublicKey]*Org, len(list)), byName: make(map[string]*Org, len(list))}
	for i, o := range list {
		if s.byKey[o.Key] != nil || s.byName[o.Name] != nil {
			return nil, fmt.Errorf("orgs[%d] %s: listed twice (by name or public key)", i, o.Name)
		}
		s.byKey[o.Key], s.byName[o.Name] = o, o
	}
	return s, nil
}

// org returns the trusted organisation with key k, or nil.
func (e *Engine) org(k org.PublicKey) *Org { return e.set.Load().byKey[k] }

// orgList returns the trusted organisations.
func (e *Engine) orgList() []*Org { return e.set.Load().list }

// Config configures the engine.
type Config struct {
	Orgs        []Org
	Self        identity.PublicKey
	StateFile   string // the documents held; "" keeps them in memory only
	Log         *slog.Logger
	Clock       clock.Clock
	Done        <-chan struct{}
	ControlPort uint16
}

// Timing of the protocol.
const (
	// PendingTimeout is how long a peer admitted only because a rule could
	// match it by certificate may take to present one that verifies.
	PendingTimeout = 10 * time.Second
	// refusedGrace is how long such a peer keeps its session once one of
	// its certificates is refused, for another (of another organisation
	// it is a member of, sent right after) to verify.
	refusedGrace = time.Second
	// PresentInterval is how often a node presents its certificates and
	// hello to each bridge again, besides when it registers: a
	// presentation lost on the way, or a registration the bridge dropped
	// and took back without the node noticing, would otherwise leave the
	// bridge without this member's certificate, and the bridge tells
	// only the members it holds certificates of about a new list.
	PresentInterval = 15 * time.Second
	tick            = time.Second
	// maxKnown bounds the keys whose certificates are kept.
	maxKnown = 1 << 16
	queueLen = 1024
)

// Engine is the node's membership of its organisations.
type Engine struct {
	cfg   Config
	node  Node
	log   *slog.Logger
	clock clock.Clock
	// set is the organisations this node trusts: those of the config and
	// those it joined by request (join.go). It is replaced, never changed,
	// on the engine's goroutine; anyone reads it.
	set atomic.Pointer[orgSet]

	joins *joins.Requests // this node's requests to join organisations (joined.go)
	x     *orgsync.Exchanger
	store *orgsync.Store
	queue chan inbound

	greetings *greetings.Book // per-peer timing of greetings and answers; locks itself

	mu          sync.Mutex // guards the fields below
	certs       map[identity.PublicKey]map[org.PublicKey]*org.Cert
	pending     map[identity.PublicKey]pendingPeer // admitted pending a certificate
	peerChans   map[netip.Addr]*peerChan
	bridgeChans map[identity.PublicKey]*bridgeChan
	presented   map[identity.PublicKey]time.Time // bridge: when this node last presented itself
	crls        map[org.PublicKey]*org.CRL
	policies    map[org.PublicKey]*org.PolicyDoc
	policyErr   map[org.PublicKey]string
	stale       map[org.PublicKey]bool
	dirty       bool // certificates changed: rebuild once the queue is drained

	saveMu sync.Mutex // serializes writes of the state file

	dir     atomic.Pointer[policy.Directory]
	members atomic.Pointer[map[netip.Addr][]Membership]

	// counters
	certsBad, received, dropped atomic.Uint64
	limited                     atomic.Uint64 // messages and answers a peer's budget did not cover
}

// Membership is one verified membership of a peer, for display.
type Membership struct {
	Org     string
	Name    string
	Groups  []string
	Serial  string
	Expires time.Time
	IPv4    []netip.Addr // the certificate's overlay IPv4 addresses
}

// pendingPeer is a peer admitted only because a rule could match it by
// certificate: it is cut after until unless one verifies first.
type pendingPeer struct {
	until time.Time
	why   string // the refusal that brought until forward, for the cut; "" for none
}

type inbound struct {
	src     netip.Addr         // a peer, or
	bridge  identity.PublicKey // a bridge
	payload []byte
	pending identity.PublicKey // a peer admitted pending its certificate
	greet   netip.Addr         // a session to greet
	reg     bool               // bridge registered
	fn      func()             // run on the engine's goroutine
}

// New returns the engine; Run must be started. It loads the documents
// kept in the state file.
func New(cfg Config, node Node) (*Engine, error) {
	e := &Engine{
		cfg: cfg, node: node, log: cfg.Log, clock: clock.Or(cfg.Clock),
		store: orgsync.NewStore(), queue: make(chan inbound, queueLen),
		certs: make(map[identity.PublicKey]map[org.PublicKey]*org.Cert), pending: make(map[identity.PublicKey]pendingPeer),
		greetings: greetings.New(),
		peerChans: make(map[netip.Addr]*peerChan), bridgeChans: make(map[identity.PublicKey]*bridgeChan),
		presented: make(map[identity.PublicKey]time.Time),
		crls:      make(map[org.PublicKey]*org.CRL), policies: make(map[org.PublicKey]*org.PolicyDoc),
		policyErr: make(map[org.PublicKey]string), stale: make(map[org.PublicKey]bool),
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	list := make([]*Org, len(cfg.Orgs))
	for i := range cfg.Orgs {
		o := cfg.Orgs[i]
		list[i] = &o
	}
	set, err := newOrgSet(list)
	if err != nil {
		return nil, err
	}
	e.set.Store(set)
	e.joins = joins.New(cfg.Self, joinHost{e}, e.log, e.clock, cfg.Done)
	e.x = orgsync.NewExchanger(e.store)
	e.x.Now = e.clock.Now
	e.x.Accept = func(id orgsync.DocID) bool { return e.org(org.PublicKey(id.Org)) != nil }
	e.x.Verify = e.verifyDoc
	e.x.Fresh = e.fresh
	if err := e.load(); err != nil {
		return nil, err
	}
	e.checkStale()
	e.rebuild()
	return e, nil
}

// Enabled reports whether the config names any organisation.
func (e *Engine) Enabled() bool { return e != nil && len(e.orgList()) > 0 }

// IsMember reports whether addr holds a verified certificate of some
// organisation (lock-free: the admission path asks).
func (e *Engine) IsMember(addr netip.Addr) bool {
	if e == nil {
		return false
	}
	d := e.dir.Load()
	return d != nil && len((*d)[addr]) > 0
}

// Members returns addr's verified memberships.
func (e *Engine) Members(addr netip.Addr) []Membership {
	if e == nil {
		return nil
	}
	m := e.members.Load()
	if m == nil {
		return nil
	}
	return (*m)[addr]
}

// LookupName returns the node address of the peer whose certificate has
// this name (as written, or with its organisation's name: "web1.acme" and
// "web1.acme.tomoe" both find web1.acme).
func (e *Engine) LookupName(name string) (netip.Addr, bool) {
	if e == nil {
		return netip.Addr{}, false
	}
	m := e.members.Load()
	if m == nil {
		return netip.Addr{}, false
	}
	for a, ms := range *m {
		for _, mb := range ms {
			if mb.Name == name {
				return a, true
			}
		}
	}
	return netip.Addr{}, false
}

// OnControl takes a document message a peer sent to the control port. It
// runs on WireGuard's receive path: queue, never block.
func (e *Engine) OnControl(src netip.Addr, payload []byte) {
	c := e.peerChan(src)
	now := e.clock.Now().UnixNano()
	c.seen.Store(now)
	if !c.in.Allow(now, 1, peerInRate, peerInBurst) {
		e.limited.Add(1)
		return
	}
	e.enqueue(inbound{src: src, payload: slices.Clone(payload)})
}

// OnBridge takes a document message from a bridge (the bridge client's
// receive goroutine: queue, never block).
func (e *Engine) OnBridge(bridge identity.PublicKey, payload []byte) {
	e.enqueue(inbound{bridge: bridge, payload: slices.Clone(payload)})
}

// BridgeRegistered presents this node's certificates and documents to a
// bridge it just registered with.
func (e *Engine) BridgeRegistered(bridge identity.PublicKey) {
	e.enqueue(inbound{bridge: bridge, reg: true})
}

// Greet presents this node's certificates and documents to a peer whose
// session starts, and asks for its certificates.
func (e *Engine) Greet(addr netip.Addr) {
	if e.Enabled() {
		e.enqueue(inbound{greet: addr})
	}
}

// Pending notes a peer admitted only because a rule could match it by
// certificate: unless one verifies within PendingTimeout, it is cut.
func (e *Engine) Pending(key identity.PublicKey) {
	e.enqueue(inbound{pending: key})
}

func (e *Engine) enqueue(in inbound) {
	select {
	case e.queue <- in:
	default:
		e.dropped.Add(1)
	}
}

// enqueueFunc runs fn on the engine's goroutine, waiting for room in the
// queue (it is the admin API's, not the packet path's).
func (e *Engine) enqueueFunc(fn func()) {
	select {
	case e.queue <- inbound{fn: fn}:
	case <-e.cfg.Done:
	}
}

// Run handles messages and timers until Config.Done is closed.
func (e *Engine) Run() {
	t := e.clock.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-e.cfg.Done:
			return
		case in := <-e.queue:
			e.handle(in)
			e.mu.Lock()
			rebuild := e.dirty && len(e.queue) == 0
			if rebuild {
				e.dirty = false
			}
			e.mu.Unlock()
			if rebuild {
				e.rebuild()
			}
		case <-t.C():
			e.onTick()
		}
	}
}

func (e *Engine) handle(in inbound) {
	switch {
	case in.fn != nil:
		in.fn()
	case !in.pending.IsZero():
		e.mu.Lock()
		valid := e.hasValidLocked(in.pending)
		if _, ok := e.pending[in.pending]; !ok && !valid {
			e.pending[in.pending] = pendingPeer{until: e.clock.Now().Add(PendingTimeout)}
		}
		e.mu.Unlock()
		if valid {
			e.node.Settled(in.pending, true) // its certificate came first
		}
		// No greeting here: this node is answering the peer's handshake,
		// and the peer greets first (its certificates and a Hello asking
		// for ours) as soon as its session is up; the node greets it once
		// its first packet confirms the session (Greet), never before,
		// which would make WireGuard start a crossing handshake.
	case in.greet.IsValid():
		e.greet(in.greet, false)
	case in.reg:
		if e.Enabled() {
			e.present(in.bridge)
		}
		e.joins.Registered(in.bridge)
	case in.src.IsValid():
		m, err := orgsync.Unmarshal(in.payload)
		if err != nil {
			e.certsBad.Add(1)
			return
		}
		e.received.Add(1)
		e.fromPeer(in.src, &m)
	case !in.bridge.IsZero():
		m, err := orgsync.Unmarshal(in.payload)
		if err != nil {
			e.certsBad.Add(1)
			return
		}
		e.received.Add(1)
		e.fromBridge(in.bridge, &m)
	}
}

// present sends a bridge this node's certificates and a Hello naming the
// documents it holds.
func (e *Engine) present(bridge identity.PublicKey) {
	e.mu.Lock()
	e.presented[bridge] = e.clock.Now()
	e.mu.Unlock()
	ch := e.bridgeChan(bridge)
	for _, c := range e.ownCerts() {
		ch.Send(&orgsync.Msg{Type: orgsync.TypeCert, Data: c.Binary()})
	}
	ch.Send(e.x.Hello(false))
}

// presentAgain presents this node again to each bridge it is registered
// with that it has not presented itself to for PresentInterval.
func (e *Engine) presentAgain(now time.Time) {
	bridges := e.node.Bridges()
	var due []identity.PublicKey
	e.mu.Lock()
	for _, b := range bridges {
		if now.Sub(e.presented[b]) >= PresentInterval {
			due = append(due, b)
		}
	}
	for b := range e.presented {
		if !slices.Contains(bridges, b) {
			delete(e.presented, b) // not registered now: presented afresh on registering
		}
	}
	e.mu.Unlock()
	for _, b := range due {
		e.present(b)
	}
}

// onTick retries pulls, presents this node to its bridges again, cuts
// peers whose certificate did not come, and notices certificates and
// lists that went out of date.
func (e *Engine) onTick() {
	now := e.clock.Now()
	e.x.Retry()
	e.joins.Tick(now)
	if e.Enabled() {
		e.presentAgain(now)
		e.askAgain(now)
	}
	// The directory first: a pending peer whose certificate verified
	// while the queue never drained is in it before its deadline is
	// checked.
	e.mu.Lock()
	dirty := e.dirty
	e.dirty = false
	e.mu.Unlock()
	if e.checkStale() || e.expiryPassed(now) || dirty {
		e.rebuild()
	}
	var settled []identity.PublicKey
	cut := map[string][]identity.PublicKey{} // by reason
	e.mu.Lock()
	for k, p := range e.pending {
		if e.hasValidLocked(k) {
			delete(e.pending, k)
			settled = append(settled, k)
			continue
		}
		if now.After(p.until) {
			delete(e.pending, k)
			why := p.why
			if why == "" {
				why = "no valid organisation certificate within " + PendingTimeout.String()
			}
			cut[why] = append(cut[why], k)
		}
	}
	e.greetings.Prune(now)
	// A peer silent for a minute has its budgets full again anyway.
	var gone []*peerChan
	for a, c := range e.peerChans {
		if !e.greetings.Greeted(a) && now.UnixNano()-c.seen.Load() > int64(time.Minute) {
			delete(e.peerChans, a)
			gone = append(gone, c)
		}
	}
	e.mu.Unlock()
	for _, c := range gone {
		e.x.Forget(c)
	}
	for _, k := range settled {
		e.node.Settled(k, true)
	}
	for why, keys := range cut {
		e.node.Cut(keys, why)
	}
}

// errNoOrg is the error for a certificate of an organisation the config
// does not name.
var errNoOrg = errors.New("certificate of an organisation this node does not trust (not in [[orgs]])")

// errStale marks a certificate refused only because its organisation's
// newest revocation list is older than crl_max_age.
var errStale = errors.New("revocation list stale")
