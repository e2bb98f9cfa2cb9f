package routing

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node/peers"
	"github.com/tomoe-net/tomoe/internal/offers"
	"github.com/tomoe-net/tomoe/internal/packet"
	"github.com/tomoe-net/tomoe/internal/routeplan"
)

// The offer protocol's timers.
const (
	offerRefresh = 2 * time.Minute
	offerExpiry  = 3*offerRefresh + 30*time.Second
	requestRetry = 15 * time.Second
)

// OnControl is the wrapper's hand-off of a control datagram from src. It
// runs on WireGuard's receive path: decode and queue, never block.
func (r *Router) OnControl(src netip.Addr, payload []byte) {
	m, err := offers.Unmarshal(payload)
	if err != nil {
		r.controlBad.Add(1)
		return
	}
	select {
	case r.control <- controlMsg{src: src, msg: m}:
	default:
	}
}

// Run handles control messages and the timers of the offer protocol
// until Config.Done is closed.
func (r *Router) Run() {
	retry := r.clock.NewTicker(requestRetry)
	defer retry.Stop()
	refresh := r.clock.NewTicker(offerRefresh)
	defer refresh.Stop()
	r.requestMissing()
	for {
		select {
		case <-r.done:
			return
		case c := <-r.control:
			r.HandleControl(c.src, c.msg)
		case <-retry.C():
			r.requestMissing()
		case <-r.ask:
			r.requestMissing()
		case now := <-refresh.C():
			r.offerToAll()
			r.Lock()
			r.expireOffersLocked(now)
			r.Unlock()
		case <-r.peers.Forgotten():
			r.dropForgottenOffers()
		}
	}
}

// HandleControl acts on a control message from src (Run calls it for each
// datagram OnControl queued).
func (r *Router) HandleControl(src netip.Addr, msg offers.Message) {
	r.Lock()
	defer r.Unlock()
	p := r.peers.ByAddr(src)
	if p == nil || r.node.Closing() {
		return
	}
	switch msg.Type {
	case offers.TypeRequest:
		r.sendOfferLocked(p)
		if offers.Wants(r.rules, p.Addr) && !r.learned.Has(p.Key) {
			r.sendControlLocked(p, offers.Message{Type: offers.TypeRequest, Boot: r.boot})
		}
	case offers.TypeOffer:
		// Kept even when no accept rule names the peer: tomoe routes
		// shows it, and a peer that offers this node's own address is
		// reported.
		switch r.learned.Update(p.Key, msg.Boot, msg.Seq, msg.Routes, msg.Accepted, r.clock.Now()) {
		case routeplan.Throttled:
			if r.learned.FirstThrottle(p.Key) {
				r.log.Warn("route offer changes too often; ignoring changes for a while", "peer", p.Key.ShortString())
			}
		case routeplan.Changed:
			r.log.Info("route offer received", "peer", p.Key.ShortString(), "addr", p.Addr, "routes", prefixStrings(msg.Routes))
			r.RecomputeLocked()
		}
	}
}

// GreetLocked runs when a session with p comes up: offer our routes, and
// ask for p's if we may accept some.
func (r *Router) GreetLocked(p *peers.Peer) {
	// Even an empty offer: the peer may hold an older one of ours.
	r.sendOfferLocked(p)
	if offers.Wants(r.rules, p.Addr) {
		r.sendControlLocked(p, offers.Message{Type: offers.TypeRequest, Boot: r.boot})
	}
}

func (r *Router) sendOfferLocked(p *peers.Peer) {
	m := offers.Message{Type: offers.TypeOffer, Boot: r.boot, Seq: r.seq, Accepted: p.Routes, Routes: r.offerForLocked(p)}
	r.sendControlLocked(p, m)
	p.Offered = true
}

// offerForLocked is what p is told this node offers: its own tun.ipv4 to
// every peer, the routes it forwards only to peers the policy lets in (the
// others could not use them, and need not learn the LAN's prefixes).
func (r *Router) offerForLocked(p *peers.Peer) []netip.Prefix {
	allowed := r.node.Matcher().AllowsAny(p.Addr)
	var out []netip.Prefix
	for _, o := range r.offers {
		if allowed || r.isSelf(o.Prefix) {
			out = append(out, o.Prefix)
		}
	}
	return out
}

