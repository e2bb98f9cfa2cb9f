package node

import (
	"net/netip"
	"slices"
	"sort"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/offers"
	"github.com/tomoe-net/tomoe/internal/policy"
	"github.com/tomoe-net/tomoe/internal/routes"
)

// Which learned routes are installed, for which peer, and what that makes
// of AllowedIPs, the OS routes, the wrapper and the filter.

// Route states and reasons, as `tomoe routes` shows them (a contract:
// add values, never rename them).
const (
	stateInstalled   = "installed"
	stateNotAccepted = "not_accepted"
	stateConflict    = "conflict"

	// not_accepted: a "*" rule covers it, but it is not the offering
	// key's derived IPv4 address (an explicit address needs a rule naming
	// the node).
	reasonNotOwnAddress = "not_own_address"
	// not_accepted: only a "*" rule covers it, and the policy does not
	// let the peer in.
	reasonPolicy = "policy"
	// not_accepted: it overlaps a route this node offers itself.
	reasonOwnRoute = "own_route"
	// conflict: it is this node's own IPv4 address.
	reasonOwnAddress = "own_address"
	// conflict: several peers offer it, and it is the derived address of
	// at least one of them; none has it.
	reasonCollision = "address_collision"
	// conflict: another peer has it (it offered it first, or sorts first).
	reasonOtherPeer = "other_peer"
	// conflict: it lies within one of the host's own networks.
	reasonHostNetwork = "host_network"
)

// routeVerdict is what became of one learned prefix.
type routeVerdict struct {
	state, reason string
	with          []identity.PublicKey // the other peers of a conflict
}

// recomputeRoutesLocked decides which learned prefixes are installed and
// for which peer, then updates AllowedIPs, the OS routes, the wrapper and
// the filter.
//
// A derived IPv4 address offered by several peers, or this node's own
// address offered by a peer, is installed for nobody: two keys that derive
// one address collide, and which offer arrived first must not decide who
// gets the other's traffic. Any other prefix accepted from two peers stays
// with the peer that has it, and a new one goes to the first peer by key
// order (two gateways for one LAN: the second takes over when the first
// withdraws).
func (n *Node) recomputeRoutesLocked() {
	want := map[identity.PublicKey][]netip.Prefix{}
	keys := make([]identity.PublicKey, 0, len(n.rt.learned))
	for k := range n.rt.learned {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return string(keys[i][:]) < string(keys[j][:]) })
	verdicts := map[identity.PublicKey]map[netip.Prefix]routeVerdict{}
	judge := func(k identity.PublicKey, pr netip.Prefix, v routeVerdict) {
		if verdicts[k] == nil {
			verdicts[k] = map[netip.Prefix]routeVerdict{}
		}
		verdicts[k][pr] = v
	}
	owner := map[netip.Prefix]identity.PublicKey{}
	accepted := map[identity.PublicKey][]netip.Prefix{}
	claims := map[netip.Prefix][]identity.PublicKey{} // who may have each accepted prefix
	offerers := map[identity.PublicKey]offers.Offerer{}
	space := n.cfg.TUN.IPv4Prefix.Prefix
	var self netip.Prefix
	if n.ipv4.IsValid() {
		self = netip.PrefixFrom(n.ipv4, 32)
	}
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
		from := offers.NewOfferer(k, space)
		offerers[k] = from
		// A "*" rule accepts only from peers the policy lets in, or any
		// peer this node once talked to could offer routes into its LAN.
		rules := n.rt.rules
		if !m.AllowsAny(p.addr) {
			rules = named
		}
		for _, pr := range n.rt.learned[k].routes {
			switch {
			case pr == self:
				judge(k, pr, routeVerdict{state: stateConflict, reason: reasonOwnAddress})
			case len(offers.Accepted(rules, from, []netip.Prefix{pr})) == 0:
				v := routeVerdict{state: stateNotAccepted}
				if offers.NotOwnAddress(n.rt.rules, from, pr) {
					v.reason = reasonNotOwnAddress
				} else if len(offers.Accepted(n.rt.rules, from, []netip.Prefix{pr})) > 0 {
					v.reason = reasonPolicy
				}
				judge(k, pr, v)
			case n.ownsRouteLocked(pr):
				judge(k, pr, routeVerdict{state: stateNotAccepted, reason: reasonOwnRoute})
			case n.inHostNetworkLocked(pr):
				judge(k, pr, routeVerdict{state: stateConflict, reason: reasonHostNetwork})
			default:
				accepted[k] = append(accepted[k], pr)
				claims[pr] = append(claims[pr], k)
			}
		}
	}
	for pr, ks := range claims {
		if len(ks) < 2 || !slices.ContainsFunc(ks, func(k identity.PublicKey) bool { return offerers[k].OwnIPv4(pr) }) {
			continue
		}
		for _, k := range ks {
			others := slices.DeleteFunc(slices.Clone(ks), func(o identity.PublicKey) bool { return o == k })
			judge(k, pr, routeVerdict{state: stateConflict, reason: reasonCollision, with: others})
			accepted[k] = slices.DeleteFunc(accepted[k], func(a netip.Prefix) bool { return a == pr })
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
				judge(k, pr, routeVerdict{state: stateConflict, reason: reasonOtherPeer, with: []identity.PublicKey{cur}})
				continue
			}
			owner[pr] = k
			judge(k, pr, routeVerdict{state: stateInstalled})
		}
	}
	n.logConflictsLocked(verdicts)
	n.rt.verdicts = verdicts
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

