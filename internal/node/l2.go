package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/l2"
	"github.com/tomoe-net/tomoe/internal/node/l2held"
	"github.com/tomoe-net/tomoe/internal/node/peers"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// The node's virtual Ethernet segments ([[l2]], kernel mode): internal/l2
// builds them over the TUN interface once it is configured; the policy
// admits each tunnel's packets (proto l2) from its far end by implied
// rules (source "l2"), and from no one else.
//
// Members named by certificate (group:, org:, name:) are the nodes this
// node knows as such: those whose valid certificate it holds (the
// directory of package orgs, which it learns from its peers after each
// handshake and from its bridges with each lookup; it starts empty at
// each start, and package l2held keeps who held each tunnel meanwhile).
// Their packets are admitted by a rule naming the identity
// itself, so that the policy follows the directory at once (a revoked,
// expired or re-issued certificate stops matching in the same step that
// installs the new directory), and a handshake from a member whose
// certificate is not known yet is admitted pending it; their tunnels
// follow each new directory (syncL2), a moment later.

// l2Plan is the segments as planned from the config and the directory.
type l2Plan struct {
	segs []l2.Segment
	// matched gives, by segment and tunnel far end, the member entries
	// that named it (a key or address, group:, org:, name:, or "hub").
	matched map[string]map[netip.Addr][]string
	// certNames gives the certificate names of certificate members.
	certNames map[netip.Addr][]string
	// certEntries are each segment's certificate member entries.
	certEntries map[string][]string
	// clashes name the tunnels left out for a VXLAN ID another has.
	clashes []string
	rules   []policy.Rule
}

