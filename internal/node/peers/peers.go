// Package peers is the node's peer table: every peer it knows, indexed by
// key, node address, site prefix and (for static peers) endpoint, with the
// quota of peers that only a "*" rule let in and the limits on reports of
// refused handshakes.
//
// What a peer means to the device, the routes and the policy is the node's
// business; this package only keeps the records and their indexes
// consistent. Every operation costs the same whatever the number of peers
// (maps, counters and an intrusive list, never a scan), except the
// iterators the periodic eviction and the API's listings use.
//
// A Table has one lock. Lock and Unlock take it; every other method needs
// it held, and so does every read or write of a Peer's fields. The node
// never holds it while taking its route lock (that one comes first).
package peers

import (
	"container/list"
	"iter"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// Peer is the node's record of one peer. Its fields are guarded by the
// lock of the Table that holds it.
type Peer struct {
	Key       identity.PublicKey
	Addr      netip.Addr // Key's node address
	Name      string
	Static    bool           // from the config: never forgotten, only deactivated
	Endpoint  netip.AddrPort // where to send first: configured or observed
	Host      string         // configured endpoint host, when it is a DNS name
	Port      uint16
	Keepalive time.Duration
	// Site is true when the peer's site prefix is in its AllowedIPs: for
	// static peers and peers a rule names explicitly, never for peers that
	// only a "*" rule admits (the site prefix has only 56 bits).
	Site bool
	// ViaBridge: found by a lookup through a bridge.
	ViaBridge bool
	// Routes are the tunnelled prefixes this node accepted from the peer;
	// RouteIPs what they are in its AllowedIPs (see offers.Pieces).
	Routes   []netip.Prefix
	RouteIPs []netip.Prefix
	// Offered: this node has sent the peer its route offer.
	Offered bool
	// Devices are the node addresses of the plain WireGuard devices this
	// static peer hosts (config peers[].devices): in its AllowedIPs, so
	// WireGuard accepts them from this peer only and sends to them
	// through it. Indexed (ByDevice) while the peer is in the table.
	Devices []netip.Addr
	// Device: this peer is a plain WireGuard device this node hosts
	// (`tomoe device add`): static, no endpoint until it sends, and this
	// node forwards between it and the overlay.
	Device bool

	Active      bool // in the WireGuard device
	ActivatedAt time.Time
	// Responding: it is being put into the device because of its own
	// handshake, which this node answers; nothing is sent to it until its
	// first packet confirms the session (see tunwrap.OnFirstFrom).
	Responding bool
	LastHS     time.Time // last completed handshake
	Up         bool      // a session younger than WireGuard's lifetime
	RX, TX     uint64

	// wildcard: only a "*" rule let this peer in, and the node has not
	// wanted it since; it counts against the wildcard quota under source,
	// and waits in the unanswered list until the node says it answered.
	wildcard   bool
	source     netip.Addr
	unanswered *list.Element
}

// AllowedIPs are the prefixes the device routes to the peer: its node
// address, its site prefix if it holds it, and its accepted routes.
func (p *Peer) AllowedIPs() []netip.Prefix {
	out := []netip.Prefix{netip.PrefixFrom(p.Addr, 128)}
	if p.Site {
		out = append(out, p.Key.SitePrefix())
	}
	for _, d := range p.Devices {
		out = append(out, netip.PrefixFrom(d, 128))
	}
	return append(out, p.RouteIPs...)
}

// Wildcard reports whether p counts against the wildcard quota.
func (p *Peer) Wildcard() bool { return p.wildcard }

// Limits bound the table. A zero field takes its default.
type Limits struct {
	// MaxDynamic bounds peers admitted by policy rather than config.
	MaxDynamic int
	// MaxWildcard bounds peers that only a "*" rule admits, and
	// MaxWildcardPerSource those of them from one source (an IPv6 /64 or
	// an IPv4 address, as the caller reports it).
	MaxWildcard          int
	MaxWildcardPerSource int
	// WildcardRate and WildcardBurst bound new wildcard peers per second.
	WildcardRate  rate.Limit
	WildcardBurst int
}

// Default limits.
const (
	DefaultMaxDynamic           = 8192
	DefaultMaxWildcard          = 1024
	DefaultMaxWildcardPerSource = 256
	DefaultWildcardRate         = 100
	DefaultWildcardBurst        = 100

	// deniedLogRate and deniedLogBurst bound reports of refused
	// handshakes per second in all (keys cost nothing to make);
	// deniedEvery is the least time between two reports for one key.
	deniedLogRate  = 5
	deniedLogBurst = 20
	deniedEvery    = time.Minute
	deniedKeys     = 4096 // keys remembered for deniedEvery
)

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxDynamic, DefaultMaxDynamic)
	def(&l.MaxWildcard, DefaultMaxWildcard)
	def(&l.MaxWildcardPerSource, DefaultMaxWildcardPerSource)
	def(&l.WildcardBurst, DefaultWildcardBurst)
	if l.WildcardRate == 0 {
		l.WildcardRate = DefaultWildcardRate
	}
	return l
}

