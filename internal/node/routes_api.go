package node

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/offers"
	"github.com/tomoe-net/tomoe/internal/policy"
	"github.com/tomoe-net/tomoe/internal/routeplan"
)

// Routes is GET /v1/routes.
func (a RoutesArea) Routes(ctx context.Context) (adminapi.Routes, error) {
	n := a.Node
	n.rtMu.Lock()
	defer n.rtMu.Unlock()
	return n.routesStatusLocked(), nil
}

func (n *Node) routesStatusLocked() adminapi.Routes {
	out := adminapi.Routes{Offered: []adminapi.OfferedRoute{}, Accept: []adminapi.AcceptRule{}, Learned: []adminapi.LearnedRoute{}}
	v4 := n.ipv4
	for _, o := range n.rt.offers {
		r := adminapi.OfferedRoute{Prefix: o.Prefix.String(), Masquerade: o.Masquerade, AcceptedBy: []string{},
			Self: v4.IsValid() && o.Prefix == netip.PrefixFrom(v4, 32)}
		for _, k := range n.rt.learned.AcceptedBy(o.Prefix) {
			r.AcceptedBy = append(r.AcceptedBy, k.Address().String())
		}
		slices.Sort(r.AcceptedBy)
		out.Offered = append(out.Offered, r)
	}
	for _, r := range n.rt.rules {
		out.Accept = append(out.Accept, adminapi.AcceptRule{From: r.From.String(), Prefix: r.Prefix.String()})
	}
	for k, routes := range n.rt.learned.Offers() {
		for _, pr := range routes {
			v, ok := n.rt.plan.Verdicts[k][pr]
			if !ok {
				v.State = routeplan.StateNotAccepted
			}
			r := adminapi.LearnedRoute{Prefix: pr.String(), Peer: k.String(), Address: k.Address().String(), State: v.State, Reason: v.Reason}
			for _, o := range v.With {
				r.ConflictsWith = append(r.ConflictsWith, o.String())
			}
			out.Learned = append(out.Learned, r)
		}
	}
	slices.SortFunc(out.Learned, func(a, b adminapi.LearnedRoute) int {
		if a.Address != b.Address {
			if a.Address < b.Address {
				return -1
			}
			return 1
		}
		if a.Prefix < b.Prefix {
			return -1
		}
		if a.Prefix > b.Prefix {
			return 1
		}
		return 0
	})
	return out
}

