package routing

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/offers"
)

// A live reload of the config file replaces the file's offers and accept
// rules; the admin API's persisted changes apply over the new ones as
// they did over the old (package changes), and tun.ipv4 stays offered.

// planLocked computes the offers and accept rules a reload would install,
// and refuses what New would refuse. r.mu is held.
func (r *Router) planLocked(cfgOffers []config.Offer, accept []offers.Rule) ([]config.Offer, []offers.Rule, error) {
	list, err := r.changes.Offers(slices.Clone(cfgOffers))
	if err != nil {
		return nil, nil, err
	}
	if v4 := r.ipv4; v4.IsValid() {
		self := netip.PrefixFrom(v4, 32)
		if slices.ContainsFunc(list, func(o config.Offer) bool { return o.Prefix == self }) {
			return nil, nil, fmt.Errorf("routes.offer: %s is tun.ipv4, which is offered by itself: remove the entry", self)
		}
		list = append(list, config.Offer{Prefix: self})
	}
	if len(list) > offers.MaxRoutes {
		return nil, nil, fmt.Errorf("routes.offer: %d routes with tun.ipv4 and the API's changes (%s), more than one offer carries (%d)", len(list), r.changes.Path(), offers.MaxRoutes)
	}
	rules, err := r.changes.Accepts(slices.Clone(accept))
	if err != nil {
		return nil, nil, err
	}
	return list, rules, nil
}

// CheckReload reports whether Reload would accept these offers and accept
// rules (the config file's), changing nothing.
func (r *Router) CheckReload(cfgOffers []config.Offer, accept []offers.Rule) error {
	r.mu.Lock()
	list, _, err := r.planLocked(cfgOffers, accept)
	forwards := slices.ContainsFunc(list, func(o config.Offer) bool { return !r.isSelf(o.Prefix) })
	had := slices.ContainsFunc(r.offers, func(o config.Offer) bool { return !r.isSelf(o.Prefix) })
	r.mu.Unlock()
	if err != nil {
		return err
	}
	if forwards && !had {
		if r.user {
			return errors.New("routes.offer: offering a route needs tun.mode = \"kernel\"")
		}
		if err := r.node.Forwarding(); err != nil {
			return fmt.Errorf("routes.offer: %w", err)
		}
	}
	return nil
}

// Reload installs the config file's new offers and accept rules: peers
// get the new offer at once, the plan is computed anew (routes no longer
// accepted leave the peers' AllowedIPs and the OS routes), and the peers
// a new accept rule names are asked for their offer.
func (r *Router) Reload(cfgOffers []config.Offer, accept []offers.Rule) error {
	r.Lock()
	defer r.Unlock()
	if r.node.Closing() {
		return ErrClosing
	}
	list, rules, err := r.planLocked(cfgOffers, accept)
	if err != nil {
		return err
	}
	if !slices.Equal(list, r.offers) {
		old := r.offers
		r.offers = list
		if err := r.offersChangedLocked(); err != nil {
			r.offers = old
			r.offersChangedLocked()
			return err
		}
	}
	if !slices.EqualFunc(rules, r.rules, func(a, b offers.Rule) bool { return a.Prefix == b.Prefix && a.From.Same(b.From) }) {
		r.rules = rules
		for q := range r.peers.All() {
			if !q.Active || r.learned.Has(q.Key) {
				continue
			}
			if slices.ContainsFunc(rules, func(rule offers.Rule) bool { return rule.From.Covers(q.Addr) }) {
				r.sendControlLocked(q, offers.Message{Type: offers.TypeRequest, Boot: r.boot})
			}
		}
		// And the named peers that are not up yet: Run does, soon.
		select {
		case r.ask <- struct{}{}:
		default:
		}
	}
	r.RecomputeLocked()
	return nil
}