// planL2 plans segs for the node with address self, whose TUN interface
// has MTU tunMTU, with certificate members resolved against dir. held
// (may be nil) are the far ends of the running tunnels, awaited (may be
// nil) those the node remembers from before its start and has not met
// again (package l2held). Of the certificate members, those come first,
// so that past l2.MaxTunnels a new member does not take an old one's
// tunnel, nor its VXLAN ID; and an awaited far end whose certificate
// dir lacks (it has not greeted this node since its start) keeps its
// VXLAN ID out of others' reach. Neither gives a tunnel: a far end that
// is not a member now gets none.
func planL2(segs []config.L2Segment, tunMTU int, self netip.Addr, dir policy.Directory, held, awaited l2held.Held) *l2Plan {
	p := &l2Plan{matched: map[string]map[netip.Addr][]string{}, certNames: map[netip.Addr][]string{}, certEntries: map[string][]string{}}
	// By segment: the members named by key (or the hub), and the far
	// ends of the running tunnels.
	var keyed, ran []map[netip.Addr]bool
	for _, s := range segs {
		matched := map[netip.Addr][]string{}
		var members []netip.Addr
		add := func(a netip.Addr, by string) {
			if _, ok := matched[a]; !ok {
				members = append(members, a)
			}
			matched[a] = append(matched[a], by)
		}
		byKey := map[netip.Addr]bool{}
		for _, m := range s.Members {
			if m.Kind == policy.KindNode {
				add(m.Addr, m.String())
				byKey[m.Addr] = true
			}
		}
		hubHere := s.Hub.Kind == policy.KindNode && s.Hub.Addr != self
		var byCert []netip.Addr
		certMatched := map[netip.Addr][]string{}
		for _, m := range s.Members {
			if !m.ByCert() {
				continue
			}
			p.certEntries[s.Name] = append(p.certEntries[s.Name], m.String())
			if hubHere {
				continue
			}
			p.rules = append(p.rules, policy.Rule{From: m, Proto: policy.ProtoL2, To: policy.Dest{Kind: policy.DestSelf}})
			for a, ms := range dir {
				if a == self || !m.Matches(a, ms) {
					continue
				}
				if _, ok := certMatched[a]; !ok {
					byCert = append(byCert, a)
				}
				if p.certNames[a] == nil {
					for _, x := range ms {
						p.certNames[a] = append(p.certNames[a], x.Name)
					}
				}
				certMatched[a] = append(certMatched[a], m.String())
			}
		}
		had := maps.Clone(held[s.Name])
		if had == nil {
			had = map[netip.Addr]bool{}
		}
		maps.Copy(had, awaited[s.Name])
		slices.SortFunc(byCert, func(x, y netip.Addr) int {
			if had[x] != had[y] {
				if had[x] {
					return -1
				}
				return 1
			}
			return x.Compare(y)
		})
		for _, a := range byCert {
			for _, by := range certMatched[a] {
				add(a, by)
			}
		}
		seg := l2.Plan(s.Name, s.BridgeName(), self, members, s.Hub.Addr, s.Attach, tunMTU)
		seg.MaxMACs, seg.BroadcastPPS = s.MACs(), s.Broadcasts()
		if hubHere {
			matched = map[netip.Addr][]string{s.Hub.Addr: {"hub " + s.Hub.String()}}
			byKey[s.Hub.Addr] = true
		}
		keyed = append(keyed, byKey)
		ran = append(ran, had)
		p.matched[s.Name] = matched
		p.segs = append(p.segs, seg)
	}
	// Two tunnels with one VXLAN ID (1 in 2^24 a pair, or a member that
	// ground its key for it) cannot both exist: one is left out, rather
	// than the whole change refused. Across every segment, a tunnel to a
	// member named by key (or the hub) goes first, then the IDs of the
	// awaited far ends not back yet, then a tunnel that runs
	// already or is awaited, then the rest in order: a certificate member
	// cannot take the VXLAN ID of a running tunnel, of one that ran before
	// this node restarted, or of a member named by key, of its segment or
	// of another.
	vnis := map[uint32]netip.Addr{}
	kept := map[uint32]bool{} // the IDs held for awaited far ends
	out := make([]map[netip.Addr]bool, len(p.segs))
	for rank := 0; rank < 4; rank++ {
		for i := range p.segs {
			seg := &p.segs[i]
			if out[i] == nil {
				out[i] = map[netip.Addr]bool{}
			}
			if rank == 1 {
				for _, a := range slices.SortedFunc(maps.Keys(awaited[seg.Name]), netip.Addr.Compare) {
					// Not a tunnel now, nor known not to be a member
					// (its certificate held): not back yet.
					v := l2.VNI(seg.Name, self, a)
					if _, taken := vnis[v]; !taken && a != self && !slices.Contains(seg.Remotes, a) && len(dir[a]) == 0 {
						vnis[v], kept[v] = a, true
					}
				}
				continue
			}
			for _, r := range seg.Remotes {
				switch {
				case keyed[i][r]:
					if rank != 0 {
						continue
					}
				case ran[i][r]:
					if rank != 2 {
						continue
					}
				case rank != 3:
					continue
				}
				v := l2.VNI(seg.Name, self, r)
				if other, dup := vnis[v]; dup {
					why := fmt.Sprintf("segment %s: the tunnel to %s has the VXLAN ID of %s's", seg.Name, r, other)
					if kept[v] {
						why = fmt.Sprintf("segment %s: the tunnel to %s has the VXLAN ID of %s's, which had it before this node started and is awaited", seg.Name, r, other)
					}
					p.clashes = append(p.clashes, why)
					seg.LeftOut++
					out[i][r] = true
					continue
				}
				vnis[v] = r
			}
		}
	}
	for i := range p.segs {
		seg := &p.segs[i]
		seg.Remotes = slices.DeleteFunc(seg.Remotes, func(r netip.Addr) bool { return out[i][r] })
		for _, r := range seg.Remotes {
			if keyed[i][r] {
				p.rules = append(p.rules, policy.Rule{From: policy.Identity{Kind: policy.KindNode, Addr: r}, Proto: policy.ProtoL2, To: policy.Dest{Kind: policy.DestSelf}})
			}
		}
	}
	return p
}

// l2Dir is the directory of certificate members now.
func (n *Node) l2Dir() policy.Directory {
	if d := n.dir.Load(); d != nil {
		return *d
	}
	return nil
}

