package routing

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

// ErrClosing is returned for a change asked of a node that is shutting
// down.
var ErrClosing = errors.New("node is shutting down")

// RegisterAPI implements adminapi.Area: GET /v1/routes and POST
// /v1/routes/change.
func (r *Router) RegisterAPI(m *adminapi.Mux) {
	m.Get("/v1/routes", func(ctx context.Context) (any, error) { return r.Routes(ctx) })
	adminapi.Post(m, "/v1/routes/change", func(ctx context.Context, req adminapi.RouteChange) (any, error) { return r.ChangeRoutes(ctx, req) })
}

// Routes is GET /v1/routes.
func (r *Router) Routes(ctx context.Context) (adminapi.Routes, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.statusLocked(), nil
}

func (r *Router) statusLocked() adminapi.Routes {
	out := adminapi.Routes{Offered: []adminapi.OfferedRoute{}, Accept: []adminapi.AcceptRule{}, Learned: []adminapi.LearnedRoute{}}
	for _, o := range r.offers {
		or := adminapi.OfferedRoute{Prefix: o.Prefix.String(), Masquerade: o.Masquerade, AcceptedBy: []string{}, Self: r.isSelf(o.Prefix)}
		for _, k := range r.learned.AcceptedBy(o.Prefix) {
			or.AcceptedBy = append(or.AcceptedBy, k.Address().String())
		}
		slices.Sort(or.AcceptedBy)
		out.Offered = append(out.Offered, or)
	}
	for _, rule := range r.rules {
		out.Accept = append(out.Accept, adminapi.AcceptRule{From: rule.From.String(), Prefix: rule.Prefix.String()})
	}
	for k, routes := range r.learned.Offers() {
		for _, pr := range routes {
			v, ok := r.installed.Verdicts[k][pr]
			if !ok {
				v.State = routeplan.StateNotAccepted
			}
			lr := adminapi.LearnedRoute{Prefix: pr.String(), Peer: k.String(), Address: k.Address().String(), State: v.State, Reason: v.Reason}
			for _, o := range v.With {
				lr.ConflictsWith = append(lr.ConflictsWith, o.String())
			}
			out.Learned = append(out.Learned, lr)
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
func (r *Router) ChangeRoutes(ctx context.Context, req adminapi.RouteChange) (adminapi.Routes, error) {
	p, err := config.ParseRoutePrefix(req.Prefix)
	if err != nil {
		return adminapi.Routes{}, adminapi.BadRequest(fmt.Errorf("prefix %v", err))
	}
	var ask netip.Addr
	r.Lock()
	defer r.Unlock()
	defer func() {
		// Ask a newly named node for its offer: Run does, soon.
		if ask.IsValid() {
			select {
			case r.ask <- struct{}{}:
			default:
			}
		}
	}()
	if r.node.Closing() {
		return adminapi.Routes{}, ErrClosing
	}
	switch req.Op {
	case adminapi.RouteOffer:
		if r.user {
			return adminapi.Routes{}, adminapi.BadRequest(errors.New("offering a route needs tun.mode = \"kernel\": a userspace node cannot forward into its LAN"))
		}
		if slices.ContainsFunc(r.offers, func(o config.Offer) bool { return o.Prefix == p }) {
			return adminapi.Routes{}, adminapi.Conflict(fmt.Errorf("%s is offered already (withdraw it first to change masquerade)", p))
		}
		if err := r.node.Forwarding(); err != nil {
			return adminapi.Routes{}, adminapi.Conflict(err)
		}
		if len(r.offers) >= offers.MaxRoutes {
			return adminapi.Routes{}, adminapi.Conflict(fmt.Errorf("this node offers %d routes, the most one offer carries", offers.MaxRoutes))
		}
		r.offers = append(r.offers, config.Offer{Prefix: p, Masquerade: req.Masquerade})
		if err := r.offersChangedLocked(); err != nil {
			r.offers = r.offers[:len(r.offers)-1]
			r.offersChangedLocked()
			return adminapi.Routes{}, err
		}
		if err := r.changes.RecordOffer(p, req.Masquerade, false); err != nil {
			return adminapi.Routes{}, fmt.Errorf("offered, but not saved: %w", err)
		}
	case adminapi.RouteWithdraw:
		if r.isSelf(p) {
			return adminapi.Routes{}, adminapi.BadRequest(fmt.Errorf("%s is tun.ipv4, offered while it is configured", p))
		}
		i := slices.IndexFunc(r.offers, func(o config.Offer) bool { return o.Prefix == p })
		if i < 0 {
			return adminapi.Routes{}, adminapi.NotFound(fmt.Errorf("%s is not offered", p))
		}
		r.offers = slices.Delete(r.offers, i, i+1)
		if err := r.offersChangedLocked(); err != nil {
			return adminapi.Routes{}, err
		}
		if err := r.changes.RecordOffer(p, false, true); err != nil {
			return adminapi.Routes{}, fmt.Errorf("withdrawn, but not saved: %w", err)
		}
	case adminapi.RouteAccept, adminapi.RouteUnaccept:
		id, err := policy.ParseIdentity(req.From)
		if err != nil {
			return adminapi.Routes{}, adminapi.BadRequest(fmt.Errorf("from: %v", err))
		}
		i := slices.IndexFunc(r.rules, func(r offers.Rule) bool { return r.From.Same(id) && r.Prefix == p })
		if req.Op == adminapi.RouteAccept {
			if i >= 0 {
				return adminapi.Routes{}, adminapi.Conflict(fmt.Errorf("routes from %s within %s are accepted already", id, p))
			}
			r.rules = append(r.rules, offers.Rule{From: id, Prefix: p})
			if !id.Any {
				ask = id.Addr
			}
			// Ask the peers that are up for their offer now.
			for q := range r.peers.All() {
				if q.Active && id.Covers(q.Addr) && !r.learned.Has(q.Key) {
					r.sendControlLocked(q, offers.Message{Type: offers.TypeRequest, Boot: r.boot})
				}
			}
		} else {
			if i < 0 {
				return adminapi.Routes{}, adminapi.NotFound(fmt.Errorf("no accept rule for %s within %s", id, p))
			}
			r.rules = slices.Delete(r.rules, i, i+1)
		}
		r.RecomputeLocked()
		if err := r.changes.RecordAccept(id, p, req.Op == adminapi.RouteUnaccept); err != nil {
			return adminapi.Routes{}, fmt.Errorf("changed, but not saved: %w", err)
		}
	default:
		return adminapi.Routes{}, adminapi.BadRequest(fmt.Errorf("op %q: use offer, withdraw, accept or unaccept", req.Op))
	}
	r.log.Info("routes changed", "op", req.Op, "prefix", p, "from", req.From, "masquerade", req.Masquerade)
	return r.statusLocked(), nil
}

// offersChangedLocked applies a change of this node's offers: the
// filter's view of what it forwards, the forwarding setup of the host,
// and the peers, who get the new offer at once.
func (r *Router) offersChangedLocked() error {
	r.seq++
	r.node.SetLocal(r.localPolicyLocked())
	if err := r.node.ApplyForwarding(slices.Clone(r.offers)); err != nil {
		return err
	}
	r.offerToAllLocked()
	return nil
}
