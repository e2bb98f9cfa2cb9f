package node

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/offers"
	"github.com/tomoe-net/tomoe/internal/packet"
	"github.com/tomoe-net/tomoe/internal/policy"
	"github.com/tomoe-net/tomoe/internal/routeplan"
)

// Tunnelled routes. A node offers prefixes (routes.offer, plus its own
// tun.ipv4 as a /32) to the peers its policy lets in; a node that accepts
// (routes.accept) some of what a peer offers puts those prefixes into that
// peer's AllowedIPs and routes them into the TUN. Offers travel as UDP to
// offers.ControlPort inside WireGuard, so their source address, checked by
// WireGuard, says who offers. They are sent when a session comes up, on
// request, when the offer changes, and every offerRefresh; a node asks the
// peers its accept rules name for their offer until it has one.
const (
	offerRefresh   = 2 * time.Minute
	offerExpiry    = 3*offerRefresh + 30*time.Second
	requestRetry   = 15 * time.Second
	controlBacklog = 64
)

// routeState is the node's side of the offer protocol. Guarded by Node.mu.
type routeState struct {
	boot, seq uint32
	offers    []config.Offer   // this node's offers (tun.ipv4 included)
	rules     []offers.Rule    // accept rules
	learned   *routeplan.Table // what peers offer
	plan      *routeplan.Plan  // what is installed, for whom: the one source of route ownership
	osRouted  map[netip.Prefix]bool
}

type controlMsg struct {
	src netip.Addr
	msg offers.Message
}

func (n *Node) initRoutes() error {
	var b [4]byte
	rand.Read(b[:])
	rs := &n.rt
	rs.boot = binary.BigEndian.Uint32(b[:])
	rs.learned = routeplan.NewTable()
	rs.plan = routeplan.Compute(routeplan.Input{})
	n.plan.Store(rs.plan)
	rs.osRouted = make(map[netip.Prefix]bool)
	n.control = make(chan controlMsg, controlBacklog)
	var list []config.Offer
	for _, o := range n.cfg.Routes.Offer {
		list = append(list, config.Offer{Prefix: o.Prefix.Prefix, Masquerade: o.Masquerade})
	}
	list, err := n.applyOfferChanges(list)
	if err != nil {
		return err
	}
	rs.offers = list
	if v4 := n.ipv4; v4.IsValid() {
		self := netip.PrefixFrom(v4, 32)
		if slices.ContainsFunc(rs.offers, func(o config.Offer) bool { return o.Prefix == self }) {
			// Validate catches an explicit tun.ipv4; "auto" needs the key.
			return fmt.Errorf("routes.offer: %s is tun.ipv4 (%q in %s), which is offered by itself: remove the entry", self, n.cfg.TUN.IPv4, n.cfg.TUN.IPv4Prefix)
		}
		rs.offers = append(rs.offers, config.Offer{Prefix: self})
	}
	if len(rs.offers) > offers.MaxRoutes {
		return fmt.Errorf("routes.offer: %d routes with tun.ipv4 and the API's changes (%s), more than one offer carries (%d)", len(rs.offers), changesFile(n.cfg).Path, offers.MaxRoutes)
	}
	for _, a := range n.cfg.Routes.Accept {
		rs.rules = append(rs.rules, offers.Rule{From: a.From, Prefix: a.Prefix.Prefix})
	}
	if rs.rules, err = n.applyAcceptChanges(rs.rules); err != nil {
		return err
	}
	for _, r := range rs.rules {
		if r.Prefix.Addr().Is4() && !n.ipv4.IsValid() {
			n.log.Info("an accept rule has an IPv4 prefix but tun.ipv4 is not set: this node forwards IPv4 to it, but its own programs have no IPv4 source on the overlay", "prefix", r.Prefix)
			break
		}
	}
	space := n.cfg.TUN.IPv4Prefix.Prefix
	for _, r := range rs.rules {
		if r.From.Any && r.Prefix.Addr().Is4() && r.Prefix.Bits() > 0 && !r.Prefix.Overlaps(space) {
			// A plan of explicit addresses (from = "*" within 10.99.0.0/24)
			// that worked before addresses were bound to keys.
			n.log.Info("a \"*\" accept rule outside tun.ipv4_prefix takes the prefixes offered there, but no /32: a \"*\" rule takes a node's address only as the one its key derives in tun.ipv4_prefix (tun.ipv4 = \"auto\"); other addresses need a rule naming the node", "prefix", r.Prefix, "tun.ipv4_prefix", space)
		}
	}
	return nil
}

