package node

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node/localsvc"
	"github.com/tomoe-net/tomoe/internal/node/peers"
	"github.com/tomoe-net/tomoe/internal/node/routing"
	"github.com/tomoe-net/tomoe/internal/policy"
	"github.com/tomoe-net/tomoe/internal/tunwrap"
	"github.com/tomoe-net/tomoe/internal/webui"
)

// The admin API, area by area (adminapi.Area): each area is a view of the
// node that registers its own endpoints, and Go callers (tests, the demo)
// reach the same code through the node's accessors.
type (
	// StatusArea is GET /v1/status, GET /v1/peers and POST /v1/ping.
	StatusArea struct{ *Node }
	// PolicyArea is GET /v1/policy, POST /v1/policy/allow and revoke.
	PolicyArea struct{ *Node }
	// BridgeArea is the bridge role's /v1/bridge/... (409 on a node that is
	// not a bridge).
	BridgeArea struct{ *Node }
)

// StatusArea returns the node's status, peers and ping.
func (n *Node) StatusArea() StatusArea { return StatusArea{n} }

// PolicyArea returns the node's policy API.
func (n *Node) PolicyArea() PolicyArea { return PolicyArea{n} }

// RoutesArea returns the node's routes API: GET /v1/routes and POST
// /v1/routes/change.
func (n *Node) RoutesArea() *routing.Router { return n.routes }

// ServicesArea returns the node's services API: GET /v1/services and POST
// /v1/services/expose.
func (n *Node) ServicesArea() *localsvc.Set { return n.svc }

// BridgeArea returns the node's bridge-role API.
func (n *Node) BridgeArea() BridgeArea { return BridgeArea{n} }

// apiAreas are the areas the admin socket serves.
func (n *Node) apiAreas() []adminapi.Area {
	return []adminapi.Area{n.StatusArea(), n.PolicyArea(), DevicesArea{n}, n.RoutesArea(), n.ServicesArea(), n.BridgeArea(), OrgsArea{n}, ConsoleArea{n}, ReloadArea{n}, L2Area{n}, webui.Area{Server: n.ui},
		adminapi.Events(n.events.Subscribe), adminapi.Metrics{Gatherer: n.Metrics()}}
}

// RegisterAPI implements adminapi.Area.
func (a StatusArea) RegisterAPI(m *adminapi.Mux) {
	m.Get("/v1/status", func(ctx context.Context) (any, error) { return a.Status(ctx) })
	m.Get("/v1/peers", func(ctx context.Context) (any, error) { return a.Peers(ctx) })
	adminapi.Post(m, "/v1/ping", func(ctx context.Context, r adminapi.PingRequest) (any, error) { return a.Ping(ctx, r) })
}

// RegisterAPI implements adminapi.Area.
func (a PolicyArea) RegisterAPI(m *adminapi.Mux) {
	m.Get("/v1/policy", func(ctx context.Context) (any, error) { return a.Policy(ctx) })
	adminapi.Post(m, "/v1/policy/allow", func(ctx context.Context, r adminapi.AllowRequest) (any, error) { return a.Allow(ctx, r) })
	adminapi.Post(m, "/v1/policy/revoke", func(ctx context.Context, r adminapi.RevokeRequest) (any, error) { return a.Revoke(ctx, r) })
	adminapi.Post(m, "/v1/policy/deny", func(ctx context.Context, r adminapi.DenyRequest) (any, error) { return a.Deny(ctx, r) })
	adminapi.Post(m, "/v1/policy/undeny", func(ctx context.Context, r adminapi.UndenyRequest) (any, error) { return a.Undeny(ctx, r) })
	adminapi.Post(m, "/v1/policy/explain", func(ctx context.Context, r adminapi.ExplainRequest) (any, error) { return a.Explain(ctx, r) })
	adminapi.Post(m, "/v1/policy/test", func(ctx context.Context, r adminapi.TestRequest) (any, error) { return a.Test(ctx, r) })
}

