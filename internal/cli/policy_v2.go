package cli

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/cli/cmdutil"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// ruleFlags are the flags of `policy allow` and `policy deny`.
type ruleFlags struct {
	proto, ports, to, until string
	forDur                  time.Duration
}

func (f *ruleFlags) register(c *cobra.Command) {
	c.Flags().StringVar(&f.proto, "proto", "any", "tcp, udp, icmp or any")
	c.Flags().StringVar(&f.ports, "ports", "", `ports or ranges, e.g. "22,8000-8080" (default: every port)`)
	c.Flags().StringVar(&f.to, "to", "", `destination: "self", an IP prefix, or destination nodes (group:, org:, name:, key, address); default: this node and every route it offers`)
	c.Flags().StringVar(&f.until, "until", "", "expire the rule at this RFC 3339 time")
	c.Flags().DurationVar(&f.forDur, "for", 0, "expire the rule after this long, e.g. 2h")
}

// request checks the flags and turns --for into an absolute until.
func (f *ruleFlags) request(from string, deny bool, now time.Time) (adminapi.AllowRequest, error) {
	if f.forDur != 0 && f.until != "" {
		return adminapi.AllowRequest{}, usageError("give --for or --until, not both")
	}
	if f.forDur < 0 {
		return adminapi.AllowRequest{}, usageError("--for %v: give a positive duration, e.g. 2h", f.forDur)
	}
	until := f.until
	if f.forDur > 0 {
		until = now.Add(f.forDur).UTC().Format(time.RFC3339)
	}
	spec := policy.RuleSpec{Deny: deny, From: from, To: f.to, Proto: f.proto, Ports: f.ports, Until: until}
	r, err := policy.ParseRuleSpec(spec)
	if err != nil {
		return adminapi.AllowRequest{}, usageError("%v", err)
	}
	if r.Expired(now) {
		return adminapi.AllowRequest{}, usageError("--until %s is not in the future", until)
	}
	return adminapi.AllowRequest{From: from, To: f.to, Proto: f.proto, Ports: f.ports, Until: until}, nil
}

func newPolicyDenyCmds(g *globals) []*cobra.Command {
	var df ruleFlags
	deny := &cobra.Command{
		Use:   "deny FROM [--proto P] [--ports R] [--to DEST] [--for 2h | --until T]",
		Short: "Deny inbound traffic from an identity, whatever allows it (replies to this node's own flows still pass)",
		Args:  exactArgs(1, "FROM: a node address, a public key, \"*\", group:ORG/GROUP, org:ORG or name:GLOB"),
		RunE: func(c *cobra.Command, args []string) error {
			req, err := df.request(args[0], true, time.Now())
			if err != nil {
				return err
			}
			resp, err := g.client().Deny(c.Context(), adminapi.DenyRequest(req))
			if err != nil {
				return err
			}
			if resp.Added {
				fmt.Fprintf(g.stdout, "denied: %s\n", ruleString(resp.Rule))
			} else {
				fmt.Fprintf(g.stdout, "already denied: %s\n", ruleString(resp.Rule))
			}
			return nil
		},
	}
	df.register(deny)
	undeny := &cobra.Command{
		Use:   "undeny FROM",
		Short: "Remove the deny rules added through the admin API for an identity",
		Args:  exactArgs(1, "FROM: the identity as the deny rule names it"),
		RunE: func(c *cobra.Command, args []string) error {
			if _, err := policy.ParseIdentity(args[0]); err != nil {
				return usageError("%v", err)
			}
			resp, err := g.client().Undeny(c.Context(), adminapi.UndenyRequest{From: args[0]})
			var apiErr *adminapi.APIError
			if errors.As(err, &apiErr) && apiErr.Code == 404 {
				return &exitError{code: ExitFailure, err: err}
			}
			if err != nil {
				return err
			}
			for _, r := range resp.Removed {
				fmt.Fprintf(g.stdout, "removed: %s\n", ruleString(r))
			}
			return nil
		},
	}
	var ex adminapi.ExplainRequest
	var exJSON bool
	explain := &cobra.Command{
		Use:   "explain FROM [--to DEST] --proto P [--port N] [--json]",
		Short: "Show whether the rules admit traffic from FROM, and which rule decides",
		Long: `FROM is a key or node address (with its verified memberships), or a
hypothetical member: name:alice@sales.acme, group:acme/sales, org:acme.
--to is "self" (default) or an IP address this node forwards to.`,
		Args: exactArgs(1, "FROM: a key, node address, name:, group: or org:"),
		RunE: func(c *cobra.Command, args []string) error {
			ex.From = args[0]
			t := policy.Expectation{From: ex.From, To: ex.To, Groups: ex.Groups, Proto: ex.Proto, Port: ex.Port, Expect: "allow"}
			if err := checkExpectation(t); err != nil {
				return usageError("%v", err)
			}
			resp, err := g.client().Explain(c.Context(), ex)
			if err != nil {
				return err
			}
			if exJSON {
				return cmdutil.PrintJSON(g.stdout, resp)
			}
			fmt.Fprintf(g.stdout, "%s: %s\n", resp.Decision, resp.Reason)
			return nil
		},
	}
	explain.Flags().StringVar(&ex.To, "to", "", `"self" or an IP address (default: this node)`)
	explain.Flags().StringVar(&ex.Proto, "proto", "tcp", "tcp, udp or icmp")
	explain.Flags().IntVar(&ex.Port, "port", 0, "destination port (tcp, udp)")
	explain.Flags().StringSliceVar(&ex.Groups, "groups", nil, "more groups of a hypothetical member")
	explain.Flags().BoolVar(&exJSON, "json", false, "print JSON")

	var orgPolicy string
	var testJSON bool
	test := &cobra.Command{
		Use:   "test FILE [--org-policy DOC] [--json]",
		Short: "Check [[test]] expectations against the node's rules (or an organisation policy, locally)",
		Long: `FILE holds [[test]] tables: from, to (optional), groups (optional), proto,
port, expect = "allow" or "deny". With --org-policy DOC (a policy TOML with
[[allow]], [[deny]] and [[test]] tables) the tests of FILE and DOC run
against DOC's rules locally, with no node. Exit 1 on any mismatch, 2 on a
malformed file.`,
		Args: cobra.RangeArgs(0, 1),
		RunE: func(c *cobra.Command, args []string) error {
			var tests []policy.Expectation
			if len(args) == 1 {
				b, err := os.ReadFile(args[0])
				if err != nil {
					return usageError("%v", err)
				}
				if tests, err = policy.ParseTests(b); err != nil {
					return usageError("%s: %v", args[0], err)
				}
			}
			var results []adminapi.TestResult
			if orgPolicy != "" {
				b, err := os.ReadFile(orgPolicy)
				if err != nil {
					return usageError("%v", err)
				}
				specs, docTests, err := policy.ParseOrgPolicyTOML(b)
				if err != nil {
					return usageError("%s: %v", orgPolicy, err)
				}
				rules := make([]policy.Rule, len(specs))
				for i, s := range specs {
					rules[i], _ = policy.ParseRuleSpec(s) // checked by ParseOrgPolicyTOML
				}
				tests = append(docTests, tests...)
				for _, r := range policy.RunTests(tests, func(t policy.Expectation) (policy.Decision, error) { return policy.EvalOrgTest(rules, t) }) {
					results = append(results, testResult(r))
				}
			} else {
				if len(args) == 0 {
					return usageError("give FILE, or --org-policy DOC")
				}
				req := adminapi.TestRequest{}
				for _, t := range tests {
					req.Tests = append(req.Tests, adminapi.PolicyTest{From: t.From, To: t.To, Groups: t.Groups, Proto: t.Proto, Port: t.Port, Expect: t.Expect, Line: t.Line})
				}
				resp, err := g.client().PolicyTest(c.Context(), req)
				if err != nil {
					return err
				}
				results = resp.Results
			}
			return reportTests(g, results, testJSON)
		},
	}
	test.Flags().StringVar(&orgPolicy, "org-policy", "", "an organisation's policy TOML to test locally")
	test.Flags().BoolVar(&testJSON, "json", false, "print JSON")
	return []*cobra.Command{deny, undeny, explain, test}
}