// forwardsLocked reports whether this node offers routes other than its
// own tun.ipv4.
func (n *Node) forwardsLocked() bool {
	v4 := n.ipv4
	for _, o := range n.rt.offers {
		if !(v4.IsValid() && o.Prefix == netip.PrefixFrom(v4, 32)) {
			return true
		}
	}
	return false
}

// localPolicy is what the filter must know this node owns and forwards.
func (n *Node) localPolicyLocked() policy.Local {
	pub := n.pub
	l := policy.Local{Addr: pub.Address(), Site: pub.SitePrefix(), IPv4: n.ipv4, Host: n.host.Addrs}
	for _, o := range n.rt.offers {
		if o.Prefix.Bits() == 32 && o.Prefix.Addr() == l.IPv4 {
			continue
		}
		l.Offered = append(l.Offered, offers.Forwarded(o.Prefix)...)
	}
	return l
}

// onControl is the wrapper's hand-off of a control datagram from src. It
// runs on WireGuard's receive path: decode and queue, never block.
func (n *Node) onControl(src netip.Addr, payload []byte) {
	m, err := offers.Unmarshal(payload)
	if err != nil {
		n.controlBad.Add(1)
		return
	}
	select {
	case n.control <- controlMsg{src: src, msg: m}:
	default:
	}
}

// routeLoop handles control messages and the timers of the offer protocol.
func (n *Node) routeLoop() {
	defer n.wg.Done()
	retry := time.NewTicker(requestRetry)
	defer retry.Stop()
	refresh := time.NewTicker(offerRefresh)
	defer refresh.Stop()
	n.requestMissing()
	for {
		select {
		case <-n.done:
			return
		case c := <-n.control:
			n.handleControl(c)
		case <-retry.C:
			n.requestMissing()
		case now := <-refresh.C:
			n.offerToAll()
			n.lockAll()
			n.expireOffersLocked(now)
			n.unlockAll()
		case <-n.forgottenSig:
			n.dropForgottenOffers()
		}
	}
}

func (n *Node) handleControl(c controlMsg) {
	n.lockAll()
	defer n.unlockAll()
	p := n.byAddr[c.src]
	if p == nil || n.closing.Load() {
		return
	}
	switch c.msg.Type {
	case offers.TypeRequest:
		n.sendOfferLocked(p)
		if offers.Wants(n.rt.rules, p.addr) && !n.rt.learned.Has(p.key) {
			n.sendControlLocked(p, offers.Message{Type: offers.TypeRequest, Boot: n.rt.boot})
		}
	case offers.TypeOffer:
		// Kept even when no accept rule names the peer: tomoe routes
		// shows it, and a peer that offers this node's own address is
		// reported.
		switch n.rt.learned.Update(p.key, c.msg.Boot, c.msg.Seq, c.msg.Routes, c.msg.Accepted, time.Now()) {
		case routeplan.Throttled:
			if n.rt.learned.FirstThrottle(p.key) {
				n.log.Warn("route offer changes too often; ignoring changes for a while", "peer", p.key.ShortString())
			}
		case routeplan.Changed:
			n.log.Info("route offer received", "peer", p.key.ShortString(), "addr", p.addr, "routes", prefixStrings(c.msg.Routes))
			n.recomputeRoutesLocked()
		}
	}
}

// greetLocked runs when a session with p comes up: offer our routes, and
// ask for p's if we may accept some. It needs rtMu and mu.
func (n *Node) greetLocked(p *peer) {
	// Even an empty offer: the peer may hold an older one of ours.
	n.sendOfferLocked(p)
	if offers.Wants(n.rt.rules, p.addr) {
		n.sendControlLocked(p, offers.Message{Type: offers.TypeRequest, Boot: n.rt.boot})
	}
}