// RegisterAPI implements adminapi.Area.
func (a BridgeArea) RegisterAPI(m *adminapi.Mux) {
	m.Get("/v1/bridge/nodes", func(ctx context.Context) (any, error) { return a.BridgeNodes(ctx) })
	adminapi.Post(m, "/v1/bridge/tokens", func(ctx context.Context, r adminapi.TokenRequest) (any, error) { return a.CreateToken(ctx, r) })
	adminapi.Post(m, "/v1/bridge/revoke", func(ctx context.Context, r adminapi.BridgeRevokeRequest) (any, error) { return a.BridgeRevoke(ctx, r) })
}

// refresh reads the device's per-peer counters into the peer records and
// publishes handshake, up and down events.
func (n *Node) refresh(ctx context.Context) {
	stats, err := n.engine.Stats()
	if err != nil {
		n.log.Warn("cannot read device state", "err", err)
		return
	}
	now := time.Now()
	var up []*peers.Peer
	defer func() {
		// Greeting sends this node's offer: that takes the routes state,
		// whose lock comes before mu.
		if len(up) == 0 {
			return
		}
		n.routes.Lock()
		defer n.routes.Unlock()
		for _, p := range up {
			if n.peers.Get(p.Key) == p && p.Up && !p.Device && !n.closing.Load() {
				n.routes.GreetLocked(p)
			}
		}
	}()
	n.peers.Lock()
	defer n.peers.Unlock()
	for _, s := range stats {
		p := n.peers.Get(s.Key)
		if p == nil {
			continue
		}
		p.RX, p.TX = s.RxBytes, s.TxBytes
		if !s.LastHandshake.IsZero() && s.LastHandshake.After(p.LastHS) {
			p.LastHS = s.LastHandshake
			n.events.Publish(Event{Type: EventHandshake, Peer: p.Key.String(), Address: p.Addr.String(), Endpoint: n.endpointOf(p)})
			if !p.Up {
				p.Up = true
				n.log.Info("peer up", "peer", p.Key.ShortString(), "addr", p.Addr, "endpoint", n.endpointOf(p))
				n.events.Publish(Event{Type: EventPeerUp, Peer: p.Key.String(), Address: p.Addr.String(), Endpoint: n.endpointOf(p)})
				up = append(up, p)
			}
		}
	}
	for p := range n.peers.All() {
		if p.Up && (!p.Active || now.Sub(p.LastHS) > sessionLifetime) {
			p.Up = false
			n.log.Info("peer down", "peer", p.Key.ShortString(), "addr", p.Addr)
			n.events.Publish(Event{Type: EventPeerDown, Peer: p.Key.String(), Address: p.Addr.String()})
		}
	}
}

// endpointOf returns where packets to p go: the Bind's current direct path
// for an active peer, else the configured or last observed endpoint.
func (n *Node) endpointOf(p *peers.Peer) string {
	if p.Active {
		if ep := n.bind.Peer(p.Key); ep != nil && ep.Direct().IsValid() {
			return ep.Direct().String()
		}
	}
	if p.Endpoint.IsValid() {
		return p.Endpoint.String()
	}
	if p.Host != "" {
		return fmt.Sprintf("%s:%d", p.Host, p.Port)
	}
	return ""
}

// Status is GET /v1/status.
func (a StatusArea) Status(ctx context.Context) (adminapi.Status, error) {
	n := a.Node
	peers, err := a.Peers(ctx)
	if err != nil {
		return adminapi.Status{}, err
	}
	pub := n.pub
	name := ""
	if n.stack == nil {
		name, _ = n.wrapper.Name()
	}
	ipv4 := ""
	if n.ipv4.IsValid() {
		ipv4 = n.ipv4.String()
	}
	st := adminapi.Status{
		PublicKey:  pub.String(),
		Address:    pub.Address().String(),
		SitePrefix: pub.SitePrefix().String(),
		IPv4:       ipv4,
		Mode:       n.cfg.TUN.Mode.String(),
		Interface:  name,
		MTU:        n.cfg.TUN.MTU,
		ListenPort: int(n.engine.ListenPort()),
		Version:    n.version,
		StartedAt:  n.started.UTC().Format(time.RFC3339),
		PeerCount:  len(peers),
		Peers:      peers,
		Orgs:       n.orgs.Status(),
		Counters:   n.counters(),
		Bridges:    n.bridgeStatus(),
		BridgeRole: n.bridgeRole(),
	}
	st.DNS, st.DNSResolved = n.dnsAddr()
	st.RunsAs = runsAs()
	return st, nil
}

