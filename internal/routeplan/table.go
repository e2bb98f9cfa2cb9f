package routeplan

import (
	"net/netip"
	"slices"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// Table is the offer table: what each peer last offered, as its offer
// messages (package offers) say. Not safe for concurrent use: its owner
// guards it.
type Table struct {
	peers map[identity.PublicKey]*learned
}

// learned is what one peer offers.
type learned struct {
	boot, seq uint32
	routes    []netip.Prefix
	accepted  []netip.Prefix // what the peer installed of our offer
	at        time.Time
	// window and changes limit how often the peer's offer may change
	// (each change costs device and routing-table updates).
	window  time.Time
	changes int
}

// A peer's offer may change at most MaxChanges times per ChangeWindow;
// later changes wait for its next refresh.
const (
	MaxChanges   = 10
	ChangeWindow = 10 * time.Second
)

// NewTable returns an empty table.
func NewTable() *Table { return &Table{peers: map[identity.PublicKey]*learned{}} }

// Outcome is what Update did with an offer.
type Outcome int

const (
	Unchanged Outcome = iota // the same routes again (a refresh), or an older offer
	Changed                  // the routes changed: a new plan is due
	Throttled                // the routes changed too often; ignored for now
)

// Update records an offer from key: routes it offers and accepted, what it
// installed of this node's offer; boot and seq order offers of one run of
// the peer.
func (t *Table) Update(key identity.PublicKey, boot, seq uint32, routes, accepted []netip.Prefix, now time.Time) Outcome {
	l := t.peers[key]
	if l != nil && l.boot == boot && seq < l.seq {
		return Unchanged // an older offer, reordered
	}
	if l == nil {
		l = &learned{}
		t.peers[key] = l
	}
	changed := !slices.Equal(l.routes, routes)
	if changed {
		if now.Sub(l.window) > ChangeWindow {
			l.window, l.changes = now, 0
		}
		if l.changes++; l.changes > MaxChanges {
			return Throttled
		}
	}
	l.boot, l.seq, l.routes, l.accepted, l.at = boot, seq, slices.Clone(routes), slices.Clone(accepted), now
	if changed {
		return Changed
	}
	return Unchanged
}

// FirstThrottle reports whether key's offer was just throttled for the
// first time in its window (log it once).
func (t *Table) FirstThrottle(key identity.PublicKey) bool {
	l := t.peers[key]
	return l != nil && l.changes == MaxChanges+1
}

// Has reports whether key has sent an offer.
func (t *Table) Has(key identity.PublicKey) bool { return t.peers[key] != nil }

// Forget drops key's offer, reporting whether it had one.
func (t *Table) Forget(key identity.PublicKey) bool {
	if t.peers[key] == nil {
		return false
	}
	delete(t.peers, key)
	return true
}

// Expire forgets the offers older than maxAge of the peers for which live
// reports true (their session is up, yet they stopped refreshing: e.g. one
// restarted without routes and its empty offer was lost), and returns
// their keys.
func (t *Table) Expire(now time.Time, maxAge time.Duration, live func(identity.PublicKey) bool) []identity.PublicKey {
	var out []identity.PublicKey
	for k, l := range t.peers {
		if live(k) && now.Sub(l.at) > maxAge {
			delete(t.peers, k)
			out = append(out, k)
		}
	}
	return out
}

// Offers returns what every peer offers, for Compute.
func (t *Table) Offers() map[identity.PublicKey][]netip.Prefix {
	out := make(map[identity.PublicKey][]netip.Prefix, len(t.peers))
	for k, l := range t.peers {
		out[k] = l.routes
	}
	return out
}

// AcceptedBy returns the peers that said they installed p, in no order.
func (t *Table) AcceptedBy(p netip.Prefix) []identity.PublicKey {
	var out []identity.PublicKey
	for k, l := range t.peers {
		if slices.Contains(l.accepted, p) {
			out = append(out, k)
		}
	}
	return out
}
