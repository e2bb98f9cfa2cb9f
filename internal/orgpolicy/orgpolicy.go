// Package orgpolicy turns an organisation policy written in TOML
// ([[allow]], [[deny]] and [[test]] tables) into a signed document: the
// rules are checked, every test runs against them, and only when all pass
// does the organisation's key sign. `tomoe org policy sign` and the
// console's policy form both use it.
package orgpolicy

import (
	"fmt"
	"time"

	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// Failure is one [[test]] that did not hold.
type Failure struct {
	Index, Line int
	Test        policy.Result
	Got         string // "allow: ...", "deny: ..." or "error: ..."
}

func (f Failure) String() string {
	r := f.Test
	return fmt.Sprintf("test %d (line %d): from %s %s/%d: expected %s, got %s", f.Index, f.Line, r.From, r.Proto, r.Port, r.Expect, f.Got)
}

// Compiled is a policy read and tested, ready to sign.
type Compiled struct {
	Rules    []org.PolicyRule
	Tests    []org.PolicyTest
	Failures []Failure
}

// Compile reads data and runs its tests. An error is bad input (a rule or
// test that does not parse); failed tests are in Failures.
func Compile(data []byte) (*Compiled, error) {
	specs, tests, err := policy.ParseOrgPolicyTOML(data)
	if err != nil {
		return nil, err
	}
	c := &Compiled{}
	rules := make([]policy.Rule, 0, len(specs))
	for i, sp := range specs {
		r, err := policy.ParseRuleSpec(sp)
		if err != nil {
			return nil, fmt.Errorf("rule %d: %v", i+1, err)
		}
		rules = append(rules, r)
		action := "allow"
		if sp.Deny {
			action = "deny"
		}
		c.Rules = append(c.Rules, org.PolicyRule{Action: action, From: sp.From, To: sp.To, Proto: sp.Proto, Ports: sp.Ports, Until: sp.Until})
	}
	for i, r := range policy.RunTests(tests, func(t policy.Expectation) (policy.Decision, error) { return policy.EvalOrgTest(rules, t) }) {
		if r.OK {
			continue
		}
		got := "error: " + fmt.Sprint(r.Err)
		if r.Err == nil {
			got = map[bool]string{true: "allow", false: "deny"}[r.Got.Allowed] + ": " + r.Got.Reason
		}
		c.Failures = append(c.Failures, Failure{Index: i + 1, Line: r.Line, Test: r, Got: got})
	}
	for _, t := range tests {
		c.Tests = append(c.Tests, org.PolicyTest{From: t.From, To: t.To, Groups: t.Groups, Proto: t.Proto, Port: t.Port, Expect: t.Expect})
	}
	return c, nil
}

// Sign signs c with s, unless a test failed.
func (c *Compiled) Sign(s *org.Signer, now time.Time) (*org.PolicyDoc, error) {
	if len(c.Failures) > 0 {
		return nil, fmt.Errorf("%d of %d tests failed: not signed (first: %s)", len(c.Failures), len(c.Tests), c.Failures[0])
	}
	return s.SignPolicy(c.Rules, c.Tests, now)
}

// Rules turns an organisation policy's rules into the policy's.
func Rules(d *org.PolicyDoc) ([]policy.Rule, error) {
	out := make([]policy.Rule, 0, len(d.Rules))
	for i, r := range d.Rules {
		var deny bool
		switch r.Action {
		case "allow":
		case "deny":
			deny = true
		default:
			return nil, fmt.Errorf("rule %d: action %q: use allow or deny", i+1, r.Action)
		}
		rule, err := policy.ParseRuleSpec(policy.RuleSpec{Deny: deny, From: r.From, To: r.To, Proto: r.Proto, Ports: r.Ports, Until: r.Until})
		if err != nil {
			return nil, fmt.Errorf("rule %d: %w", i+1, err)
		}
		out = append(out, rule)
	}
	return out, nil
}