func (n *Node) sendOfferLocked(p *peer) {
	m := offers.Message{Type: offers.TypeOffer, Boot: n.rt.boot, Seq: n.rt.seq, Accepted: p.routes, Routes: n.offerForLocked(p)}
	n.sendControlLocked(p, m)
	p.offered = true
}

// offerForLocked is what p is told this node offers: its own tun.ipv4 to
// every peer, the routes it forwards only to peers the policy lets in (the
// others could not use them, and need not learn the LAN's prefixes).
func (n *Node) offerForLocked(p *peer) []netip.Prefix {
	allowed := n.store.Matcher().AllowsAny(p.addr)
	v4 := n.ipv4
	var out []netip.Prefix
	for _, o := range n.rt.offers {
		if allowed || (v4.IsValid() && o.Prefix == netip.PrefixFrom(v4, 32)) {
			out = append(out, o.Prefix)
		}
	}
	return out
}

func (n *Node) sendControlLocked(p *peer, m offers.Message) {
	b, err := m.Marshal()
	if err != nil {
		n.log.Warn("cannot send route offer", "peer", p.key.ShortString(), "err", err)
		return
	}
	n.wrapper.Inject(packet.UDP(n.Address(), p.addr, offers.ControlPort, offers.ControlPort, b))
}

// requestMissing asks the peers that accept rules name for their offer,
// until they have sent one.
func (n *Node) requestMissing() {
	n.lockAll()
	var want []netip.Addr
	for _, r := range n.rt.rules {
		if r.From.Any {
			continue
		}
		p := n.byAddr[r.From.Addr]
		if p != nil && n.rt.learned.Has(p.key) {
			continue
		}
		if !slices.Contains(want, r.From.Addr) {
			want = append(want, r.From.Addr)
		}
	}
	n.unlockAll()
	for _, a := range want {
		ctx, cancel := n.boundedContext(5 * time.Second)
		err := n.ensurePeer(ctx, a)
		cancel()
		select {
		case <-n.done:
			return
		default:
		}
		if err != nil {
			n.log.Debug("cannot ask for route offer", "addr", a, "err", err)
			continue
		}
		n.lockAll()
		if p := n.byAddr[a]; p != nil && !n.closing.Load() {
			n.sendControlLocked(p, offers.Message{Type: offers.TypeRequest, Boot: n.rt.boot})
		}
		n.unlockAll()
	}
}

