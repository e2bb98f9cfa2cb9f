package node

import (
	"container/list"
	"net/netip"
	"time"

	"golang.org/x/time/rate"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// Admission of keys that start a handshake without being peers. The Bind
// calls Admit on its handshake goroutine once an initiation has been
// authenticated and found fresh; the decision costs O(1) in the number of
// peers.
//
// A key that only a "*" rule lets in is the cheap way to make this node
// hold state: anyone can make keys. Such peers get their own quota
// (maxWildcardPeers, at most maxWildcardPerSource from one IPv6 /64 or
// IPv4 address, at most wildcardRate new ones per second); when it is
// full, the oldest one that never completed a handshake makes room, and
// if all have, the newcomer is refused. Peers the config names (static
// peers, rules naming a key or address) and peers this node wants itself
// (its own sends and lookups) are never refused for that: they do not
// count against the quota, and the quota is far below maxDynamicPeers.
var (
	maxWildcardPeers     = 1024 // variables for tests
	maxWildcardPerSource = 256
)

const (
	wildcardRate  = 100 // new wildcard peers per second
	wildcardBurst = 100

	deniedLogRate  = 5 // log lines and events per second about refused handshakes
	deniedLogBurst = 20
)

// wildcardState is the quota's bookkeeping. Guarded by Node.mu.
type wildcardState struct {
	count      int
	bySource   map[netip.Addr]int
	unanswered listOfPeers // wildcard peers without a handshake yet, oldest first
	rate       *rate.Limiter
	refusedLog time.Time
}

func newWildcardState() wildcardState {
	return wildcardState{bySource: make(map[netip.Addr]int), unanswered: newListOfPeers(), rate: rate.NewLimiter(wildcardRate, wildcardBurst)}
}

// Admit implements transport.Admitter: a handshake from a key that is not
// in the device. It never moves a peer's path (src is only counted): the
// Bind does that once WireGuard has authenticated traffic from there.
func (n *Node) Admit(key identity.PublicKey, src netip.AddrPort, source netip.Addr) bool {
	addr := key.Address()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closing.Load() {
		return false
	}
	// Under the lock: a Revoke that changed the store waits for it, or is
	// seen here.
	m := n.store.Matcher()
	p := n.peers[key]
	switch {
	case p != nil && p.static:
		// A static peer is answered even when no rule lets its traffic in
		// (this node's own flows need its handshakes), unless its rules
		// were revoked: then it is cut, and stays cut.
		if n.cutLocked(p) {
			n.denyAdmission(key, src, "revoked")
			return false
		}
	case p != nil:
	case !m.AllowsAny(addr):
		n.denyAdmission(key, src, "no rule allows this key")
		return false
	case m.Names(addr):
		if n.dynamic >= maxDynamicPeers {
			n.log.Warn("too many peers admitted by policy; refusing more", "peer", key.ShortString(), "limit", maxDynamicPeers)
			return false
		}
		p = &peer{key: key, addr: addr, site: n.bySite[key.SitePrefix()] == nil}
		n.insertLocked(p)
	default:
		if !n.admitWildcardLocked(key, source) {
			return false
		}
		p = &peer{key: key, addr: addr}
		n.insertLocked(p)
		n.markWildcardLocked(p, source)
	}
	if err := n.activateLocked(p); err != nil {
		n.log.Warn("cannot add peer", "peer", key.ShortString(), "err", err)
		if !p.static {
			n.forgetLocked(p, "not added")
		}
		return false
	}
	return true
}

// cutLocked reports whether static peer p was cut by a revocation: its
// rules were revoked and no rule lets it in. Only this node's own sends
// bring it back into the device, never a packet from it.
func (n *Node) cutLocked(p *peer) bool {
	return p.static && !n.store.Matcher().AllowsAny(p.addr) && n.store.Revoked(p.addr)
}

// admitWildcardLocked decides whether one more peer that only a "*" rule
// lets in fits, making room if it can.
func (n *Node) admitWildcardLocked(key identity.PublicKey, source netip.Addr) bool {
	w := &n.wild
	now := time.Now()
	refuse := func(why string) bool {
		if now.Sub(w.refusedLog) > 10*time.Second {
			w.refusedLog = now
			n.log.Warn("handshake refused: "+why, "peer", key.ShortString(), "source", source, "wildcard_peers", w.count)
		}
		return false
	}
	if n.dynamic >= maxDynamicPeers {
		return refuse("too many peers admitted by policy")
	}
	if source.IsValid() && w.bySource[source] >= maxWildcardPerSource {
		return refuse("too many peers that only a \"*\" rule admits from one source")
	}
	if !w.rate.AllowN(now, 1) {
		return refuse("too many new peers that only a \"*\" rule admits per second")
	}
	if w.count >= maxWildcardPeers && !n.evictUnansweredLocked() {
		return refuse("the quota of peers that only a \"*\" rule admits is full of peers with live sessions")
	}
	return true
}

// evictUnansweredLocked forgets the oldest wildcard peer that never
// completed a handshake, reporting false if there is none. Each peer
// leaves the list once, so this is O(1) amortised.
func (n *Node) evictUnansweredLocked() bool {
	m := n.store.Matcher()
	for {
		p := n.wild.unanswered.front()
		if p == nil {
			return false
		}
		switch {
		case m.Names(p.addr):
			n.unmarkWildcardLocked(p) // a rule names it now
		case !p.lastHS.IsZero() || n.bind.Answered(p.key):
			n.wild.unanswered.remove(p)
		default:
			n.forgetLocked(p, "wildcard quota full and no handshake completed")
			return true
		}
	}
}

func (n *Node) markWildcardLocked(p *peer, source netip.Addr) {
	p.wildcard, p.source = true, source
	n.wild.count++
	if source.IsValid() {
		n.wild.bySource[source]++
	}
	n.wild.unanswered.pushBack(p)
}

// unmarkWildcardLocked takes p out of the wildcard quota: it is forgotten,
// or this node wants it now.
func (n *Node) unmarkWildcardLocked(p *peer) {
	if !p.wildcard {
		return
	}
	p.wildcard = false
	n.wild.count--
	if p.source.IsValid() {
		if n.wild.bySource[p.source]--; n.wild.bySource[p.source] <= 0 {
			delete(n.wild.bySource, p.source)
		}
	}
	n.wild.unanswered.remove(p)
}

// denyAdmission logs and reports a refused handshake, at most once a
// minute per key and, since keys cost nothing to make, deniedLogRate a
// second in all (the counters have every one).
func (n *Node) denyAdmission(key identity.PublicKey, src netip.AddrPort, why string) {
	now := time.Now()
	if t, ok := n.deniedAt[key]; ok && now.Sub(t) < time.Minute {
		return
	}
	if !n.deniedLog.AllowN(now, 1) {
		return
	}
	if len(n.deniedAt) > 4096 {
		clear(n.deniedAt)
	}
	n.deniedAt[key] = now
	n.log.Info("handshake refused: "+why, "peer", key.ShortString(), "addr", key.Address(), "endpoint", src)
	n.events.publish(Event{Type: EventAdmissionDenied, Peer: key.String(), Address: key.Address().String(), Endpoint: src.String(), Detail: why})
}

// listOfPeers is a list of peers, each in it at most once (its element is
// kept in peer.unanswered), with O(1) removal.
type listOfPeers struct{ l *list.List }

func newListOfPeers() listOfPeers { return listOfPeers{l: list.New()} }

func (q listOfPeers) pushBack(p *peer) {
	if p.unanswered == nil {
		p.unanswered = q.l.PushBack(p)
	}
}

func (q listOfPeers) remove(p *peer) {
	if p.unanswered != nil {
		q.l.Remove(p.unanswered)
		p.unanswered = nil
	}
}

func (q listOfPeers) front() *peer {
	if e := q.l.Front(); e != nil {
		return e.Value.(*peer)
	}
	return nil
}
