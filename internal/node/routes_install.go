package node

import (
	"net/netip"
	"slices"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node/peers"
	"github.com/tomoe-net/tomoe/internal/offers"
	"github.com/tomoe-net/tomoe/internal/policy"
	"github.com/tomoe-net/tomoe/internal/routeplan"
	"github.com/tomoe-net/tomoe/internal/routes"
)

// Applying route plans: AllowedIPs, the OS routes, the wrapper and the
// filter follow the plan (package routeplan decides).

// recomputeRoutesLocked plans the routes anew (routeplan.Compute, from
// the offers, the accept rules, the policy, this node's own offers and the
// host's networks) and applies the plan: AllowedIPs of the peers whose
// routes changed, the OS routes, the wrapper and the filter.
func (n *Node) recomputeRoutesLocked() {
	m := n.store.Matcher()
	in := routeplan.Input{
		Offers:    n.rt.learned.Offers(),
		Admitted:  m.AllowsAny,
		Rules:     n.rt.rules,
		IPv4Space: n.cfg.TUN.IPv4Prefix.Prefix,
		Host:      n.host.Networks,
		Installed: n.rt.plan.Installed,
	}
	// Only offers of peers this node knows count.
	for k := range in.Offers {
		if n.peers.Get(k) == nil {
			delete(in.Offers, k)
		}
	}
	if n.ipv4.IsValid() {
		in.Self = netip.PrefixFrom(n.ipv4, 32)
	}
	for _, o := range n.rt.offers {
		if o.Prefix != in.Self {
			in.Own = append(in.Own, o.Prefix)
		}
	}
	plan := routeplan.Compute(in)
	old := n.rt.plan
	n.logConflictsLocked(old, plan)
	for pr, k := range old.Installed {
		if plan.Installed[pr] != k {
			n.log.Info("route removed", "prefix", pr, "peer", k.ShortString())
		}
	}
	for pr, k := range plan.Installed {
		if cur, ok := old.Installed[pr]; !ok || cur != k {
			n.log.Info("route installed", "prefix", pr, "peer", k.ShortString())
		}
	}
	n.rt.plan = plan
	n.plan.Store(plan)
	n.syncOSRoutesLocked()
	// Only the peers whose routes the plan changes are reconfigured.
	changed := map[identity.PublicKey]bool{}
	for k := range old.Routes {
		changed[k] = true
	}
	for k := range plan.Routes {
		changed[k] = true
	}
	for k := range changed {
		p := n.peers.Get(k)
		if p == nil {
			continue
		}
		w, ips := plan.Routes[k], plan.Pieces[k]
		if slices.Equal(w, p.Routes) && slices.Equal(ips, p.RouteIPs) {
			continue
		}
		p.Routes, p.RouteIPs = w, ips
		if p.Active {
			if err := n.activateLocked(p); err != nil {
				n.log.Warn("cannot update peer's routes", "peer", p.Key.ShortString(), "err", err)
			}
		}
	}
	n.routesChangedLocked()
}

// logConflictsLocked logs each conflict of plan that old did not have,
// naming the peers involved.
func (n *Node) logConflictsLocked(old, plan *routeplan.Plan) {
	for k, vs := range plan.Verdicts {
		for pr, v := range vs {
			if v.State != routeplan.StateConflict {
				continue
			}
			if o, ok := old.Verdicts[k][pr]; ok && o.State == v.State && o.Reason == v.Reason && slices.Equal(o.With, v.With) {
				continue
			}
			with := make([]string, len(v.With))
			for i, o := range v.With {
				with[i] = o.String()
			}
			switch v.Reason {
			case routeplan.ReasonOwnAddress:
				msg := "a peer offers this node's own IPv4 address; not installed"
				if offers.NewOfferer(k, n.cfg.TUN.IPv4Prefix.Prefix).OwnIPv4(pr) {
					msg = "a peer's key derives this node's own IPv4 address (two keys collide); not installed: give one of the two nodes another tun.ipv4_prefix or an explicit tun.ipv4"
				}
				n.log.Warn(msg, "prefix", pr, "peer", k.String())
			case routeplan.ReasonHostNetwork:
				n.log.Info("an accepted route lies within one of the host's own networks; not installed while the host is on it", "prefix", pr, "peer", k.String())
			case routeplan.ReasonCollision:
				n.log.Warn("several peers offer one derived IPv4 address (their keys collide, or one claims the other's); installed for none of them", "prefix", pr, "peer", k.String(), "others", with)
			default:
				n.log.Warn("route offered by two peers; keeping the first", "prefix", pr, "peer", k.String(), "kept", with)
			}
		}
	}
}

// routedOwnersLocked returns the plan's routes of active peers, as they
// are in AllowedIPs, longest prefixes first, for the wrapper and the
// filter.
func (n *Node) routedOwnersLocked() []policy.RouteOwner {
	return n.plan.Load().Owners(func(k identity.PublicKey) (netip.Addr, bool) {
		p := n.peers.Get(k)
		if p == nil || !p.Active {
			return netip.Addr{}, false
		}
		return p.Addr, true
	})
}

// syncOSRoutesLocked routes every installed prefix into the kernel TUN and
// removes those no longer installed.
func (n *Node) syncOSRoutesLocked() {
	if n.osRoutes == nil {
		return
	}
	for pr := range n.rt.osRouted {
		if _, ok := n.rt.plan.Installed[pr]; !ok {
			if err := n.osRoutes.DelRoute(pr); err != nil {
				n.log.Warn("cannot remove route", "prefix", pr, "err", err)
			}
			delete(n.rt.osRouted, pr)
		}
	}
	for pr := range n.rt.plan.Installed {
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
func (n *Node) routeOwnerLocked(dst netip.Addr) *peers.Peer {
	if k, ok := n.plan.Load().OwnerOf(dst); ok {
		return n.peers.Get(k)
	}
	return nil
}

// onHostChange is routes.Interface.WatchHost's report that the host's
// networks or addresses changed (a laptop joined another LAN): what is
// installed, and what the filter takes as this host's, follow.
func (n *Node) onHostChange(h routes.Host, err error) {
	if err != nil {
		n.log.Warn("cannot follow the host's networks; accepted routes keep to the last ones seen", "err", err)
		return
	}
	n.lockAll()
	defer n.unlockAll()
	if n.closing.Load() {
		return
	}
	n.log.Info("the host's networks changed", "networks", prefixStrings(h.Networks))
	n.host = h
	n.filter.SetLocal(n.localPolicyLocked())
	n.recomputeRoutesLocked()
}