// startL2 sets up the segments over the TUN interface tunName: the
// config's, with the members the admin API added and removed.
func (n *Node) startL2(tunName string) error {
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	n.l2Started = true
	file, err := n.changes.L2(n.live.L2)
	if err != nil {
		return err
	}
	plan := n.planL2Held(file, nil)
	n.store.SetL2Rules(plan.rules)
	n.l2plan.Store(plan)
	n.logLeftOut(nil, plan)
	return n.startL2Segments(tunName, plan.segs)
}

// planL2Held plans segs with the directory now (planL2), prev the plan in
// force (nil: none yet), and what the node remembers of who held each
// tunnel before this start (package l2held, opened at the first plan),
// then records the plan there. reloadMu is held.
func (n *Node) planL2Held(segs []config.L2Segment, prev *l2Plan) *l2Plan {
	now := n.clock.Now()
	if n.l2mem == nil {
		var names []string
		for _, s := range segs {
			names = append(names, s.Name)
		}
		mem, err := l2held.Open(l2held.Path(n.cfg.KeyFile), n.pub.Address(), names, now)
		if err != nil {
			n.log.Warn("virtual Ethernet: starting without the memory of which member held each tunnel (rewritten at once): a member whose tunnel's VXLAN ID clashes with another's may take it", "err", err)
		}
		n.l2mem = mem
		if len(mem.Awaited(now)) > 0 {
			// The IDs kept for far ends not back by then are freed.
			n.clock.AfterFunc(mem.Until().Sub(now), func() {
				select {
				case n.l2Sync <- struct{}{}:
				default:
				}
			})
		}
	}
	var held l2held.Held
	if prev != nil {
		held = l2held.Of(prev.segs)
	}
	dir := n.l2Dir()
	plan := planL2(segs, n.cfg.TUN.MTU, n.pub.Address(), dir, held, n.l2mem.Awaited(now))
	settled := func(seg string, a netip.Addr) bool { return plan.matched[seg][a] != nil || len(dir[a]) > 0 }
	if err := n.l2mem.Save(l2held.Of(plan.segs), settled, now); err != nil {
		n.log.Warn("virtual Ethernet: cannot remember which member holds each tunnel", "err", err)
	}
	return plan
}

// greetForL2 greets the static peers now when a full mesh names members
// by certificate. A node knows another's certificate once the two had a
// session (or a bridge's lookup returned it); a member of a mesh sends a
// member it does not know yet nothing, so without this two members that
// exchange no other traffic would never meet. (On a hub segment the
// members meet the hub by themselves: their one tunnel is to its key.)
// New calls it once the static peers are in the table, reloads and the
// admin API after a change; reloadMu is held.
//
// Two members started together would each start a handshake to the other
// at once; WireGuard's handshakes then cross, and wireguard-go can be left
// with a session whose packets one side cannot open until its 15 s
// "stopped hearing back" retry, greetings lost. So a node greets at once
// only the peers whose address is above its own, and the others after
// l2GreetDelay unless they greeted it first (it is in session with them
// as the responder by then).
func (n *Node) greetForL2(segs []config.L2Segment) {
	if !n.orgs.Enabled() || !slices.ContainsFunc(segs, func(s config.L2Segment) bool {
		return s.Hub.IsZero() && slices.ContainsFunc(s.Members, policy.Identity.ByCert)
	}) {
		return
	}
	var static []*peers.Peer
	n.peers.Lock()
	for p := range n.peers.All() {
		if p.Static && !p.Active && !p.Device {
			static = append(static, p)
		}
	}
	n.peers.Unlock()
	if len(static) == 0 {
		return
	}
	var first, later []*peers.Peer
	for _, p := range static {
		if p.Addr.Less(n.pub.Address()) {
			later = append(later, p)
		} else {
			first = append(first, p)
		}
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		greet := func(ps []*peers.Peer) {
			for _, p := range ps {
				n.peers.Lock()
				active := p.Active
				n.peers.Unlock()
				if active {
					continue // it greeted this node first
				}
				if err := n.activate(p); err != nil && !errors.Is(err, errClosing) {
					n.log.Debug("virtual Ethernet: cannot greet a static peer", "peer", p.Key.ShortString(), "err", err)
				}
			}
		}
		greet(first)
		if len(later) == 0 {
			return
		}
		t := n.clock.NewTimer(l2GreetDelay)
		defer t.Stop()
		select {
		case <-n.done:
			return
		case <-t.C():
		}
		greet(later)
	}()
}

