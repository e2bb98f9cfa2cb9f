// Package console is the aggregated view of a network: starting from the
// node it runs in, it finds the other nodes (its peers, the nodes of the
// bridges it can read, and theirs in turn), asks each one's admin API over
// the overlay for its status, policy, routes and services, and computes
// from the policies it read who may reach whom.
//
// It trusts nothing it is told beyond what it shows: a node that does not
// answer is "unreachable since" the first failure after it last answered
// (never silently missing), one that refuses is "refused". What it may
// read is what each node's [[admin.allow]] gives this node.
package console

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// Limits of one view.
const (
	MaxNodes    = 512             // nodes one view holds
	parallel    = 16              // nodes asked at once
	nodeTimeout = 4 * time.Second // for all of one node's answers
)

// Snapshot is what one node's admin API says of it.
type Snapshot struct {
	Status      adminapi.Status
	Rules       []adminapi.Rule
	Routes      *adminapi.Routes
	Services    *adminapi.Services
	BridgeNodes []adminapi.BridgeNode
}

// Console builds views. Local reads the node it runs in; Dial connects
// through the overlay (nil: the system's sockets). Safe for concurrent
// use; it remembers since when each node is in its state.
type Console struct {
	Local func(ctx context.Context) (Snapshot, error)
	Dial  func(ctx context.Context, network, address string) (net.Conn, error)
	Now   func() time.Time

	mu    sync.Mutex // guards seen
	seen  map[netip.Addr]*seen
	cache map[netip.Addr]*adminapi.Client
}

type seen struct {
	state    string
	since    time.Time
	lastSeen time.Time
}

func (c *Console) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// fetched is one node's answers.
type fetched struct {
	addr    netip.Addr
	foundBy string
	snap    Snapshot
	err     error
	refused bool
}

// View finds the nodes and asks each of them.
func (c *Console) View(ctx context.Context) (adminapi.ConsoleView, error) {
	self, err := c.Local(ctx)
	if err != nil {
		return adminapi.ConsoleView{}, err
	}
	selfAddr, err := netip.ParseAddr(self.Status.Address)
	if err != nil {
		return adminapi.ConsoleView{}, fmt.Errorf("own status: %w", err)
	}
	results := map[netip.Addr]*fetched{selfAddr: {addr: selfAddr, foundBy: "self", snap: self}}
	order := []netip.Addr{selfAddr}
	truncated := false
	queue := c.found(results[selfAddr], results, &order, &truncated)
	for len(queue) > 0 {
		batch := queue
		queue = nil
		var wg sync.WaitGroup
		sem := make(chan struct{}, parallel)
		for _, f := range batch {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c.fetch(ctx, f)
			}()
		}
		wg.Wait()
		for _, f := range batch {
			if f.err == nil {
				queue = append(queue, c.found(f, results, &order, &truncated)...)
			}
		}
	}
	view := adminapi.ConsoleView{Generated: c.now().UTC().Format(time.RFC3339), Nodes: []adminapi.ConsoleNode{}, Matrix: []adminapi.ConsoleCell{}, Truncated: truncated}
	members := memberships(results)
	for _, a := range order {
		view.Nodes = append(view.Nodes, c.node(results[a], a == selfAddr, members))
	}
	view.Matrix = matrix(order, results, members)
	return view, nil
}

// found adds the nodes f names (its peers, its bridges, a bridge's
// registered nodes) that are not known yet, and returns them.
func (c *Console) found(f *fetched, results map[netip.Addr]*fetched, order *[]netip.Addr, truncated *bool) []*fetched {
	var out []*fetched
	add := func(s, by string) {
		a, err := netip.ParseAddr(s)
		if err != nil || !identity.IsNodeAddress(a) || results[a] != nil {
			return
		}
		if len(results) >= MaxNodes {
			*truncated = true
			return
		}
		n := &fetched{addr: a, foundBy: by}
		results[a] = n
		*order = append(*order, a)
		out = append(out, n)
	}
	from := f.snap.Status.Address
	for _, p := range f.snap.Status.Peers {
		add(p.Address, "peer of "+from)
	}
	for _, b := range f.snap.Status.Bridges {
		if k, err := identity.ParsePublicKey(b.PublicKey); err == nil {
			add(k.Address().String(), "bridge of "+from)
		}
	}
	for _, n := range f.snap.BridgeNodes {
		add(n.Address, "registered at bridge "+from)
	}
	return out
}

func (c *Console) client(a netip.Addr) *adminapi.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cache == nil {
		c.cache = make(map[netip.Addr]*adminapi.Client)
	}
	cl := c.cache[a]
	if cl == nil {
		cl = adminapi.NewRemoteClientDial(a.String(), c.Dial)
		c.cache[a] = cl
	}
	return cl
}

// fetch asks f's node for its status, then its policy, routes, services
// and (on a bridge) registered nodes. Only the status decides whether it
// is online; the other answers are shown when they come.
func (c *Console) fetch(ctx context.Context, f *fetched) {
	ctx, cancel := context.WithTimeout(ctx, nodeTimeout)
	defer cancel()
	cl := c.client(f.addr)
	st, err := cl.Status(ctx)
	if err != nil {
		var ae *adminapi.APIError
		f.refused = errors.As(err, &ae) && ae.Code == 403
		if errors.Is(err, context.DeadlineExceeded) {
			// What a node that drops this one's packets looks like, too.
			err = fmt.Errorf("no answer within %v: is it up, and does its [[admin.allow]] list this node?", nodeTimeout)
		}
		f.err = err
		return
	}
	f.snap.Status = st
	if r, err := cl.Policy(ctx); err == nil {
		f.snap.Rules = r
	}
	if r, err := cl.Routes(ctx); err == nil {
		f.snap.Routes = &r
	}
	if s, err := cl.Services(ctx); err == nil {
		f.snap.Services = &s
	}
	if st.BridgeRole != nil {
		if n, err := cl.BridgeNodes(ctx); err == nil {
			f.snap.BridgeNodes = n
		}
	}
}