func (n *Node) counters() adminapi.Counters {
	ws := n.wrapper.Stats()
	local, remote := n.filter.Conntrack().Counts()
	return adminapi.Counters{
		TxPackets:       ws.OutPackets.Load(),
		RxPackets:       ws.InPackets.Load(),
		Denied:          ws.Dropped[policy.DropDenied].Load(),
		Spoofed:         ws.Dropped[policy.DropSpoofed].Load(),
		NotLocal:        ws.Dropped[policy.DropNotLocal].Load(),
		Malformed:       ws.Dropped[policy.DropMalformed].Load(),
		Held:            ws.Held.Load(),
		Unreachable:     ws.Unreachable.Load(),
		Hairpinned:      ws.Hairpinned.Load(),
		HandshakeDenied: n.bind.Stats().InitiationsDenied.Load(),
		Flows:           local,

		HandshakeLimited:  n.bind.Stats().InitiationsLimited.Load(),
		HandshakeReplayed: n.bind.Stats().InitiationsReplayed.Load(),
		HandshakeCookies:  n.bind.Stats().CookiesSent.Load(),

		ControlMalformed: n.routes.ControlMalformed(),
		RemoteFlows:      remote,
		TableFull:        ws.Dropped[policy.DropTableFull].Load(),
		FlowQuota:        ws.Dropped[policy.DropFlowQuota].Load(),
	}
}

// Peers is GET /v1/peers: every known peer, active or not.
func (a StatusArea) Peers(ctx context.Context) ([]adminapi.Peer, error) {
	n := a.Node
	n.refresh(ctx)
	m := n.store.Matcher()
	n.peers.Lock()
	defer n.peers.Unlock()
	out := make([]adminapi.Peer, 0, n.peers.Len())
	for p := range n.peers.All() {
		ap := adminapi.Peer{
			PublicKey:           p.Key.String(),
			Address:             p.Addr.String(),
			Name:                p.Name,
			Path:                "direct",
			RxBytes:             p.RX,
			TxBytes:             p.TX,
			Static:              p.Static,
			Active:              p.Active,
			Up:                  p.Up,
			AllowedInbound:      m.AllowsAny(p.Addr),
			DeniedPackets:       n.filter.Denied(p.Addr),
			PersistentKeepalive: int(p.Keepalive / time.Second),
		}
		for _, mb := range n.orgs.Members(p.Addr) {
			if ap.CertName == "" {
				ap.CertName = mb.Name
			}
			for _, g := range mb.Groups {
				ap.Groups = append(ap.Groups, mb.Org+"/"+g)
			}
			ap.Memberships = append(ap.Memberships, adminapi.Membership{Org: mb.Org, Name: mb.Name, Groups: mb.Groups, Serial: mb.Serial, Expires: mb.Expires.UTC().Format(time.RFC3339)})
		}
		if p.Site {
			s := p.Key.SitePrefix().String()
			ap.SitePrefix = &s
		}
		if ep := n.endpointOf(p); ep != "" {
			ap.Endpoint = &ep
		}
		if p.Active {
			if path := n.bind.PathOf(p.Key); path.Kind == "relay" {
				ap.Path = "relay"
				ap.Bridge = &path.Relay
			}
		}
		if !p.LastHS.IsZero() {
			t := p.LastHS.UTC().Format(time.RFC3339)
			ap.LastHandshake = &t
		}
		out = append(out, ap)
	}
	slices.SortFunc(out, func(a, b adminapi.Peer) int { return strings.Compare(a.Address, b.Address) })
	return out, nil
}