// l2GreetDelay is how long a member waits for a static peer with a lower
// address to greet it first (greetForL2).
const l2GreetDelay = 2 * time.Second

func (n *Node) startL2Segments(tunName string, segs []l2.Segment) error {
	if len(segs) == 0 {
		return nil
	}
	m, err := l2.Start(l2.Config{TUN: tunName, Segments: segs})
	if err != nil {
		return err
	}
	n.hostMu.Lock()
	n.l2 = m
	n.hostMu.Unlock()
	if err := n.setBridges(segs); err != nil {
		return err
	}
	for _, s := range segs {
		n.log.Info("virtual Ethernet segment up", "segment", s.Name, "interface", s.Bridge, "tunnels", len(s.Remotes), "hub", s.Hub, "attach", s.Attach, "mtu", s.MTU, "stp", s.Attach != "")
	}
	return nil
}

// reloadL2 applies a changed [[l2]] (a live reload), with the admin API's
// member changes over it. reloadMu is held.
func (n *Node) reloadL2(cfg *config.Config) (adminapi.ReloadCount, error) {
	after, err := n.changes.L2(cfg.L2)
	if err != nil {
		return adminapi.ReloadCount{}, err
	}
	count, err := n.applyL2(after, true)
	n.greetForL2(after)
	return count, err
}

// syncL2Loop makes the segments follow the directory of certificate
// members: MembersChanged signals l2Sync after each new directory.
func (n *Node) syncL2Loop() {
	defer n.wg.Done()
	for {
		select {
		case <-n.done:
			return
		case <-n.l2Sync:
		}
		n.reloadMu.Lock()
		if n.l2Started && !n.closing.Load() {
			if after, err := n.changes.L2(n.live.L2); err != nil {
				n.log.Warn("virtual Ethernet: members not updated", "err", err)
			} else if _, err := n.applyL2(after, false); err != nil {
				n.log.Warn("virtual Ethernet: members not updated", "err", err)
			}
		}
		n.reloadMu.Unlock()
	}
}

// applyL2 changes the segments to after, with the directory now: the
// implied rules first, so that a removed member's tunnel packets are
// refused at once, then the segments (l2.Manager.Update). It reports
// tunnels added and removed (Changed: neither, but a segment changed;
// with always false, nothing is done when nothing changed). reloadMu is
// held.
func (n *Node) applyL2(after []config.L2Segment, always bool) (adminapi.ReloadCount, error) {
	var count adminapi.ReloadCount
	if !n.configuresHost() {
		return count, nil
	}
	prev := n.l2plan.Load()
	plan := n.planL2Held(after, prev)
	var old []l2.Segment
	if prev != nil {
		old = prev.segs
	}
	if !always && reflect.DeepEqual(old, plan.segs) && prev != nil && reflect.DeepEqual(prev.rules, plan.rules) {
		n.l2plan.Store(plan) // the names matched may differ
		return count, nil
	}
	had, has := map[l2.Tunnel]bool{}, map[l2.Tunnel]bool{}
	for _, s := range old {
		for _, t := range s.Tunnels() {
			had[t] = true
		}
	}
	for _, s := range plan.segs {
		for _, t := range s.Tunnels() {
			has[t] = true
			if !had[t] {
				count.Added++
			}
		}
	}
	for t := range had {
		if !has[t] {
			count.Removed++
		}
	}
	if count.Added+count.Removed == 0 {
		count.Changed = 1 // a bridge, an attached port, a role or a limit
	}
	n.store.SetL2Rules(plan.rules) // published to the filter at once
	n.knownKeysChanged()
	n.l2plan.Store(plan)
	n.logLeftOut(prev, plan)
	n.hostMu.Lock()
	m := n.l2
	n.hostMu.Unlock()
	if m == nil {
		name, err := n.wrapper.Name()
		if err != nil {
			return count, err
		}
		return count, n.startL2Segments(name, plan.segs)
	}
	err := m.Update(plan.segs)
	if ferr := n.setBridges(plan.segs); ferr != nil {
		err = errors.Join(err, ferr)
	}
	if err != nil {
		return count, err
	}
	n.log.Info("virtual Ethernet segments changed", "segments", len(plan.segs), "tunnels_added", count.Added, "tunnels_removed", count.Removed)
	return count, nil
}