// Table is the peer table. The zero value is not usable: call New.
type Table struct {
	mu         sync.Mutex
	byKey      map[identity.PublicKey]*Peer
	byAddr     map[netip.Addr]*Peer
	bySite     map[netip.Prefix]*Peer   // peers that hold their site prefix (Peer.Site)
	byEndpoint map[netip.AddrPort]*Peer // static peers by their endpoint
	byDevice   map[netip.Addr]*Peer     // hosting peers by their devices' addresses (Peer.Devices)
	dynamic    int                      // peers not from the config
	limits     Limits

	// The wildcard quota.
	wildCount  int
	wildBy     map[netip.Addr]int // by source
	unanswered *list.List         // wildcard peers not yet answered, oldest first
	wildRate   *rate.Limiter

	// deniedAt and deniedLog limit the reports of refused handshakes.
	deniedAt  map[identity.PublicKey]time.Time
	deniedLog *rate.Limiter

	// forgotten are keys removed since the node last took them (it drops
	// their route offers, which needs its route lock), signalled on
	// forgottenSig.
	forgotten    []identity.PublicKey
	forgottenSig chan struct{}
}

// New returns an empty table with the given limits.
func New(l Limits) *Table {
	t := &Table{
		byKey:        make(map[identity.PublicKey]*Peer),
		byAddr:       make(map[netip.Addr]*Peer),
		bySite:       make(map[netip.Prefix]*Peer),
		byEndpoint:   make(map[netip.AddrPort]*Peer),
		byDevice:     make(map[netip.Addr]*Peer),
		wildBy:       make(map[netip.Addr]int),
		unanswered:   list.New(),
		deniedAt:     make(map[identity.PublicKey]time.Time),
		deniedLog:    rate.NewLimiter(deniedLogRate, deniedLogBurst),
		forgottenSig: make(chan struct{}, 1),
	}
	t.SetLimits(l)
	return t
}

// Lock takes the table's lock.
func (t *Table) Lock() { t.mu.Lock() }

// Unlock releases it.
func (t *Table) Unlock() { t.mu.Unlock() }

// Limits returns the table's limits, defaults filled in.
func (t *Table) Limits() Limits { return t.limits }

// SetLimits changes the limits (zero fields: defaults). Peers over a
// lowered limit stay; the limit applies to newcomers.
func (t *Table) SetLimits(l Limits) {
	t.limits = l.withDefaults()
	t.wildRate = rate.NewLimiter(t.limits.WildcardRate, t.limits.WildcardBurst)
}

// Get returns the peer with key k, or nil.
func (t *Table) Get(k identity.PublicKey) *Peer { return t.byKey[k] }

// ByAddr returns the peer whose node address is a, or nil.
func (t *Table) ByAddr(a netip.Addr) *Peer { return t.byAddr[a] }

// BySite returns the peer that holds site prefix s, or nil.
func (t *Table) BySite(s netip.Prefix) *Peer { return t.bySite[s] }

// ByEndpoint returns the static peer configured or resolved at ep, or nil.
func (t *Table) ByEndpoint(ep netip.AddrPort) *Peer { return t.byEndpoint[ep] }

// ByDevice returns the peer that hosts the device with node address a, or nil.
func (t *Table) ByDevice(a netip.Addr) *Peer { return t.byDevice[a] }

