package node

import (
	"net/netip"
	"slices"
	"sort"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/offers"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// Which learned routes are installed, for which peer, and what that makes
// of AllowedIPs, the OS routes, the wrapper and the filter.

// recomputeRoutesLocked decides which learned prefixes are installed and
// for which peer, then updates AllowedIPs, the OS routes, the wrapper and
// the filter. A prefix accepted from two peers stays with the peer that
// has it; a new one goes to the first peer by key order.
func (n *Node) recomputeRoutesLocked() {
	want := map[identity.PublicKey][]netip.Prefix{}
	keys := make([]identity.PublicKey, 0, len(n.rt.learned))
	for k := range n.rt.learned {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return string(keys[i][:]) < string(keys[j][:]) })
	owner := map[netip.Prefix]identity.PublicKey{}
	accepted := map[identity.PublicKey][]netip.Prefix{}
	m := n.store.Matcher()
	var named []offers.Rule // rules that name a node: for peers the policy does not let in
	for _, r := range n.rt.rules {
		if !r.From.Any {
			named = append(named, r)
		}
	}
	for _, k := range keys {
		p := n.peers[k]
		if p == nil {
			continue
		}
		// A "*" rule accepts only from peers the policy lets in, or any
		// peer this node once talked to could claim another node's /32.
		rules := n.rt.rules
		if !m.AllowsAny(p.addr) {
			rules = named
		}
		for _, pr := range offers.Accepted(rules, p.addr, n.rt.learned[k].routes) {
			if n.ownsRouteLocked(pr) {
				n.log.Debug("offered route overlaps one of this node's own; not installed", "prefix", pr, "peer", k.ShortString())
				continue
			}
			accepted[k] = append(accepted[k], pr)
		}
	}
	// Keep current owners first.
	for _, k := range keys {
		for _, pr := range accepted[k] {
			if cur, ok := n.rt.installed[pr]; ok && cur == k {
				owner[pr] = k
			}
		}
	}
	for _, k := range keys {
		for _, pr := range accepted[k] {
			if cur, taken := owner[pr]; taken && cur != k {
				n.log.Warn("route offered by two peers; keeping the first", "prefix", pr, "peer", k.ShortString(), "kept", cur.ShortString())
				continue
			}
			owner[pr] = k
		}
	}
	for pr, k := range owner {
		want[k] = append(want[k], pr)
	}
	for _, l := range want {
		slices.SortFunc(l, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr())*256 + a.Bits() - b.Bits() })
	}
	for pr, k := range n.rt.installed {
		if owner[pr] != k {
			n.log.Info("route removed", "prefix", pr, "peer", k.ShortString())
		}
	}
	for pr, k := range owner {
		if cur, ok := n.rt.installed[pr]; !ok || cur != k {
			n.log.Info("route installed", "prefix", pr, "peer", k.ShortString())
		}
	}
	n.rt.installed = owner
	for _, p := range n.peers {
		w := want[p.key]
		ips := n.routePiecesLocked(w)
		if slices.Equal(w, p.routes) && slices.Equal(ips, p.routeIPs) {
			continue
		}
		p.routes, p.routeIPs = w, ips
		if p.active {
			if err := n.activateLocked(p); err != nil {
				n.log.Warn("cannot update peer's routes", "peer", p.key.ShortString(), "err", err)
			}
		}
	}
	n.routesChangedLocked()
}

// ownsRouteLocked reports whether accepting pr would capture a LAN this
// node offers itself: pr, not a default route, overlaps one of its own
// offers other than a default route and its tun.ipv4 (which the kernel
// delivers locally before any route). A default route cannot capture it:
// the host's own specific routes win over it.
func (n *Node) ownsRouteLocked(pr netip.Prefix) bool {
	if pr.Bits() == 0 {
		return false
	}
	v4 := n.ipv4
	for _, o := range n.rt.offers {
		if o.Prefix.Bits() > 0 && !(v4.IsValid() && o.Prefix == netip.PrefixFrom(v4, 32)) && o.Prefix.Overlaps(pr) {
			return true
		}
	}
	return false
}

// routedOwnersLocked returns the installed routes of active peers, longest
// prefixes first, for the wrapper and the filter.
func (n *Node) routedOwnersLocked() []policy.RouteOwner {
	var out []policy.RouteOwner
	for pr, k := range n.rt.installed {
		p := n.peers[k]
		if p == nil || !p.active {
			continue
		}
		for _, a := range n.routePiecesLocked([]netip.Prefix{pr}) {
			out = append(out, policy.RouteOwner{Prefix: a, Owner: p.addr})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Prefix.Bits() > out[j].Prefix.Bits() })
	return out
}

// syncOSRoutesLocked routes every installed prefix into the kernel TUN and
// removes those no longer installed.
func (n *Node) syncOSRoutesLocked() {
	if n.osRoutes == nil {
		return
	}
	for pr := range n.rt.osRouted {
		if _, ok := n.rt.installed[pr]; !ok {
			if err := n.osRoutes.DelRoute(pr); err != nil {
				n.log.Warn("cannot remove route", "prefix", pr, "err", err)
			}
			delete(n.rt.osRouted, pr)
		}
	}
	for pr := range n.rt.installed {
		if n.rt.osRouted[pr] {
			continue
		}
		if err := n.osRoutes.AddRoute(pr); err != nil {
			n.log.Warn("cannot route accepted prefix", "prefix", pr, "err", err)
			continue
		}
		n.rt.osRouted[pr] = true
	}
}

// routeOwnerLocked returns the peer an installed route for dst leads to.
func (n *Node) routeOwnerLocked(dst netip.Addr) *peer {
	var best *peer
	bits := -1
	for pr, k := range n.rt.installed {
		if pr.Bits() > bits && slices.ContainsFunc(n.routePiecesLocked([]netip.Prefix{pr}), func(a netip.Prefix) bool { return a.Contains(dst) }) {
			best, bits = n.peers[k], pr.Bits()
		}
	}
	return best
}

// routePiecesLocked is what the installed routes rs become in AllowedIPs:
// default routes leave out the overlay's spaces and every other installed
// route (offers.Pieces).
func (n *Node) routePiecesLocked(rs []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, r := range rs {
		var others []netip.Prefix
		if r.Bits() == 0 {
			for o := range n.rt.installed {
				if o.Bits() > 0 && o.Addr().BitLen() == r.Addr().BitLen() {
					others = append(others, o)
				}
			}
		}
		out = append(out, offers.Pieces(r, others)...)
	}
	return out
}