// logLeftOut says when a segment's members start or stop being more than
// it makes tunnels to.
func (n *Node) logLeftOut(prev, plan *l2Plan) {
	for _, c := range plan.clashes {
		if prev == nil || !slices.Contains(prev.clashes, c) {
			n.log.Warn("virtual Ethernet: a tunnel left out", "why", c)
		}
	}
	was := map[string]int{}
	if prev != nil {
		for _, s := range prev.segs {
			was[s.Name] = s.LeftOut
		}
	}
	for _, s := range plan.segs {
		switch {
		case s.LeftOut > 0 && s.LeftOut != was[s.Name]:
			n.log.Warn("virtual Ethernet: a segment has more members than it makes tunnels to; the rest get none", "segment", s.Name, "tunnels", len(s.Remotes), "max_tunnels", l2.MaxTunnels, "left_out", s.LeftOut)
		case s.LeftOut == 0 && was[s.Name] > 0:
			n.log.Info("virtual Ethernet: every member of the segment has a tunnel again", "segment", s.Name, "tunnels", len(s.Remotes))
		}
	}
}

// ChangeL2 adds or removes a member of a segment (POST /v1/l2/change),
// at once and across restarts (services.json beside the key file).
func (n *Node) ChangeL2(ctx context.Context, req adminapi.L2Change) (adminapi.L2, error) {
	if !n.configuresHost() {
		return adminapi.L2{}, adminapi.Conflict(errors.New("virtual Ethernet needs a kernel-mode node on Linux"))
	}
	member, err := policy.ParseIdentity(req.Member)
	if err == nil {
		err = config.CheckL2Member(member)
	}
	if err != nil {
		return adminapi.L2{}, adminapi.BadRequest(fmt.Errorf("member %q: %v", req.Member, err))
	}
	if member.Addr == n.pub.Address() {
		return adminapi.L2{}, adminapi.BadRequest(errors.New("that is this node itself: it is on its segments anyway"))
	}
	var removed bool
	switch req.Op {
	case adminapi.L2Add:
	case adminapi.L2Remove:
		removed = true
	default:
		return adminapi.L2{}, adminapi.BadRequest(fmt.Errorf("op %q: use %q or %q", req.Op, adminapi.L2Add, adminapi.L2Remove))
	}
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	if n.closing.Load() {
		return adminapi.L2{}, errClosing
	}
	if !slices.ContainsFunc(n.live.L2, func(s config.L2Segment) bool { return s.Name == req.Segment }) {
		return adminapi.L2{}, adminapi.NotFound(fmt.Errorf("segment %q: this node's config has no [[l2]] of that name", req.Segment))
	}
	if err := n.changes.RecordL2Member(req.Segment, member, removed); err != nil {
		return adminapi.L2{}, err
	}
	after, err := n.changes.L2(n.live.L2)
	if err != nil {
		return adminapi.L2{}, err
	}
	if _, err := n.applyL2(after, true); err != nil {
		// The change stays recorded: say so, rather than let an error
		// read as "nothing changed".
		return adminapi.L2{}, fmt.Errorf("the change is recorded (services.json; applied again at the next change, reload or start) but applying it failed: %w", err)
	}
	n.greetForL2(after)
	n.log.Info("virtual Ethernet member changed", "segment", req.Segment, "member", member, "op", req.Op)
	return n.L2Status(ctx)
}