// Len is the number of peers.
func (t *Table) Len() int { return len(t.byKey) }

// Dynamic is the number of peers not from the config.
func (t *Table) Dynamic() int { return t.dynamic }

// DynamicFull reports whether no more peers may be admitted by policy.
func (t *Table) DynamicFull() bool { return t.dynamic >= t.limits.MaxDynamic }

// All iterates over the peers in no particular order. The caller holds
// the lock for the whole iteration.
func (t *Table) All() iter.Seq[*Peer] {
	return func(yield func(*Peer) bool) {
		for _, p := range t.byKey {
			if !yield(p) {
				return
			}
		}
	}
}

// Sites iterates over the site prefixes held and their peers.
func (t *Table) Sites() iter.Seq2[netip.Prefix, *Peer] {
	return func(yield func(netip.Prefix, *Peer) bool) {
		for s, p := range t.bySite {
			if !yield(s, p) {
				return
			}
		}
	}
}

// Insert adds p and indexes it. A peer whose site prefix another peer
// holds already must not have Site set (BySite tells).
func (t *Table) Insert(p *Peer) {
	t.byKey[p.Key] = p
	t.byAddr[p.Addr] = p
	if p.Site {
		t.bySite[p.Key.SitePrefix()] = p
	}
	if p.Static && p.Endpoint.IsValid() {
		t.byEndpoint[p.Endpoint] = p
	}
	for _, d := range p.Devices {
		t.byDevice[d] = p
	}
	if !p.Static {
		t.dynamic++
	}
}

// Remove drops p from the table and the wildcard quota, and queues its key
// for TakeForgotten.
func (t *Table) Remove(p *Peer) {
	if t.byKey[p.Key] != p {
		return
	}
	delete(t.byKey, p.Key)
	delete(t.byAddr, p.Addr)
	if p.Site && t.bySite[p.Key.SitePrefix()] == p {
		delete(t.bySite, p.Key.SitePrefix())
	}
	if p.Static && t.byEndpoint[p.Endpoint] == p {
		delete(t.byEndpoint, p.Endpoint)
	}
	for _, d := range p.Devices {
		if t.byDevice[d] == p {
			delete(t.byDevice, d)
		}
	}
	if !p.Static {
		t.dynamic--
	}
	t.Unmark(p)
	t.forgotten = append(t.forgotten, p.Key)
	select {
	case t.forgottenSig <- struct{}{}:
	default:
	}
}

// SetEndpoint moves p to ep, reindexing a static peer.
func (t *Table) SetEndpoint(p *Peer, ep netip.AddrPort) {
	if p.Static && p.Endpoint.IsValid() && t.byEndpoint[p.Endpoint] == p {
		delete(t.byEndpoint, p.Endpoint)
	}
	p.Endpoint = ep
	if p.Static && ep.IsValid() {
		t.byEndpoint[ep] = p
	}
}

// SetDevices replaces the device addresses p hosts, reindexing them.
func (t *Table) SetDevices(p *Peer, devs []netip.Addr) {
	for _, d := range p.Devices {
		if t.byDevice[d] == p {
			delete(t.byDevice, d)
		}
	}
	p.Devices = devs
	if t.byKey[p.Key] == p {
		for _, d := range devs {
			t.byDevice[d] = p
		}
	}
}

// Forgotten is signalled after Remove; TakeForgotten then returns the keys
// removed since the last call.
func (t *Table) Forgotten() <-chan struct{} { return t.forgottenSig }

// TakeForgotten returns and clears the keys removed since the last call.
func (t *Table) TakeForgotten() []identity.PublicKey {
	f := t.forgotten
	t.forgotten = nil
	return f
}

// ReportDenial reports whether a refused handshake from key should be
// logged now: at most once per deniedEvery per key and deniedLogRate a
// second in all (the node's counters have every one).
func (t *Table) ReportDenial(key identity.PublicKey, now time.Time) bool {
	if at, ok := t.deniedAt[key]; ok && now.Sub(at) < deniedEvery {
		return false
	}
	if !t.deniedLog.AllowN(now, 1) {
		return false
	}
	if len(t.deniedAt) >= deniedKeys {
		clear(t.deniedAt)
	}
	t.deniedAt[key] = now
	return true
}