func checkExpectation(t policy.Expectation) error {
	_, err := policy.EvalOrgTest(nil, policy.Expectation{From: t.From, Groups: t.Groups, Proto: t.Proto, Port: t.Port, Expect: t.Expect})
	return err
}

func testResult(r policy.Result) adminapi.TestResult {
	e := r.Expectation
	out := adminapi.TestResult{PolicyTest: adminapi.PolicyTest{From: e.From, To: e.To, Groups: e.Groups, Proto: e.Proto, Port: e.Port, Expect: e.Expect, Line: e.Line}, OK: r.OK, Reason: r.Got.Reason}
	if r.Err != nil {
		out.Error = r.Err.Error()
		return out
	}
	out.Got = "deny"
	if r.Got.Allowed {
		out.Got = "allow"
	}
	return out
}

func reportTests(g *globals, results []adminapi.TestResult, asJSON bool) error {
	failed := 0
	for _, r := range results {
		if !r.OK {
			failed++
		}
	}
	if asJSON {
		if err := cmdutil.PrintJSON(g.stdout, results); err != nil {
			return err
		}
	} else {
		for i, r := range results {
			name := fmt.Sprintf("test %d", i+1)
			if r.Line > 0 {
				name += fmt.Sprintf(" (line %d)", r.Line)
			}
			switch {
			case r.Error != "":
				fmt.Fprintf(g.stdout, "FAIL %s: from %s: %s\n", name, r.From, r.Error)
			case !r.OK:
				fmt.Fprintf(g.stdout, "FAIL %s: from %s %s/%d: expected %s, got %s: %s\n", name, r.From, r.Proto, r.Port, r.Expect, r.Got, r.Reason)
			default:
				fmt.Fprintf(g.stdout, "ok   %s: %s: %s\n", name, r.Got, r.Reason)
			}
		}
		fmt.Fprintf(g.stdout, "%d tests, %d failed\n", len(results), failed)
	}
	if failed > 0 {
		return &exitError{code: ExitFailure, err: fmt.Errorf("%d of %d policy tests failed", failed, len(results))}
	}
	return nil
}