func apiRule(e policy.Entry) adminapi.Rule {
	r := adminapi.Rule{Action: "allow", From: e.From.String(), To: e.To.String(), Proto: e.Proto.String(), Ports: e.Ports.String(), Source: e.Source, Origin: e.Origin}
	if e.Deny {
		r.Action = "deny"
	}
	if e.From.Addr.IsValid() {
		a := e.From.Addr.String()
		r.Address = &a
	}
	if !e.Until.IsZero() {
		t := e.Until.UTC().Format(time.RFC3339)
		r.Until = &t
	}
	if !e.Added.IsZero() {
		t := e.Added.UTC().Format(time.RFC3339)
		r.Added = &t
	}
	return r
}

// Policy is GET /v1/policy.
func (a PolicyArea) Policy(ctx context.Context) ([]adminapi.Rule, error) {
	n := a.Node
	entries := n.store.Rules()
	out := make([]adminapi.Rule, len(entries))
	for i, e := range entries {
		out[i] = apiRule(e)
	}
	return out, nil
}

// Allow is POST /v1/policy/allow.
func (a PolicyArea) Allow(ctx context.Context, req adminapi.AllowRequest) (adminapi.AllowResponse, error) {
	n := a.Node
	rule, err := policy.ParseRuleSpec(policy.RuleSpec{From: req.From, To: req.To, Proto: req.Proto, Ports: req.Ports, Until: req.Until})
	if err != nil {
		return adminapi.AllowResponse{}, adminapi.BadRequest(err)
	}
	now := time.Now()
	if rule.Expired(now) {
		return adminapi.AllowResponse{}, adminapi.BadRequest(fmt.Errorf("until %s is not in the future", req.Until))
	}
	added, err := n.store.Allow(rule, now)
	if err != nil {
		return adminapi.AllowResponse{}, fmt.Errorf("save policy: %w", err)
	}
	n.knownKeysChanged()
	n.routes.Recompute() // "*" accept rules follow the policy
	entry := policy.Entry{Rule: rule, Source: policy.SourceAPI, Origin: policy.SourceAPI, Added: now}
	if added {
		n.log.Info("policy: rule added", "rule", rule.String())
		n.events.Publish(Event{Type: EventPolicyAllow, Address: addrOf(rule.From), Detail: rule.String()})
	}
	return adminapi.AllowResponse{Added: added, Rule: apiRule(entry)}, nil
}

func addrOf(id policy.Identity) string {
	if id.Any {
		return ""
	}
	return id.Addr.String()
}

// Revoke is POST /v1/policy/revoke. A revoked node loses its session at
// once, even if another rule still admits it for something else: it
// leaves the WireGuard device (its keys are erased; a dynamic peer is
// forgotten) and the flows this node opened with it are forgotten, so
// established connections stop in both directions. It may come back only
// through a new handshake, and the remaining rules then judge its traffic
// afresh: flows it opened admit nothing by themselves (policy.Conntrack).
// Revoking "*" cuts only the peers that no remaining rule admits; the
// others keep their sessions, and their packets meet the remaining rules.
func (a PolicyArea) Revoke(ctx context.Context, req adminapi.RevokeRequest) (adminapi.RevokeResponse, error) {
	n := a.Node
	id, err := policy.ParseIdentity(req.From)
	if err != nil {
		return adminapi.RevokeResponse{}, adminapi.BadRequest(err)
	}
	removed, err := n.store.Revoke(id, time.Now())
	if errors.Is(err, policy.ErrNoRule) {
		return adminapi.RevokeResponse{}, adminapi.NotFound(err)
	}
	if err != nil {
		return adminapi.RevokeResponse{}, fmt.Errorf("save policy: %w", err)
	}
	m := n.store.Matcher()
	n.knownKeysChanged()
	resp := adminapi.RevokeResponse{PeersCut: []string{}}
	for _, e := range removed {
		resp.Removed = append(resp.Removed, apiRule(e))
	}
	n.routes.Lock()
	cut := func(a netip.Addr) bool { return id.Covers(a) && !(id.Any && m.AllowsAny(a)) }
	for p := range n.peers.All() {
		if !cut(p.Addr) {
			n.flushDeviceFlowsLocked(p, cut)
			continue
		}
		n.flushFlowsLocked(p)
		if p.Active {
			resp.PeersCut = append(resp.PeersCut, p.Key.String())
		}
		if p.Static {
			n.deactivateLocked(p, "revoked")
		} else {
			n.forgetLocked(p, "revoked")
		}
	}
	n.routes.RecomputeLocked() // "*" accept rules follow the policy
	n.routes.Unlock()
	n.log.Info("policy: revoked", "from", id.String(), "rules", len(removed), "sessions_cut", len(resp.PeersCut))
	n.events.Publish(Event{Type: EventPolicyRevoke, Address: addrOf(id), Detail: fmt.Sprintf("%d rules for %s removed, %d sessions cut", len(removed), id, len(resp.PeersCut))})
	return resp, nil
}

