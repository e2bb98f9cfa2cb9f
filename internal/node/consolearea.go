package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/fileperm"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node/console"
	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/orgpolicy"
)

// ConsoleArea is the admin API's GET /v1/console: the network as this
// node sees it over the overlay (package console).
type ConsoleArea struct{ *Node }

// RegisterAPI implements adminapi.Area.
func (a ConsoleArea) RegisterAPI(m *adminapi.Mux) {
	m.Get("/v1/console", func(ctx context.Context) (any, error) { return a.View(ctx) })
	adminapi.Post(m, "/v1/console/revoke", func(ctx context.Context, r adminapi.ConsoleRevokeRequest) (any, error) {
		return a.ConsoleRevoke(ctx, r)
	})
	adminapi.Post(m, "/v1/console/policy", func(ctx context.Context, r adminapi.ConsolePolicyRequest) (any, error) {
		return a.ConsolePolicy(ctx, r)
	})
	adminapi.Post(m, "/v1/console/rule", func(ctx context.Context, r adminapi.ConsoleRuleRequest) (any, error) { return a.ConsoleRule(ctx, r) })
	m.Get("/v1/console/requests", func(ctx context.Context) (any, error) { return a.ConsoleRequests(ctx) })
	adminapi.Post(m, "/v1/console/approve", func(ctx context.Context, r adminapi.ConsoleApproveRequest) (any, error) {
		return a.ConsoleApprove(ctx, r)
	})
}

// View is GET /v1/console.
func (a ConsoleArea) View(ctx context.Context) (adminapi.ConsoleView, error) {
	v, err := a.console().View(ctx)
	if err == nil && a.cfg.Console.OrgKey != "" {
		if s, err := a.consoleSigner(); err == nil {
			v.Signs = s.Name()
		} else {
			a.log.Warn("console: organisation key unusable", "err", err)
		}
	}
	return v, err
}

// console returns the node's console, made on first use.
func (n *Node) console() *console.Console {
	n.consoleOnce.Do(func() {
		c := &console.Console{Now: n.clock.Now, Local: n.consoleSnapshot}
		if n.stack != nil {
			c.Dial = n.DialContext // through this node's own stack
		} else {
			c.Dial = (&net.Dialer{}).DialContext
		}
		n.consoleView = c
	})
	return n.consoleView
}

// consoleSnapshot is this node's own part of the view, read in-process.
func (n *Node) consoleSnapshot(ctx context.Context) (console.Snapshot, error) {
	var s console.Snapshot
	var err error
	if s.Status, err = n.StatusArea().Status(ctx); err != nil {
		return s, err
	}
	if s.Rules, err = n.PolicyArea().Policy(ctx); err != nil {
		return s, err
	}
	if r, err := n.RoutesArea().Routes(ctx); err == nil {
		s.Routes = &r
	}
	if n.svc != nil {
		if sv, err := n.ServicesArea().Services(ctx); err == nil {
			s.Services = &sv
		}
	}
	if s.Status.BridgeRole != nil {
		s.BridgeNodes, _ = n.BridgeArea().BridgeNodes(ctx)
	}
	return s, nil
}

// The console's actions (POST /v1/console/*, on the socket only). With
// [console] org_key the node holds an organisation's key: it revokes
// members and signs the organisation's policy, and pushes what it signed
// to itself, from where it spreads. Changing another node's rules needs
// only the write role there.

// consoleSigner loads [console] org_key, checked like a private key.
func (n *Node) consoleSigner() (*org.Signer, error) {
	path := n.cfg.Console.OrgKey
	if path == "" {
		return nil, adminapi.Conflict(errors.New(`this node holds no organisation key: set org_key = "FILE" in [console] (tomoe org init makes one) to revoke members and sign policy from here`))
	}
	if _, err := fileperm.ReadFile(path, "organisation key file", fileperm.Secret); err != nil {
		return nil, err
	}
	return org.LoadSigner(path)
}

// signedPush hands a document the console signed to this node's engine.
func (n *Node) signedPush(text string) (adminapi.ConsoleSignedResponse, error) {
	res, err := n.orgs.Push(text)
	if err != nil {
		return adminapi.ConsoleSignedResponse{}, fmt.Errorf("signed, but this node refused it (is the organisation in [[orgs]]?): %w", err)
	}
	return adminapi.ConsoleSignedResponse{Org: res.Org, Kind: res.Kind, Version: res.Version, Pushed: res.Newer}, nil
}

// ConsoleRevoke is POST /v1/console/revoke.
func (a ConsoleArea) ConsoleRevoke(ctx context.Context, req adminapi.ConsoleRevokeRequest) (adminapi.ConsoleSignedResponse, error) {
	var serials []uint64
	var keys []identity.PublicKey
	switch {
	case req.Serial != "" && req.Key == "":
		s, err := org.ParseSerial(req.Serial)
		if err != nil {
			return adminapi.ConsoleSignedResponse{}, adminapi.BadRequest(err)
		}
		serials = append(serials, s)
	case req.Key != "" && req.Serial == "":
		k, err := identity.ParsePublicKey(req.Key)
		if err != nil {
			return adminapi.ConsoleSignedResponse{}, adminapi.BadRequest(err)
		}
		keys = append(keys, k)
	default:
		return adminapi.ConsoleSignedResponse{}, adminapi.BadRequest(errors.New("give serial (a certificate's, 16 hex digits) or key (a node's public key), one of them"))
	}
	s, err := a.consoleSigner()
	if err != nil {
		return adminapi.ConsoleSignedResponse{}, err
	}
	l, err := s.Revoke(serials, keys, time.Now())
	if err != nil {
		return adminapi.ConsoleSignedResponse{}, err
	}
	a.log.Info("console: revocation list signed", "org", s.Name(), "version", l.Version)
	return a.signedPush(l.Text())
}