// node renders f, updating since when its state began.
func (c *Console) node(f *fetched, self bool, members map[netip.Addr][]adminapi.Membership) adminapi.ConsoleNode {
	now := c.now()
	state := "online"
	switch {
	case f.refused:
		state = "refused"
	case f.err != nil:
		state = "unreachable"
	}
	c.mu.Lock()
	if c.seen == nil {
		c.seen = make(map[netip.Addr]*seen)
	}
	s := c.seen[f.addr]
	if s == nil {
		s = &seen{state: state, since: now}
		c.seen[f.addr] = s
	}
	if s.state != state {
		s.state, s.since = state, now
	}
	if state == "online" {
		s.lastSeen = now
	}
	since, last := s.since, s.lastSeen
	c.mu.Unlock()

	st := f.snap.Status
	n := adminapi.ConsoleNode{
		Address: f.addr.String(), PublicKey: st.PublicKey, Self: self, State: state, FoundBy: f.foundBy,
		Since: since.UTC().Format(time.RFC3339), Memberships: members[f.addr],
		Version: st.Version, Mode: st.Mode, StartedAt: st.StartedAt, Peers: st.PeerCount,
		Rules: f.snap.Rules, Routes: f.snap.Routes, Services: f.snap.Services, Orgs: st.Orgs,
	}
	if !last.IsZero() {
		n.LastSeen = last.UTC().Format(time.RFC3339)
	}
	if f.err != nil {
		n.Error = f.err.Error()
	}
	for _, p := range st.Peers {
		if p.Up && p.Path == "direct" {
			n.Direct++
		} else if p.Up {
			n.Relayed++
		}
	}
	if len(n.Memberships) > 0 {
		n.Name = n.Memberships[0].Name
	}
	return n
}

// memberships are each node's verified memberships as the nodes that
// answered report them (a peer's certificate is verified by that peer's
// peers; a node's own certificates by itself are not counted).
func memberships(results map[netip.Addr]*fetched) map[netip.Addr][]adminapi.Membership {
	out := map[netip.Addr][]adminapi.Membership{}
	for _, f := range results {
		for _, p := range f.snap.Status.Peers {
			a, err := netip.ParseAddr(p.Address)
			if err != nil || len(p.Memberships) == 0 {
				continue
			}
			for _, m := range p.Memberships {
				if !slices.ContainsFunc(out[a], func(x adminapi.Membership) bool { return x.Org == m.Org && x.Serial == m.Serial }) {
					out[a] = append(out[a], m)
				}
			}
		}
	}
	for a := range out {
		slices.SortFunc(out[a], func(x, y adminapi.Membership) int { return strings.Compare(x.Org, y.Org) })
	}
	return out
}

// matrix says, for every destination whose rules were read, what each
// other node may open there: the rules for the destination itself ("" or
// "self"; forwarded prefixes are shown in its rules, not here) whose
// source matches, with the memberships the destination verified for it
// (or, if it has none for it, those others verified).
func matrix(order []netip.Addr, results map[netip.Addr]*fetched, members map[netip.Addr][]adminapi.Membership) []adminapi.ConsoleCell {
	var out []adminapi.ConsoleCell
	for _, to := range order {
		dst := results[to]
		if dst.err != nil || dst.snap.Rules == nil {
			continue
		}
		seenBy := map[netip.Addr][]policy.Member{}
		for _, p := range dst.snap.Status.Peers {
			if a, err := netip.ParseAddr(p.Address); err == nil {
				seenBy[a] = toMembers(p.Memberships)
			}
		}
		for _, from := range order {
			if from == to {
				continue
			}
			ms, ok := seenBy[from]
			if !ok || len(ms) == 0 {
				ms = toMembers(members[from])
			}
			cell := adminapi.ConsoleCell{From: from.String(), To: to.String(), Allow: []string{}}
			for _, r := range dst.snap.Rules {
				if r.To != "" && r.To != "self" {
					continue
				}
				id, err := policy.ParseIdentity(r.From)
				if err != nil || !id.Matches(from, ms) {
					continue
				}
				what := r.Proto
				if r.Ports != "" {
					what += " " + r.Ports
				}
				if r.Action == "deny" {
					cell.Deny = appendNew(cell.Deny, what)
				} else {
					cell.Allow = appendNew(cell.Allow, what)
				}
			}
			out = append(out, cell)
		}
	}
	return out
}

func toMembers(ms []adminapi.Membership) []policy.Member {
	out := make([]policy.Member, 0, len(ms))
	for _, m := range ms {
		groups := make([]string, 0, len(m.Groups))
		for _, g := range m.Groups {
			// The API shows groups as they are in the certificate.
			groups = append(groups, strings.TrimPrefix(g, m.Org+"/"))
		}
		out = append(out, policy.Member{Org: m.Org, Name: m.Name, Groups: groups})
	}
	return out
}

func appendNew(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}
