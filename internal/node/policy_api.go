package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// Deny is POST /v1/policy/deny. The new deny rule applies to packets at
// once; sessions stay (replies to this node's own flows still pass).
func (a PolicyArea) Deny(ctx context.Context, req adminapi.DenyRequest) (adminapi.DenyResponse, error) {
	n := a.Node
	rule, err := policy.ParseRuleSpec(policy.RuleSpec{Deny: true, From: req.From, To: req.To, Proto: req.Proto, Ports: req.Ports, Until: req.Until})
	if err != nil {
		return adminapi.DenyResponse{}, adminapi.BadRequest(err)
	}
	now := time.Now()
	if rule.Expired(now) {
		return adminapi.DenyResponse{}, adminapi.BadRequest(fmt.Errorf("until %s is not in the future", req.Until))
	}
	added, err := n.store.Deny(rule, now)
	if err != nil {
		return adminapi.DenyResponse{}, fmt.Errorf("save policy: %w", err)
	}
	n.knownKeysChanged()
	n.routes.Recompute()
	if added {
		n.log.Info("policy: deny rule added", "rule", rule.String())
	}
	entry := policy.Entry{Rule: rule, Source: policy.SourceAPI, Origin: policy.SourceAPI, Added: now}
	return adminapi.DenyResponse{Added: added, Rule: apiRule(entry)}, nil
}

// Undeny is POST /v1/policy/undeny.
func (a PolicyArea) Undeny(ctx context.Context, req adminapi.UndenyRequest) (adminapi.UndenyResponse, error) {
	n := a.Node
	id, err := policy.ParseIdentity(req.From)
	if err != nil {
		return adminapi.UndenyResponse{}, adminapi.BadRequest(err)
	}
	removed, err := n.store.Undeny(id, time.Now())
	if errors.Is(err, policy.ErrNoRule) {
		return adminapi.UndenyResponse{}, adminapi.NotFound(err)
	}
	if err != nil {
		return adminapi.UndenyResponse{}, fmt.Errorf("save policy: %w", err)
	}
	n.knownKeysChanged()
	n.routes.Recompute()
	out := adminapi.UndenyResponse{Removed: []adminapi.Rule{}}
	for _, e := range removed {
		out.Removed = append(out.Removed, apiRule(e))
	}
	n.log.Info("policy: deny rules removed", "from", id.String(), "count", len(removed))
	return out, nil
}

// Explain is POST /v1/policy/explain.
func (a PolicyArea) Explain(ctx context.Context, req adminapi.ExplainRequest) (adminapi.ExplainResponse, error) {
	t := policy.Expectation{From: req.From, To: req.To, Groups: req.Groups, Proto: req.Proto, Port: req.Port, Expect: "allow"}
	d, err := a.evalTest(t)
	if err != nil {
		return adminapi.ExplainResponse{}, adminapi.BadRequest(err)
	}
	out := adminapi.ExplainResponse{Decision: "deny", Reason: d.Reason}
	if d.Allowed {
		out.Decision = "allow"
	}
	if d.Entry != nil {
		r := apiRule(*d.Entry)
		out.Rule, out.Source = &r, d.Entry.Source
	}
	return out, nil
}

// Test is POST /v1/policy/test.
func (a PolicyArea) Test(ctx context.Context, req adminapi.TestRequest) (adminapi.TestResponse, error) {
	tests := make([]policy.Expectation, len(req.Tests))
	for i, t := range req.Tests {
		tests[i] = policy.Expectation{From: t.From, To: t.To, Groups: t.Groups, Proto: t.Proto, Port: t.Port, Expect: t.Expect, Line: t.Line}
	}
	out := adminapi.TestResponse{Results: []adminapi.TestResult{}}
	for i, r := range policy.RunTests(tests, a.evalTest) {
		res := adminapi.TestResult{PolicyTest: req.Tests[i], OK: r.OK, Reason: r.Got.Reason}
		if r.Err != nil {
			res.Error = r.Err.Error()
		} else if r.Got.Allowed {
			res.Got = "allow"
		} else {
			res.Got = "deny"
		}
		out.Results = append(out.Results, res)
	}
	return out, nil
}

func (a PolicyArea) evalTest(t policy.Expectation) (policy.Decision, error) {
	entries, dir, self := a.Node.store.Snapshot()
	if !self.Addr.IsValid() {
		self.Addr = a.Node.Address()
	}
	return policy.EvalTest(entries, dir, self, time.Now(), t)
}