// ConsolePolicy is POST /v1/console/policy: the policy's tests run, then
// it is signed and pushed.
func (a ConsoleArea) ConsolePolicy(ctx context.Context, req adminapi.ConsolePolicyRequest) (adminapi.ConsoleSignedResponse, error) {
	c, err := orgpolicy.Compile([]byte(req.Policy))
	if err != nil {
		return adminapi.ConsoleSignedResponse{}, adminapi.BadRequest(err)
	}
	if len(c.Failures) > 0 {
		msgs := make([]string, 0, len(c.Failures))
		for _, f := range c.Failures {
			msgs = append(msgs, f.String())
		}
		return adminapi.ConsoleSignedResponse{}, adminapi.BadRequest(fmt.Errorf("not signed: %s", strings.Join(msgs, "; ")))
	}
	s, err := a.consoleSigner()
	if err != nil {
		return adminapi.ConsoleSignedResponse{}, err
	}
	d, err := c.Sign(s, time.Now())
	if err != nil {
		return adminapi.ConsoleSignedResponse{}, err
	}
	a.log.Info("console: organisation policy signed", "org", s.Name(), "version", d.Version, "rules", len(c.Rules))
	return a.signedPush(d.Text())
}

// ConsoleRule is POST /v1/console/rule: another node's rules, changed
// through its admin API over the overlay with this node's role there.
func (a ConsoleArea) ConsoleRule(ctx context.Context, req adminapi.ConsoleRuleRequest) (any, error) {
	node, err := netip.ParseAddr(req.Node)
	if err != nil || !identity.IsNodeAddress(node) {
		return nil, adminapi.BadRequest(fmt.Errorf("node %q: give the node address of the node to change", req.Node))
	}
	cl := adminapi.NewRemoteClientDial(node.String(), a.console().Dial)
	defer cl.CloseIdle()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var res any
	switch req.Op {
	case "allow":
		res, err = cl.Allow(ctx, adminapi.AllowRequest{From: req.From, To: req.To, Proto: req.Proto, Ports: req.Ports, Until: req.Until})
	case "deny":
		res, err = cl.Deny(ctx, adminapi.DenyRequest{From: req.From, To: req.To, Proto: req.Proto, Ports: req.Ports, Until: req.Until})
	case "revoke":
		res, err = cl.Revoke(ctx, adminapi.RevokeRequest{From: req.From})
	case "undeny":
		res, err = cl.Undeny(ctx, adminapi.UndenyRequest{From: req.From})
	default:
		return nil, adminapi.BadRequest(fmt.Errorf("op %q: allow, deny, revoke or undeny", req.Op))
	}
	if err != nil {
		var ae *adminapi.APIError
		if errors.As(err, &ae) {
			return nil, &adminapi.RequestError{Code: ae.Code, Err: fmt.Errorf("%s answered: %s", node, ae.Message)}
		}
		return nil, adminapi.Conflict(fmt.Errorf("%s: %v", node, err))
	}
	a.log.Info("console: rule changed on another node", "node", node, "op", req.Op, "from", req.From)
	return res, nil
}

// consoleTTL is the lifetime of certificates the console signs.
const consoleTTL = 90 * 24 * time.Hour

// ConsoleRequests is GET /v1/console/requests: the join requests the
// bridges hold for the console's organisation, asked with a query this
// node signs with its key.
func (a ConsoleArea) ConsoleRequests(ctx context.Context) (adminapi.OrgRequestsResponse, error) {
	s, err := a.consoleSigner()
	if err != nil {
		return adminapi.OrgRequestsResponse{}, err
	}
	q, err := s.SignJoinQuery(org.JoinList, a.pub, identity.PublicKey{}, time.Now())
	if err != nil {
		return adminapi.OrgRequestsResponse{}, err
	}
	return OrgsArea(a).Requests(ctx, adminapi.OrgQueryRequest{Query: q.Text()})
}

// ConsoleApprove is POST /v1/console/approve.
func (a ConsoleArea) ConsoleApprove(ctx context.Context, req adminapi.ConsoleApproveRequest) (adminapi.OrgDecisionResponse, error) {
	k, err := identity.ParsePublicKey(req.Node)
	if err != nil {
		return adminapi.OrgDecisionResponse{}, adminapi.BadRequest(err)
	}
	name, groups := req.Name, req.Groups
	if name == "" {
		list, err := a.ConsoleRequests(ctx)
		if err != nil {
			return adminapi.OrgDecisionResponse{}, err
		}
		for _, r := range list.Requests {
			if r.Node == k.String() {
				name = r.Name
				if groups == nil {
					groups = r.Groups
				}
			}
		}
		if name == "" {
			return adminapi.OrgDecisionResponse{}, adminapi.NotFound(fmt.Errorf("no join request from %s at the bridges: give its name", k.ShortString()))
		}
	}
	s, err := a.consoleSigner()
	if err != nil {
		return adminapi.OrgDecisionResponse{}, err
	}
	c, err := s.SignCert(org.CertRequest{Node: k, Name: name, Groups: groups, TTL: consoleTTL}, time.Now())
	if err != nil {
		return adminapi.OrgDecisionResponse{}, adminapi.BadRequest(err)
	}
	a.log.Info("console: certificate signed for a join request", "node", k.ShortString(), "name", name, "serial", c.SerialString())
	return OrgsArea(a).Approve(ctx, adminapi.OrgApproveRequest{Cert: c.Text()})
}