func (r *Router) sendControlLocked(p *peers.Peer, m offers.Message) {
	b, err := m.Marshal()
	if err != nil {
		r.log.Warn("cannot send route offer", "peer", p.Key.ShortString(), "err", err)
		return
	}
	r.node.Inject(packet.UDP(r.self.Address(), p.Addr, offers.ControlPort, offers.ControlPort, b))
}

// requestMissing asks the peers that accept rules name for their offer,
// until they have sent one.
func (r *Router) requestMissing() {
	r.Lock()
	var want []netip.Addr
	for _, rule := range r.rules {
		if rule.From.Any {
			continue
		}
		p := r.peers.ByAddr(rule.From.Addr)
		if p != nil && r.learned.Has(p.Key) {
			continue
		}
		if !slices.Contains(want, rule.From.Addr) {
			want = append(want, rule.From.Addr)
		}
	}
	r.Unlock()
	for _, a := range want {
		ctx, cancel := r.boundedContext(5 * time.Second)
		err := r.node.EnsurePeer(ctx, a)
		cancel()
		select {
		case <-r.done:
			return
		default:
		}
		if err != nil {
			r.log.Debug("cannot ask for route offer", "addr", a, "err", err)
			continue
		}
		r.Lock()
		if p := r.peers.ByAddr(a); p != nil && !r.node.Closing() {
			r.sendControlLocked(p, offers.Message{Type: offers.TypeRequest, Boot: r.boot})
		}
		r.Unlock()
	}
}

// boundedContext ends after d or when the node shuts down.
func (r *Router) boundedContext(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	go func() {
		select {
		case <-r.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// offerToAll sends the current offer to every active peer.
func (r *Router) offerToAll() {
	r.Lock()
	defer r.Unlock()
	if r.node.Closing() {
		return
	}
	r.offerToAllLocked()
}

func (r *Router) offerToAllLocked() {
	for p := range r.peers.All() {
		if p.Active && (p.Offered || len(r.offerForLocked(p)) > 0) {
			r.sendOfferLocked(p)
		}
	}
}

// WithdrawAllLocked tells the peers that had our offer that it is gone
// (on shutdown), best effort. It returns those peers, each with what
// sent(peer) said before its withdrawal was queued, for the node to wait
// until the withdrawals have left.
func (r *Router) WithdrawAllLocked(sent func(identity.PublicKey) uint64) map[identity.PublicKey]uint64 {
	out := make(map[identity.PublicKey]uint64)
	for p := range r.peers.All() {
		if p.Active && p.Offered {
			out[p.Key] = sent(p.Key)
			r.sendControlLocked(p, offers.Message{Type: offers.TypeOffer, Boot: r.boot, Seq: r.seq + 1})
		}
	}
	return out
}

// expireOffersLocked forgets the offers of peers whose session is up but
// that have not refreshed them for offerExpiry (they stopped offering,
// e.g. restarted without routes and their empty offer was lost).
func (r *Router) expireOffersLocked(now time.Time) {
	expired := r.learned.Expire(now, offerExpiry, func(k identity.PublicKey) bool {
		p := r.peers.Get(k)
		return p != nil && p.Up
	})
	for _, k := range expired {
		r.log.Info("route offer expired: the peer stopped refreshing it", "peer", k.ShortString())
	}
	if len(expired) > 0 {
		r.RecomputeLocked()
	}
}

// dropForgottenOffers drops what peers the table forgot offered.
func (r *Router) dropForgottenOffers() {
	r.Lock()
	defer r.Unlock()
	changed := false
	for _, k := range r.peers.TakeForgotten() {
		if r.peers.Get(k) == nil && r.learned.Forget(k) {
			changed = true
		}
	}
	if changed {
		r.RecomputeLocked()
	}
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}