// ChangeRoutes is POST /v1/routes/change. Changes are live and last until
// the node restarts.
func (a RoutesArea) ChangeRoutes(ctx context.Context, req adminapi.RouteChange) (adminapi.Routes, error) {
	n := a.Node
	p, err := config.ParseRoutePrefix(req.Prefix)
	if err != nil {
		return adminapi.Routes{}, adminapi.BadRequest(fmt.Errorf("prefix %v", err))
	}
	var ask netip.Addr
	n.lockAll()
	defer n.unlockAll()
	defer func() {
		// Ask a newly named node for its offer (n.mu held: Close, which
		// sets closing under it, waits for the goroutine).
		if ask.IsValid() && !n.closing.Load() {
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				n.requestMissing()
			}()
		}
	}()
	if n.closing.Load() {
		return adminapi.Routes{}, errClosing
	}
	switch req.Op {
	case adminapi.RouteOffer:
		if n.cfg.TUN.Mode != config.ModeKernel {
			return adminapi.Routes{}, adminapi.BadRequest(errors.New("offering a route needs tun.mode = \"kernel\": a userspace node cannot forward into its LAN"))
		}
		if slices.ContainsFunc(n.rt.offers, func(o config.Offer) bool { return o.Prefix == p }) {
			return adminapi.Routes{}, conflict(fmt.Errorf("%s is offered already (withdraw it first to change masquerade)", p))
		}
		if n.firewall == nil {
			return adminapi.Routes{}, conflict(errors.New("offering a route needs the firewall (nftables), which this node could not install; see its log"))
		}
		if len(n.rt.offers) >= offers.MaxRoutes {
			return adminapi.Routes{}, conflict(fmt.Errorf("this node offers %d routes, the most one offer carries", offers.MaxRoutes))
		}
		n.rt.offers = append(n.rt.offers, config.Offer{Prefix: p, Masquerade: req.Masquerade})
		if err := n.offersChangedLocked(); err != nil {
			n.rt.offers = n.rt.offers[:len(n.rt.offers)-1]
			n.offersChangedLocked()
			return adminapi.Routes{}, err
		}
		if err := n.recordOfferLocked(p, req.Masquerade, false); err != nil {
			return adminapi.Routes{}, fmt.Errorf("offered, but not saved: %w", err)
		}
	case adminapi.RouteWithdraw:
		if v4 := n.ipv4; v4.IsValid() && p == netip.PrefixFrom(v4, 32) {
			return adminapi.Routes{}, adminapi.BadRequest(fmt.Errorf("%s is tun.ipv4, offered while it is configured", p))
		}
		i := slices.IndexFunc(n.rt.offers, func(o config.Offer) bool { return o.Prefix == p })
		if i < 0 {
			return adminapi.Routes{}, adminapi.NotFound(fmt.Errorf("%s is not offered", p))
		}
		n.rt.offers = slices.Delete(n.rt.offers, i, i+1)
		if err := n.offersChangedLocked(); err != nil {
			return adminapi.Routes{}, err
		}
		if err := n.recordOfferLocked(p, false, true); err != nil {
			return adminapi.Routes{}, fmt.Errorf("withdrawn, but not saved: %w", err)
		}
	case adminapi.RouteAccept, adminapi.RouteUnaccept:
		id, err := policy.ParseIdentity(req.From)
		if err != nil {
			return adminapi.Routes{}, adminapi.BadRequest(fmt.Errorf("from: %v", err))
		}
		i := slices.IndexFunc(n.rt.rules, func(r offers.Rule) bool { return r.From.Same(id) && r.Prefix == p })
		if req.Op == adminapi.RouteAccept {
			if i >= 0 {
				return adminapi.Routes{}, conflict(fmt.Errorf("routes from %s within %s are accepted already", id, p))
			}
			n.rt.rules = append(n.rt.rules, offers.Rule{From: id, Prefix: p})
			if !id.Any {
				ask = id.Addr
			}
			// Ask the peers that are up for their offer now.
			for q := range n.peers.All() {
				if q.Active && id.Covers(q.Addr) && !n.rt.learned.Has(q.Key) {
					n.sendControlLocked(q, offers.Message{Type: offers.TypeRequest, Boot: n.rt.boot})
				}
			}
		} else {
			if i < 0 {
				return adminapi.Routes{}, adminapi.NotFound(fmt.Errorf("no accept rule for %s within %s", id, p))
			}
			n.rt.rules = slices.Delete(n.rt.rules, i, i+1)
		}
		n.recomputeRoutesLocked()
		if err := n.recordAcceptLocked(id, p, req.Op == adminapi.RouteUnaccept); err != nil {
			return adminapi.Routes{}, fmt.Errorf("changed, but not saved: %w", err)
		}
	default:
		return adminapi.Routes{}, adminapi.BadRequest(fmt.Errorf("op %q: use offer, withdraw, accept or unaccept", req.Op))
	}
	n.log.Info("routes changed", "op", req.Op, "prefix", p, "from", req.From, "masquerade", req.Masquerade)
	return n.routesStatusLocked(), nil
}

// offersChangedLocked applies a change of this node's offers: the
// filter's view of what it forwards, the forwarding setup of the host,
// and the peers, who get the new offer at once.
func (n *Node) offersChangedLocked() error {
	n.rt.seq++
	n.filter.SetLocal(n.localPolicyLocked())
	if err := n.applyForwardingLocked(); err != nil {
		return err
	}
	for p := range n.peers.All() {
		if p.Active && (p.Offered || len(n.offerForLocked(p)) > 0) {
			n.sendOfferLocked(p)
		}
	}
	return nil
}

func conflict(err error) error { return &adminapi.RequestError{Code: 409, Err: err} }
