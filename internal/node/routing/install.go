package routing

import (
	"net/netip"
	"slices"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/offers"
	"github.com/tomoe-net/tomoe/internal/routeplan"
	"github.com/tomoe-net/tomoe/internal/routes"
)

// Applying route plans: AllowedIPs, the OS routes, the wrapper and the
// filter follow the plan (package routeplan decides).

// Recompute plans the routes anew and applies the plan (RecomputeLocked),
// taking the locks: after a policy change ("*" accept rules follow it).
func (r *Router) Recompute() {
	r.Lock()
	defer r.Unlock()
	r.RecomputeLocked()
}

// RecomputeLocked plans the routes anew (routeplan.Compute, from the
// offers, the accept rules, the policy, this node's own offers and the
// host's networks) and applies the plan: AllowedIPs of the peers whose
// routes changed, the OS routes, the wrapper and the filter.
func (r *Router) RecomputeLocked() {
	m := r.node.Matcher()
	in := routeplan.Input{
		Offers:    r.learned.Offers(),
		Admitted:  m.AllowsAny,
		Rules:     r.rules,
		IPv4Space: r.space,
		Host:      r.host.Networks,
		Installed: r.installed.Installed,
	}
	// Only offers of peers this node knows count.
	for k := range in.Offers {
		if r.peers.Get(k) == nil {
			delete(in.Offers, k)
		}
	}
	if r.ipv4.IsValid() {
		in.Self = netip.PrefixFrom(r.ipv4, 32)
	}
	for _, o := range r.offers {
		if o.Prefix != in.Self {
			in.Own = append(in.Own, o.Prefix)
		}
	}
	plan := routeplan.Compute(in)
	old := r.installed
	r.logConflicts(old, plan)
	for pr, k := range old.Installed {
		if plan.Installed[pr] != k {
			r.log.Info("route removed", "prefix", pr, "peer", k.ShortString())
		}
	}
	for pr, k := range plan.Installed {
		if cur, ok := old.Installed[pr]; !ok || cur != k {
			r.log.Info("route installed", "prefix", pr, "peer", k.ShortString())
		}
	}
	r.installed = plan
	r.plan.Store(plan)
	r.syncOSRoutesLocked()
	// Only the peers whose routes the plan changes are reconfigured.
	changed := map[identity.PublicKey]bool{}
	for k := range old.Routes {
		changed[k] = true
	}
	for k := range plan.Routes {
		changed[k] = true
	}
	for k := range changed {
		p := r.peers.Get(k)
		if p == nil {
			continue
		}
		w, ips := plan.Routes[k], plan.Pieces[k]
		if slices.Equal(w, p.Routes) && slices.Equal(ips, p.RouteIPs) {
			continue
		}
		p.Routes, p.RouteIPs = w, ips
		if p.Active {
			if err := r.node.Reconfigure(p); err != nil {
				r.log.Warn("cannot update peer's routes", "peer", p.Key.ShortString(), "err", err)
			}
		}
	}
	r.node.RoutesChanged()
}

// logConflicts logs each conflict of plan that old did not have, naming
// the peers involved.
func (r *Router) logConflicts(old, plan *routeplan.Plan) {
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
				if offers.NewOfferer(k, r.space).OwnIPv4(pr) {
					msg = "a peer's key derives this node's own IPv4 address (two keys collide); not installed: give one of the two nodes another tun.ipv4_prefix or an explicit tun.ipv4"
				}
				r.log.Warn(msg, "prefix", pr, "peer", k.String())
			case routeplan.ReasonHostNetwork:
				r.log.Info("an accepted route lies within one of the host's own networks; not installed while the host is on it", "prefix", pr, "peer", k.String())
			case routeplan.ReasonCollision:
				r.log.Warn("several peers offer one derived IPv4 address (their keys collide, or one claims the other's); installed for none of them", "prefix", pr, "peer", k.String(), "others", with)
			default:
				r.log.Warn("route offered by two peers; keeping the first", "prefix", pr, "peer", k.String(), "kept", with)
			}
		}
	}
}

// syncOSRoutesLocked routes every installed prefix into the kernel TUN and
// removes those no longer installed.
func (r *Router) syncOSRoutesLocked() {
	if r.os == nil {
		return
	}
	for pr := range r.osRouted {
		if _, ok := r.installed.Installed[pr]; !ok {
			if err := r.os.DelRoute(pr); err != nil {
				r.log.Warn("cannot remove route", "prefix", pr, "err", err)
			}
			delete(r.osRouted, pr)
		}
	}
	for pr := range r.installed.Installed {
		if r.osRouted[pr] {
			continue
		}
		if err := r.os.AddRoute(pr); err != nil {
			r.log.Warn("cannot route accepted prefix", "prefix", pr, "err", err)
			continue
		}
		r.osRouted[pr] = true
	}
}

// OnHostChange is routes.Interface.WatchHost's report that the host's
// networks or addresses changed (a laptop joined another LAN): what is
// installed, and what the filter takes as this host's, follow.
func (r *Router) OnHostChange(h routes.Host, err error) {
	if err != nil {
		r.log.Warn("cannot follow the host's networks; accepted routes keep to the last ones seen", "err", err)
		return
	}
	r.Lock()
	defer r.Unlock()
	if r.node.Closing() {
		return
	}
	r.log.Info("the host's networks changed", "networks", prefixStrings(h.Networks))
	r.host = h
	r.node.SetLocal(r.localPolicyLocked())
	r.RecomputeLocked()
}
