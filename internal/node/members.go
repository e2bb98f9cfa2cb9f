package node

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node/joins"
	"github.com/tomoe-net/tomoe/internal/node/orgs"
	"github.com/tomoe-net/tomoe/internal/offers"
	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/orgsync"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// Organisations: the node's side of package orgs. The engine verifies
// certificates and documents; the node turns what it decides into policy
// (the directory of members, organisation rules) and into cuts.

// newOrgs makes the organisation engine from the config's [[orgs]].
func (n *Node) newOrgs() (*orgs.Engine, error) {
	cfg := orgs.Config{Self: n.pub, StateFile: n.cfg.OrgStateFile(), Log: n.log.With("component", "orgs"), Clock: n.clock, Done: n.done, ControlPort: offers.ControlPort}
	for i, o := range n.cfg.Orgs {
		cert, err := n.cfg.OrgCert(o)
		if err != nil {
			return nil, fmt.Errorf("orgs[%d].cert: %w", i, err)
		}
		if cert != nil && cert.Node != n.pub {
			return nil, fmt.Errorf("orgs[%d].cert %s: certificate for node %s, not for this node (%s)", i, o.Cert, cert.Node, n.pub)
		}
		cfg.Orgs = append(cfg.Orgs, orgs.Org{Name: o.Name, Key: o.PublicKey, Cert: cert, CertFile: o.Cert, CRLMaxAge: time.Duration(o.CRLMaxAge), AcceptPolicy: o.AcceptPolicy})
	}
	return orgs.New(cfg, orgsNode{n})
}

// onControl dispatches a datagram to the control port: documents to the
// organisation engine, route offers to the Router.
func (n *Node) onControl(src netip.Addr, payload []byte) {
	if len(payload) > 0 && payload[0] == orgsync.Magic {
		if n.orgs.Enabled() {
			n.orgs.OnControl(src, payload)
		}
		return
	}
	n.routes.OnControl(src, payload)
}

// orgsNode is the node as its organisation engine sees it (orgs.Node).
type orgsNode struct{ n *Node }

func (h orgsNode) Inject(pkt []byte) { h.n.wrapper.Inject(pkt) }

func (h orgsNode) PeerKey(a netip.Addr) (identity.PublicKey, bool) {
	h.n.peers.Lock()
	defer h.n.peers.Unlock()
	if p := h.n.peers.ByAddr(a); p != nil {
		return p.Key, true
	}
	return identity.PublicKey{}, false
}

func (h orgsNode) SessionPeers() []netip.Addr {
	h.n.peers.Lock()
	defer h.n.peers.Unlock()
	var out []netip.Addr
	for p := range h.n.peers.All() {
		if p.Active {
			out = append(out, p.Addr)
		}
	}
	return out
}

func (h orgsNode) Cut(keys []identity.PublicKey, reason string) { h.n.cutPeers(keys, reason) }

// Settled ends the wait of a pending peer's packets: judged now that its
// certificate verified, or dropped.
func (h orgsNode) Settled(key identity.PublicKey, verified bool) {
	if verified {
		h.n.wrapper.ReleaseInbound(key.Address())
	} else {
		h.n.wrapper.DropInbound(key.Address())
	}
}

func (h orgsNode) MembersChanged(dir policy.Directory, self []policy.Member) {
	n := h.n
	n.store.SetMembers(dir, policy.Self{Addr: n.Address(), Members: self})
	n.dns.setCertNames(dir, n.Address(), self)
	n.dir.Store(&dir)
	select {
	case n.l2Sync <- struct{}{}: // the segments' certificate members follow
	default:
	}
}

func (h orgsNode) OrgRules(name string, version uint64, rules []policy.Rule) {
	n := h.n
	n.store.SetOrgRules(name, version, rules)
}

func (h orgsNode) SendBridge(bridge identity.PublicKey, payload []byte) error {
	if h.n.client == nil {
		return errors.New("this node joins no bridge")
	}
	return h.n.client.SendOrg(bridge, payload)
}

func (h orgsNode) Bridges() []identity.PublicKey {
	if h.n.client == nil {
		return nil
	}
	return h.n.client.Bridges()
}

func (h orgsNode) Event(kind, peer, detail string) {
	h.n.events.Publish(Event{Type: kind, Peer: peer, Detail: detail})
}

// cutPeers ends the sessions and flows of these peers at once, as a
// revocation through the admin API does: each leaves the device (a
// dynamic one is forgotten) and the flows with it are forgotten. A peer
// comes back only through a new handshake, which the rules then judge.
func (n *Node) cutPeers(keys []identity.PublicKey, reason string) {
	n.routes.Lock()
	defer n.routes.Unlock()
	for _, k := range keys {
		p := n.peers.Get(k)
		if p == nil {
			continue
		}
		n.flushFlowsLocked(p)
		n.wrapper.DropInbound(p.Addr)
		if p.Static {
			n.deactivateLocked(p, reason)
		} else {
			n.forgetLocked(p, reason)
		}
	}
	n.routes.RecomputeLocked()
}

