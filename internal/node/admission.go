package node

import (
	"net/netip"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node/peers"
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
	maxWildcardPeers     = peers.DefaultMaxWildcard // variables for tests, read by New
	maxWildcardPerSource = peers.DefaultMaxWildcardPerSource
)

// Admit implements transport.Admitter: a handshake from a key that is not
// in the device. It never moves a peer's path (src is only counted): the
// Bind does that once WireGuard has authenticated traffic from there.
func (n *Node) Admit(key identity.PublicKey, src netip.AddrPort, source netip.Addr) bool {
	addr := key.Address()
	n.peers.Lock()
	defer n.peers.Unlock()
	if n.closing.Load() {
		return false
	}
	// Under the lock: a Revoke that changed the store waits for it, or is
	// seen here.
	m := n.store.Matcher()
	p := n.peers.Get(key)
	switch {
	case p != nil && p.Static:
		// A static peer is answered even when no rule lets its traffic in
		// (this node's own flows need its handshakes), unless its rules
		// were revoked: then it is cut, and stays cut.
		if n.cutLocked(p) {
			n.denyAdmission(key, src, "revoked")
			return false
		}
	case p != nil:
	case n.peers.ByDevice(addr) != nil:
		// A device a static peer hosts (peers[].devices): its address is
		// that peer's in the device, and a direct session must not take
		// it over.
		n.denyAdmission(key, src, "a device hosted by another peer")
		return false
	case !m.AllowsAny(addr) && !(m.ByCert() && n.orgs.Enabled()):
		n.denyAdmission(key, src, "no rule allows this key")
		return false
	case !m.AllowsAny(addr):
		// Only a rule naming a group, an organisation or a name could let
		// this key in: admitted as a wildcard peer, its traffic meets no
		// rule until its certificate verifies, and it is cut if none does
		// within orgs.PendingTimeout.
		if !n.admitWildcardLocked(key, source) {
			return false
		}
		p = &peers.Peer{Key: key, Addr: addr}
		n.insertLocked(p)
		n.peers.Mark(p, source)
		n.wrapper.HoldFrom(addr) // its first packets wait for the certificate
		n.orgs.Pending(key)
	case m.Names(addr) || n.orgs.IsMember(addr):
		if n.peers.DynamicFull() {
			n.log.Warn("too many peers admitted by policy; refusing more", "peer", key.ShortString(), "limit", n.peers.Limits().MaxDynamic)
			return false
		}
		// The site prefix (56 bits) only for a key a rule names itself.
		p = &peers.Peer{Key: key, Addr: addr, Site: m.Names(addr) && n.peers.BySite(key.SitePrefix()) == nil}
		n.insertLocked(p)
	default:
		if !n.admitWildcardLocked(key, source) {
			return false
		}
		p = &peers.Peer{Key: key, Addr: addr}
		n.insertLocked(p)
		n.peers.Mark(p, source)
	}
	p.Responding = true
	err := n.activateLocked(p)
	p.Responding = false
	if err != nil {
		n.log.Warn("cannot add peer", "peer", key.ShortString(), "err", err)
		if !p.Static {
			n.forgetLocked(p, "not added")
		}
		return false
	}
	return true
}

// cutLocked reports whether static peer p was cut by a revocation: its
// rules were revoked and no rule lets it in. Only this node's own sends
// bring it back into the device, never a packet from it.
func (n *Node) cutLocked(p *peers.Peer) bool {
	return p.Static && !n.store.Matcher().AllowsAny(p.Addr) && n.store.Revoked(p.Addr)
}

// admitWildcardLocked decides whether one more peer that only a "*" rule
// lets in fits, making room if it can.
func (n *Node) admitWildcardLocked(key identity.PublicKey, source netip.Addr) bool {
	now := n.clock.Now()
	why := n.peers.AdmitWildcard(source, now)
	if why == peers.RefusedQuotaFull && n.evictUnansweredLocked() {
		why = "" // room made; the rate's token is spent already
	}
	if why == "" {
		return true
	}
	if now.Sub(n.wildRefusedLog) > 10*time.Second {
		n.wildRefusedLog = now
		n.log.Warn("handshake refused: "+string(why), "peer", key.ShortString(), "source", source, "wildcard_peers", n.peers.WildcardCount())
	}
	return false
}

// evictUnansweredLocked forgets the oldest wildcard peer that never
// completed a handshake, reporting false if there is none. Each peer
// leaves the unanswered list once, so this is O(1) amortised.
func (n *Node) evictUnansweredLocked() bool {
	m := n.store.Matcher()
	for {
		p := n.peers.Unanswered()
		if p == nil {
			return false
		}
		switch {
		case m.Names(p.Addr) || n.orgs.IsMember(p.Addr):
			n.peers.Unmark(p) // a rule names it now, or its organisation vouches for it
		case !p.LastHS.IsZero() || n.bind.Answered(p.Key):
			n.peers.Answered(p)
		default:
			n.forgetLocked(p, "wildcard quota full and no handshake completed")
			return true
		}
	}
}

// denyAdmission logs and reports a refused handshake, as often as the
// table's limit on such reports allows (the counters have every one).
func (n *Node) denyAdmission(key identity.PublicKey, src netip.AddrPort, why string) {
	if !n.peers.ReportDenial(key, n.clock.Now()) {
		return
	}
	n.log.Info("handshake refused: "+why, "peer", key.ShortString(), "addr", key.Address(), "endpoint", src)
	n.events.Publish(Event{Type: EventAdmissionDenied, Peer: key.String(), Address: key.Address().String(), Endpoint: src.String(), Detail: why})
}
