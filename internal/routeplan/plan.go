// Package routeplan decides which tunnelled routes a node installs, and
// for which peer: from what its peers offer (the offer table, table.go),
// its accept rules, its policy, its own offers and the host's networks, it
// computes a Plan: a verdict for every offered prefix, the owner of every
// installed prefix, each peer's routes and what they become in its
// AllowedIPs, and the owners the filter and the TUN wrapper route by.
//
// It is pure: no sockets, locks or clocks (time comes in as an argument).
// The node applies plans; a plan is the one source of route ownership, so
// the device, the OS routes, the filter and the wrapper cannot disagree.
package routeplan

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/offers"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// Route states and reasons, as `tomoe routes` shows them (a contract: add
// values, never rename them).
const (
	StateInstalled   = "installed"
	StateNotAccepted = "not_accepted"
	StateConflict    = "conflict"

	// not_accepted: a "*" rule covers it, but it is not the offering
	// key's derived IPv4 address (an explicit address needs a rule naming
	// the node).
	ReasonNotOwnAddress = "not_own_address"
	// not_accepted: only a "*" rule covers it, and the policy does not
	// let the peer in.
	ReasonPolicy = "policy"
	// not_accepted: it overlaps a route this node offers itself.
	ReasonOwnRoute = "own_route"
	// conflict: it is this node's own IPv4 address.
	ReasonOwnAddress = "own_address"
	// conflict: several peers offer it, and it is the derived address of
	// at least one of them; none has it.
	ReasonCollision = "address_collision"
	// conflict: another peer has it (it offered it first, or sorts first).
	ReasonOtherPeer = "other_peer"
	// conflict: it lies within one of the host's own networks.
	ReasonHostNetwork = "host_network"
)

// Verdict is what became of one offered prefix.
type Verdict struct {
	State, Reason string
	With          []identity.PublicKey // the other peers of a conflict
}

// Input is everything a plan depends on.
type Input struct {
	// Offers are the prefixes each known peer offers.
	Offers map[identity.PublicKey][]netip.Prefix
	// Admitted reports whether the policy lets the node at addr in: a "*"
	// accept rule accepts only from such peers.
	Admitted func(addr netip.Addr) bool
	// Rules are this node's accept rules.
	Rules []offers.Rule
	// Own are the prefixes this node offers itself, its own IPv4 /32
	// excluded.
	Own []netip.Prefix
	// Self is this node's IPv4 address as a /32 (invalid if none).
	Self netip.Prefix
	// IPv4Space is tun.ipv4_prefix, where addresses derive from keys.
	IPv4Space netip.Prefix
	// Host are the host's own networks (kernel mode), which no route may
	// take.
	Host []netip.Prefix
	// Installed is the previous plan's owners: a prefix two peers may have
	// stays with the one that has it.
	Installed map[netip.Prefix]identity.PublicKey
}

// Plan is the outcome.
type Plan struct {
	// Verdicts has a verdict for every offered prefix.
	Verdicts map[identity.PublicKey]map[netip.Prefix]Verdict
	// Installed maps each installed prefix to the peer it leads to.
	Installed map[netip.Prefix]identity.PublicKey
	// Routes are each peer's installed prefixes, sorted; Pieces what they
	// become in its AllowedIPs (offers.Pieces).
	Routes map[identity.PublicKey][]netip.Prefix
	Pieces map[identity.PublicKey][]netip.Prefix
}