// OrgsArea is the admin API's organisations: GET /v1/orgs, POST
// /v1/orgs/push, and enrolment by request: POST /v1/orgs/join,
// /v1/orgs/requests, /v1/orgs/approve, /v1/orgs/reject.
type OrgsArea struct{ *Node }

// RegisterAPI implements adminapi.Area.
func (a OrgsArea) RegisterAPI(m *adminapi.Mux) {
	m.Get("/v1/orgs", func(ctx context.Context) (any, error) { return a.orgs.Status(), nil })
	adminapi.Post(m, "/v1/orgs/push", func(ctx context.Context, r adminapi.OrgPushRequest) (any, error) { return a.Push(ctx, r) })
	adminapi.Post(m, "/v1/orgs/join", func(ctx context.Context, r adminapi.OrgJoinRequest) (any, error) { return a.Join(ctx, r) })
	adminapi.Post(m, "/v1/orgs/requests", func(ctx context.Context, r adminapi.OrgQueryRequest) (any, error) { return a.Requests(ctx, r) })
	adminapi.Post(m, "/v1/orgs/approve", func(ctx context.Context, r adminapi.OrgApproveRequest) (any, error) { return a.Approve(ctx, r) })
	adminapi.Post(m, "/v1/orgs/reject", func(ctx context.Context, r adminapi.OrgQueryRequest) (any, error) { return a.Reject(ctx, r) })
}

// Join is POST /v1/orgs/join: ask to join an organisation through this
// node's bridges.
func (a OrgsArea) Join(ctx context.Context, req adminapi.OrgJoinRequest) (adminapi.OrgJoinResponse, error) {
	k, err := org.ParsePublicKey(req.Org)
	if err != nil {
		return adminapi.OrgJoinResponse{}, adminapi.BadRequest(err)
	}
	p := joins.JoinParams{Org: k, Name: req.Name, Groups: req.Groups}
	if req.Bridge != "" {
		if p.Bridge, err = identity.ParsePublicKey(req.Bridge); err != nil {
			return adminapi.OrgJoinResponse{}, adminapi.BadRequest(fmt.Errorf("bridge: %w", err))
		}
	}
	res, err := a.orgs.Joins().Join(ctx, p)
	if err != nil {
		return res, adminapi.BadRequest(err)
	}
	return res, nil
}

// Requests is POST /v1/orgs/requests: the join requests the bridges hold
// for an organisation, asked with a query the organisation signed.
func (a OrgsArea) Requests(ctx context.Context, req adminapi.OrgQueryRequest) (adminapi.OrgRequestsResponse, error) {
	res, err := a.orgs.Joins().List(ctx, req.Query)
	if err != nil {
		return res, adminapi.BadRequest(err)
	}
	return res, nil
}

// Approve is POST /v1/orgs/approve: a certificate for a node that asked
// to join, handed to the bridges.
func (a OrgsArea) Approve(ctx context.Context, req adminapi.OrgApproveRequest) (adminapi.OrgDecisionResponse, error) {
	res, err := a.orgs.Joins().Approve(ctx, req.Cert)
	if err != nil {
		return res, adminapi.BadRequest(err)
	}
	return res, nil
}

// Reject is POST /v1/orgs/reject: a rejection the organisation signed.
func (a OrgsArea) Reject(ctx context.Context, req adminapi.OrgQueryRequest) (adminapi.OrgDecisionResponse, error) {
	res, err := a.orgs.Joins().Reject(ctx, req.Query)
	if err != nil {
		return res, adminapi.BadRequest(err)
	}
	return res, nil
}

// Push is POST /v1/orgs/push: a revocation list or organisation policy
// handed to this node, from where it spreads.
func (a OrgsArea) Push(ctx context.Context, req adminapi.OrgPushRequest) (adminapi.OrgPushResponse, error) {
	if !a.orgs.Enabled() {
		return adminapi.OrgPushResponse{}, adminapi.BadRequest(fmt.Errorf("this node trusts no organisation: add an [[orgs]] entry with the organisation's public_key first"))
	}
	res, err := a.orgs.Push(req.Document)
	if err != nil {
		return adminapi.OrgPushResponse{}, adminapi.BadRequest(err)
	}
	return adminapi.OrgPushResponse{Org: res.Org, Kind: res.Kind, Version: res.Version, Held: res.Held, Newer: res.Newer}, nil
}