// logConflictsLocked logs each conflict in verdicts that the previous
// verdicts did not have, naming the peers involved.
func (n *Node) logConflictsLocked(verdicts map[identity.PublicKey]map[netip.Prefix]routeVerdict) {
	for k, vs := range verdicts {
		for pr, v := range vs {
			if v.state != stateConflict {
				continue
			}
			if old, ok := n.rt.verdicts[k][pr]; ok && old.state == v.state && old.reason == v.reason && slices.Equal(old.with, v.with) {
				continue
			}
			with := make([]string, len(v.with))
			for i, o := range v.with {
				with[i] = o.String()
			}
			switch v.reason {
			case reasonOwnAddress:
				msg := "a peer offers this node's own IPv4 address; not installed"
				if offers.NewOfferer(k, n.cfg.TUN.IPv4Prefix.Prefix).OwnIPv4(pr) {
					msg = "a peer's key derives this node's own IPv4 address (two keys collide); not installed: give one of the two nodes another tun.ipv4_prefix or an explicit tun.ipv4"
				}
				n.log.Warn(msg, "prefix", pr, "peer", k.String())
			case reasonHostNetwork:
				n.log.Info("an accepted route lies within one of the host's own networks; not installed while the host is on it", "prefix", pr, "peer", k.String())
			case reasonCollision:
				n.log.Warn("several peers offer one derived IPv4 address (their keys collide, or one claims the other's); installed for none of them", "prefix", pr, "peer", k.String(), "others", with)
			default:
				n.log.Warn("route offered by two peers; keeping the first", "prefix", pr, "peer", k.String(), "kept", with)
			}
		}
	}
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
// default routes leave out the overlay's spaces, every route the host's
// own networks, and a route so split every other installed route within
// it (offers.Pieces).
func (n *Node) routePiecesLocked(rs []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, r := range rs {
		var others []netip.Prefix
		for o := range n.rt.installed {
			if o != r && o.Bits() > r.Bits() && o.Addr().BitLen() == r.Addr().BitLen() && r.Contains(o.Addr()) {
				others = append(others, o)
			}
		}
		out = append(out, offers.Pieces(r, others, n.host.Networks)...)
	}
	return out
}

// inHostNetworkLocked reports whether pr lies within one of the host's
// own networks (kernel mode; routes.Host): such a route would take the
// host's LAN, its router or its DNS into the tunnel, so it is not
// installed. A default route is never within one.
func (n *Node) inHostNetworkLocked(pr netip.Prefix) bool {
	return slices.ContainsFunc(n.host.Networks, func(h netip.Prefix) bool {
		return h.Addr().BitLen() == pr.Addr().BitLen() && h.Bits() <= pr.Bits() && h.Contains(pr.Addr())
	})
}

// onHostChange is routes.Interface.WatchHost's report that the host's
// networks or addresses changed (a laptop joined another LAN): what is
// installed, and what the filter takes as this host's, follow.
func (n *Node) onHostChange(h routes.Host, err error) {
	if err != nil {
		n.log.Warn("cannot follow the host's networks; accepted routes keep to the last ones seen", "err", err)
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closing {
		return
	}
	n.log.Info("the host's networks changed", "networks", prefixStrings(h.Networks))
	n.host = h
	n.filter.SetLocal(n.localPolicyLocked())
	n.recomputeRoutesLocked()
}