// boundedContext ends after d or when the node shuts down.
func (n *Node) boundedContext(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	go func() {
		select {
		case <-n.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// offerToAll sends the current offer to every active peer.
func (n *Node) offerToAll() {
	n.lockAll()
	defer n.unlockAll()
	if n.closing.Load() {
		return
	}
	for _, p := range n.peers {
		if p.active && (p.offered || len(n.offerForLocked(p)) > 0) {
			n.sendOfferLocked(p)
		}
	}
}

// withdrawAllLocked tells the peers that had our offer that it is gone
// (on shutdown), best effort. It returns those peers, each with the
// transport messages the Bind had sent it before (see flushWithdrawals).
func (n *Node) withdrawAllLocked() map[identity.PublicKey]uint64 {
	sent := make(map[identity.PublicKey]uint64)
	for _, p := range n.peers {
		if p.active && p.offered {
			sent[p.key] = n.bind.Sent(p.key)
			n.sendControlLocked(p, offers.Message{Type: offers.TypeOffer, Boot: n.rt.boot, Seq: n.rt.seq + 1})
		}
	}
	return sent
}

// withdrawWait bounds how long Close waits for its withdrawals to leave:
// the round trip of a handshake, for a peer whose session must be renewed
// before WireGuard sends it anything.
const withdrawWait = time.Second

// flushWithdrawals waits, at most withdrawWait, until WireGuard has taken
// the withdrawals from the wrapper and queued them for their peers, and
// then until each of those peers has had a transport message handed to
// the socket since its withdrawal was queued: the withdrawal, or one
// queued ahead of it, which the peer's one sender hands over just before
// (transport/sent.go). The device may then close without dropping them.
func (n *Node) flushWithdrawals(sent map[identity.PublicKey]uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), withdrawWait)
	defer cancel()
	if err := n.wrapper.WaitStaged(ctx); err != nil {
		n.log.Info("route withdrawals not sent before shutdown", "err", err)
		return
	}
	for k, before := range sent {
		if err := n.bind.WaitSent(ctx, k, before); err != nil {
			n.log.Info("route withdrawal not sent before shutdown", "peer", k.ShortString(), "err", err)
		}
	}
}

// expireOffersLocked forgets the offers of peers whose session is up but
// that have not refreshed them for offerExpiry (they stopped offering,
// e.g. restarted without routes and their empty offer was lost).
func (n *Node) expireOffersLocked(now time.Time) {
	expired := n.rt.learned.Expire(now, offerExpiry, func(k identity.PublicKey) bool {
		p := n.peers[k]
		return p != nil && p.up
	})
	for _, k := range expired {
		n.log.Info("route offer expired: the peer stopped refreshing it", "peer", k.ShortString())
	}
	if len(expired) > 0 {
		n.recomputeRoutesLocked()
	}
}

// dropForgottenOffers drops what forgotten peers offered (forgetLocked
// queues them).
func (n *Node) dropForgottenOffers() {
	n.lockAll()
	defer n.unlockAll()
	changed := false
	for _, k := range n.forgotten {
		if n.peers[k] == nil && n.rt.learned.Forget(k) {
			changed = true
		}
	}
	n.forgotten = nil
	if changed {
		n.recomputeRoutesLocked()
	}
}

// lockAll takes both locks, in their order: for what touches the routes
// state and peers.
func (n *Node) lockAll() {
	n.rtMu.Lock()
	n.mu.Lock()
}

func (n *Node) unlockAll() {
	n.mu.Unlock()
	n.rtMu.Unlock()
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

// forwardingRecord is where a kernel-mode node records the forwarding
// sysctls it switched on, until it switches them off again.
func forwardingRecord(cfg *config.Config) string {
	return filepath.Join(filepath.Dir(cfg.KeyFile), "forwarding.json")
}

// recoverForwarding (kernel mode, at start, before anything enables
// forwarding) puts back the forwarding sysctls that a run of this node
// which did not exit cleanly left switched on.
func (n *Node) recoverForwarding() error {
	n.rtMu.Lock()
	defer n.rtMu.Unlock()
	n.forward.Record = forwardingRecord(n.cfg)
	restored, err := n.forward.Recover()
	if err != nil {
		return err
	}
	if len(restored) > 0 {
		n.log.Warn("switched forwarding back off: tomoe had switched it on and did not exit cleanly", "sysctls", restored, "record", n.forward.Record)
	}
	return nil
}

// applyForwardingLocked makes the host forward what this node offers
// (kernel mode): forwarding sysctls and the firewall's masquerade rules.
func (n *Node) applyForwardingLocked() error {
	if n.osRoutes == nil {
		return nil
	}
	var v4, v6 bool
	v4addr := n.ipv4
	for _, o := range n.rt.offers {
		if o.Prefix.Addr().Is4() && !(o.Prefix.Bits() == 32 && o.Prefix.Addr() == v4addr) {
			v4 = true
		}
		if o.Prefix.Addr().Is6() {
			v6 = true
		}
	}
	before := len(n.forward.Changed())
	if err := n.forward.Enable(v4, v6); err != nil {
		return err
	}
	if ch := n.forward.Changed(); len(ch) > before {
		n.log.Warn("enabled forwarding to carry offered routes; restored on shutdown", "sysctls", ch[before:])
	}
	if n.firewall != nil {
		name, err := n.wrapper.Name()
		if err != nil {
			return err
		}
		if err := n.firewall.Update(n.firewallConfigLocked(name)); err != nil {
			return fmt.Errorf("firewall: %w", err)
		}
	}
	return nil
}