// setBridges tells the firewall the segments' bridges, whose bridged
// packets its forward rules let pass.
func (n *Node) setBridges(segs []l2.Segment) error {
	var names []string
	for _, s := range segs {
		names = append(names, s.Bridges()...)
	}
	n.hostMu.Lock()
	same := slices.Equal(n.bridges, names)
	n.bridges = names
	n.hostMu.Unlock()
	if same {
		return nil
	}
	return n.applyForwarding(n.routes.Offers())
}

// stopL2 removes the segments and releases attached ports.
func (n *Node) stopL2() error {
	n.hostMu.Lock()
	m := n.l2
	n.l2 = nil
	n.hostMu.Unlock()
	if m == nil {
		return nil
	}
	return m.Close()
}

// L2Area is GET /v1/l2.
type L2Area struct{ *Node }

// RegisterAPI implements adminapi.Area.
func (a L2Area) RegisterAPI(m *adminapi.Mux) {
	m.Get("/v1/l2", func(ctx context.Context) (any, error) { return a.L2Status(ctx) })
	adminapi.Post(m, "/v1/l2/change", func(ctx context.Context, r adminapi.L2Change) (any, error) { return a.ChangeL2(ctx, r) })
}

// L2Status reports the segments.
func (n *Node) L2Status(context.Context) (adminapi.L2, error) {
	out := adminapi.L2{Segments: []adminapi.L2Segment{}}
	n.hostMu.Lock()
	m := n.l2
	n.hostMu.Unlock()
	if m == nil {
		return out, nil
	}
	up := map[netip.Addr]bool{}
	n.peers.Lock()
	for p := range n.peers.All() {
		if p.Up {
			up[p.Addr] = true
		}
	}
	n.peers.Unlock()
	st, err := m.Status(func(a netip.Addr) bool { return up[a] })
	if err != nil {
		return out, err
	}
	plan := n.l2plan.Load()
	for _, s := range st {
		seg := adminapi.L2Segment{Name: s.Name, Interface: s.Bridge, Hub: s.Hub, Attach: s.Attach, MTU: s.MTU, MaxMACs: s.MaxMACs, MACs: s.MACs,
			Members: []adminapi.L2Member{}, AttachMACs: s.AttachMACs, BroadcastLimit: s.BroadcastPPS, STP: s.STP,
			AttachState: s.AttachState, OverlayState: s.OverlayState, LeftOut: s.LeftOut, MaxTunnels: l2.MaxTunnels}
		if s.Attach != "" {
			c := counters(s.AttachStat)
			seg.AttachCounters = &c
		}
		var matched map[netip.Addr][]string
		if plan != nil {
			matched = plan.matched[s.Name]
		}
		certs := map[string][]string{}
		var certOrder []string
		for _, mb := range s.Members {
			m := adminapi.L2Member{Address: mb.Address.String(), Device: mb.Device, VNI: mb.VNI, Up: mb.Up, MACs: mb.MACs, Counters: counters(mb.Counters),
				MatchedBy: matched[mb.Address]}
			for _, by := range m.MatchedBy {
				if id, err := policy.ParseIdentity(by); err == nil && id.ByCert() {
					if _, ok := certs[by]; !ok {
						certOrder = append(certOrder, by)
					}
					certs[by] = append(certs[by], m.Address)
					m.CertNames = plan.certNames[mb.Address]
				}
			}
			seg.Members = append(seg.Members, m)
		}
		var entries []string
		if plan != nil {
			entries = plan.certEntries[s.Name]
		}
		for _, c := range entries {
			if _, ok := certs[c]; !ok {
				certOrder = append(certOrder, c)
			}
		}
		for _, c := range certOrder {
			seg.CertMembers = append(seg.CertMembers, adminapi.L2CertMember{Member: c, Matched: append([]string{}, certs[c]...)})
		}
		out.Segments = append(out.Segments, seg)
	}
	return out, nil
}

func counters(c l2.Counters) adminapi.L2Counters {
	return adminapi.L2Counters{RxFrames: c.RxFrames, RxBytes: c.RxBytes, TxFrames: c.TxFrames, TxBytes: c.TxBytes, RxDropped: c.RxDropped, TxDropped: c.TxDropped}
}
