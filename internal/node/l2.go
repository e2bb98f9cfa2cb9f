package node

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/l2"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// The node's virtual Ethernet segments ([[l2]], kernel mode): internal/l2
// builds them over the TUN interface once it is configured; the policy
// admits each tunnel's packets (proto l2) from its far end by implied
// rules (source "l2"), and from no one else.

// l2Segments plans segments for the node with key pub, whose TUN
// interface has MTU tunMTU.
func l2Segments(segs []config.L2Segment, tunMTU int, pub identity.PublicKey) []l2.Segment {
	var out []l2.Segment
	for _, s := range segs {
		members := make([]netip.Addr, 0, len(s.Members))
		for _, m := range s.Members {
			members = append(members, m.Addr)
		}
		out = append(out, l2.Plan(s.Name, s.BridgeName(), pub.Address(), members, s.Hub.Addr, s.Attach, tunMTU))
	}
	return out
}

// l2Rules are the rules segs imply: each tunnel's far end may send this
// node the tunnel's packets.
func l2Rules(segs []l2.Segment) []policy.Rule {
	var out []policy.Rule
	for _, s := range segs {
		for _, r := range s.Remotes {
			out = append(out, policy.Rule{From: policy.Identity{Kind: policy.KindNode, Addr: r}, Proto: policy.ProtoL2, To: policy.Dest{Kind: policy.DestSelf}})
		}
	}
	return out
}

// startL2 sets up the segments over the TUN interface tunName: the
// config's, with the members the admin API added and removed.
func (n *Node) startL2(tunName string) error {
	file, err := n.changes.L2(n.cfg.L2)
	if err != nil {
		return err
	}
	return n.startL2Segments(tunName, l2Segments(file, n.cfg.TUN.MTU, n.pub))
}

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
		n.log.Info("virtual Ethernet segment up", "segment", s.Name, "interface", s.Bridge, "tunnels", len(s.Remotes), "hub", s.Hub, "attach", s.Attach, "mtu", s.MTU)
	}
	return nil
}

// reloadL2 applies a changed [[l2]] (a live reload), with the admin API's
// member changes over it. reloadMu is held.
func (n *Node) reloadL2(cfg *config.Config) (adminapi.ReloadCount, error) {
	before, err1 := n.changes.L2(n.live.L2)
	after, err2 := n.changes.L2(cfg.L2)
	if err := errors.Join(err1, err2); err != nil {
		return adminapi.ReloadCount{}, err
	}
	return n.applyL2(before, after)
}

// applyL2 changes the segments from before to after: the implied rules
// first, so that a removed member's tunnel packets are refused at once,
// then the segments (l2.Manager.Update). It reports tunnels added and
// removed (Changed: neither, but a segment changed). reloadMu is held.
func (n *Node) applyL2(before, after []config.L2Segment) (adminapi.ReloadCount, error) {
	var count adminapi.ReloadCount
	if !n.configuresHost() {
		return count, nil
	}
	old := l2Segments(before, n.cfg.TUN.MTU, n.pub)
	segs := l2Segments(after, n.cfg.TUN.MTU, n.pub)
	had, has := map[l2.Tunnel]bool{}, map[l2.Tunnel]bool{}
	for _, s := range old {
		for _, t := range s.Tunnels() {
			had[t] = true
		}
	}
	for _, s := range segs {
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
		count.Changed = 1 // a bridge, an attached port or a role
	}
	n.store.SetL2Rules(l2Rules(segs)) // published to the filter at once
	n.knownKeysChanged()
	n.hostMu.Lock()
	m := n.l2
	n.hostMu.Unlock()
	if m == nil {
		name, err := n.wrapper.Name()
		if err != nil {
			return count, err
		}
		return count, n.startL2Segments(name, segs)
	}
	err := m.Update(segs)
	if ferr := n.setBridges(segs); ferr != nil {
		err = errors.Join(err, ferr)
	}
	if err != nil {
		return count, err
	}
	n.log.Info("virtual Ethernet segments changed", "segments", len(segs), "tunnels_added", count.Added, "tunnels_removed", count.Removed)
	return count, nil
}

// ChangeL2 adds or removes a member of a segment (POST /v1/l2/change),
// at once and across restarts (services.json beside the key file).
func (n *Node) ChangeL2(ctx context.Context, req adminapi.L2Change) (adminapi.L2, error) {
	if !n.configuresHost() {
		return adminapi.L2{}, adminapi.Conflict(errors.New("virtual Ethernet needs a kernel-mode node on Linux"))
	}
	member, err := policy.ParseIdentity(req.Member)
	if err != nil || member.Kind != policy.KindNode {
		return adminapi.L2{}, adminapi.BadRequest(fmt.Errorf("member %q: give a node's public key (base64) or address (fc..)", req.Member))
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
	before, err := n.changes.L2(n.live.L2)
	if err != nil {
		return adminapi.L2{}, err
	}
	if err := n.changes.RecordL2Member(req.Segment, member, removed); err != nil {
		return adminapi.L2{}, err
	}
	after, err := n.changes.L2(n.live.L2)
	if err != nil {
		return adminapi.L2{}, err
	}
	if _, err := n.applyL2(before, after); err != nil {
		return adminapi.L2{}, err
	}
	n.log.Info("virtual Ethernet member changed", "segment", req.Segment, "member", member, "op", req.Op)
	return n.L2Status(ctx)
}

// setBridges tells the firewall the segments' bridges, whose bridged
// packets its forward rules let pass.
func (n *Node) setBridges(segs []l2.Segment) error {
	var names []string
	for _, s := range segs {
		names = append(names, s.Bridge)
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
	for _, s := range st {
		seg := adminapi.L2Segment{Name: s.Name, Interface: s.Bridge, Hub: s.Hub, Attach: s.Attach, MTU: s.MTU, MaxMACs: s.MaxMACs, MACs: s.MACs,
			Members: []adminapi.L2Member{}, AttachMACs: s.AttachMACs}
		if s.Attach != "" {
			c := counters(s.AttachStat)
			seg.AttachCounters = &c
		}
		for _, mb := range s.Members {
			seg.Members = append(seg.Members, adminapi.L2Member{Address: mb.Address.String(), Device: mb.Device, VNI: mb.VNI, Up: mb.Up, MACs: mb.MACs, Counters: counters(mb.Counters)})
		}
		out.Segments = append(out.Segments, seg)
	}
	return out, nil
}

func counters(c l2.Counters) adminapi.L2Counters {
	return adminapi.L2Counters{RxFrames: c.RxFrames, RxBytes: c.RxBytes, TxFrames: c.TxFrames, TxBytes: c.TxBytes, RxDropped: c.RxDropped, TxDropped: c.TxDropped}
}