// Compute plans the routes.
//
// A derived IPv4 address offered by several peers, or this node's own
// address offered by a peer, is installed for nobody: two keys that derive
// one address collide, and which offer arrived first must not decide who
// gets the other's traffic. Any other prefix accepted from two peers stays
// with the peer that has it, and a new one goes to the first peer by key
// order (two gateways for one LAN: the second takes over when the first
// withdraws).
func Compute(in Input) *Plan {
	plan := &Plan{
		Verdicts:  map[identity.PublicKey]map[netip.Prefix]Verdict{},
		Installed: map[netip.Prefix]identity.PublicKey{},
		Routes:    map[identity.PublicKey][]netip.Prefix{},
		Pieces:    map[identity.PublicKey][]netip.Prefix{},
	}
	judge := func(k identity.PublicKey, pr netip.Prefix, v Verdict) {
		if plan.Verdicts[k] == nil {
			plan.Verdicts[k] = map[netip.Prefix]Verdict{}
		}
		plan.Verdicts[k][pr] = v
	}
	keys := make([]identity.PublicKey, 0, len(in.Offers))
	for k := range in.Offers {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b identity.PublicKey) int { return cmp.Compare(string(a[:]), string(b[:])) })
	var named []offers.Rule // rules that name a node: for peers the policy does not let in
	for _, r := range in.Rules {
		if !r.From.Any {
			named = append(named, r)
		}
	}
	accepted := map[identity.PublicKey][]netip.Prefix{}
	claims := map[netip.Prefix][]identity.PublicKey{} // who may have each accepted prefix
	offerers := map[identity.PublicKey]offers.Offerer{}
	for _, k := range keys {
		from := offers.NewOfferer(k, in.IPv4Space)
		offerers[k] = from
		// A "*" rule accepts only from peers the policy lets in, or any
		// peer this node once talked to could offer routes into its LAN.
		rules := in.Rules
		if in.Admitted == nil || !in.Admitted(k.Address()) {
			rules = named
		}
		for _, pr := range in.Offers[k] {
			switch {
			case pr == in.Self:
				judge(k, pr, Verdict{State: StateConflict, Reason: ReasonOwnAddress})
			case len(offers.Accepted(rules, from, []netip.Prefix{pr})) == 0:
				v := Verdict{State: StateNotAccepted}
				if offers.NotOwnAddress(in.Rules, from, pr) {
					v.Reason = ReasonNotOwnAddress
				} else if len(offers.Accepted(in.Rules, from, []netip.Prefix{pr})) > 0 {
					v.Reason = ReasonPolicy
				}
				judge(k, pr, v)
			case ownsRoute(in.Own, pr):
				judge(k, pr, Verdict{State: StateNotAccepted, Reason: ReasonOwnRoute})
			case inHostNetwork(in.Host, pr):
				judge(k, pr, Verdict{State: StateConflict, Reason: ReasonHostNetwork})
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
			judge(k, pr, Verdict{State: StateConflict, Reason: ReasonCollision, With: others})
			accepted[k] = slices.DeleteFunc(accepted[k], func(a netip.Prefix) bool { return a == pr })
		}
	}
	// Keep current owners first.
	for _, k := range keys {
		for _, pr := range accepted[k] {
			if cur, ok := in.Installed[pr]; ok && cur == k {
				plan.Installed[pr] = k
			}
		}
	}
	for _, k := range keys {
		for _, pr := range accepted[k] {
			if cur, taken := plan.Installed[pr]; taken && cur != k {
				judge(k, pr, Verdict{State: StateConflict, Reason: ReasonOtherPeer, With: []identity.PublicKey{cur}})
				continue
			}
			plan.Installed[pr] = k
			judge(k, pr, Verdict{State: StateInstalled})
		}
	}
	for pr, k := range plan.Installed {
		plan.Routes[k] = append(plan.Routes[k], pr)
	}
	for k, l := range plan.Routes {
		slices.SortFunc(l, comparePrefix)
		plan.Pieces[k] = plan.pieces(l, in.Host)
	}
	return plan
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// pieces is what the installed routes rs become in AllowedIPs: default
// routes leave out the overlay's spaces, every route the host's own
// networks, and a route so split every other installed route within it
// (offers.Pieces).
func (p *Plan) pieces(rs, host []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, r := range rs {
		var others []netip.Prefix
		for o := range p.Installed {
			if o != r && o.Bits() > r.Bits() && o.Addr().BitLen() == r.Addr().BitLen() && r.Contains(o.Addr()) {
				others = append(others, o)
			}
		}
		slices.SortFunc(others, comparePrefix)
		out = append(out, offers.Pieces(r, others, host)...)
	}
	return out
}

// Owners returns, for the filter and the TUN wrapper, the pieces of the
// installed routes of the peers for which addr reports a node address
// (active peers), longest prefixes first.
func (p *Plan) Owners(addr func(identity.PublicKey) (netip.Addr, bool)) []policy.RouteOwner {
	var out []policy.RouteOwner
	for k, pieces := range p.Pieces {
		a, ok := addr(k)
		if !ok {
			continue
		}
		for _, pc := range pieces {
			out = append(out, policy.RouteOwner{Prefix: pc, Owner: a})
		}
	}
	slices.SortStableFunc(out, func(a, b policy.RouteOwner) int {
		if a.Prefix.Bits() != b.Prefix.Bits() {
			return b.Prefix.Bits() - a.Prefix.Bits()
		}
		return comparePrefix(a.Prefix, b.Prefix)
	})
	return out
}

// OwnerOf returns the peer whose installed route (as it is in AllowedIPs)
// holds dst, the longest one winning.
func (p *Plan) OwnerOf(dst netip.Addr) (identity.PublicKey, bool) {
	var best identity.PublicKey
	bits := -1
	for k, pieces := range p.Pieces {
		for _, pc := range pieces {
			if pc.Bits() > bits && pc.Contains(dst) {
				best, bits = k, pc.Bits()
			}
		}
	}
	return best, bits >= 0
}

// ownsRoute reports whether accepting pr would capture a LAN this node
// offers itself: pr, not a default route, overlaps one of its own offers
// other than a default route (and its own /32, not in own). A default
// route cannot capture it: the host's own specific routes win over it.
func ownsRoute(own []netip.Prefix, pr netip.Prefix) bool {
	if pr.Bits() == 0 {
		return false
	}
	return slices.ContainsFunc(own, func(o netip.Prefix) bool { return o.Bits() > 0 && o.Overlaps(pr) })
}

// inHostNetwork reports whether pr lies within one of the host's own
// networks: such a route would take the host's LAN, its router or its DNS
// into the tunnel. A default route is never within one.
func inHostNetwork(host []netip.Prefix, pr netip.Prefix) bool {
	return slices.ContainsFunc(host, func(h netip.Prefix) bool {
		return h.Addr().BitLen() == pr.Addr().BitLen() && h.Bits() <= pr.Bits() && h.Contains(pr.Addr())
	})
}