// flushFlowsLocked forgets every flow with p: its node address, its site
// prefix, the devices it hosts and the routes it owns. The route lock is
// held.
func (n *Node) flushFlowsLocked(p *peers.Peer) {
	site := p.Key.SitePrefix()
	n.filter.Conntrack().Flush(func(a netip.Addr) bool {
		return a == p.Addr || site.Contains(a) || slices.Contains(p.Devices, a) ||
			(!identity.IsNodeAddress(a) && !identity.IsSiteAddress(a) && n.routes.OwnerOf(a) == p)
	})
}

// flushDeviceFlowsLocked forgets every flow with the devices p hosts that
// lost reports true for: p's own session stays, its devices are judged on
// their own. The route lock is held.
func (n *Node) flushDeviceFlowsLocked(p *peers.Peer, lost func(netip.Addr) bool) {
	var devs []netip.Addr
	for _, d := range p.Devices {
		if lost(d) {
			devs = append(devs, d)
		}
	}
	if len(devs) > 0 {
		n.filter.Conntrack().Flush(func(a netip.Addr) bool { return slices.Contains(devs, a) })
	}
}

// Ping is POST /v1/ping.
func (a StatusArea) Ping(ctx context.Context, req adminapi.PingRequest) (adminapi.PingResponse, error) {
	n := a.Node
	dst, err := netip.ParseAddr(strings.Trim(req.Address, "[]"))
	if err != nil {
		return adminapi.PingResponse{}, adminapi.BadRequest(fmt.Errorf("address %q: not an IP address", req.Address))
	}
	if !identity.IsNodeAddress(dst) && !identity.IsSiteAddress(dst) {
		return adminapi.PingResponse{}, adminapi.BadRequest(fmt.Errorf("address %s: not an overlay address (fc00::/8 node address or 0300::/8 site address)", dst))
	}
	if dst == n.Address() {
		return adminapi.PingResponse{}, adminapi.BadRequest(fmt.Errorf("address %s: that is this node's own address", dst))
	}
	size := req.Size
	if size == 0 {
		size = 56
	}
	if size < 8 || size > tunwrap.MaxPingPayload {
		return adminapi.PingResponse{}, adminapi.BadRequest(fmt.Errorf("size %d: must be 8..%d", size, tunwrap.MaxPingPayload))
	}
	timeout := time.Duration(req.TimeoutMs) * time.Millisecond
	if timeout == 0 {
		timeout = 3 * time.Second
	}
	if timeout < 0 || timeout > time.Minute {
		return adminapi.PingResponse{}, adminapi.BadRequest(fmt.Errorf("timeout_ms %d: must be 1..60000", req.TimeoutMs))
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rtt, err := n.wrapper.Ping(ctx, dst, size)
	resp := adminapi.PingResponse{Address: dst.String()}
	switch {
	case err == nil:
		resp.RTTMs = float64(rtt.Microseconds()) / 1000
	case errors.Is(err, context.DeadlineExceeded):
		resp.Error = "timeout"
	default:
		resp.Error = err.Error()
	}
	return resp, nil
}

// Subscribe follows the node's events (GET /v1/events).
func (n *Node) Subscribe() (<-chan Event, func()) { return n.events.Subscribe() }
