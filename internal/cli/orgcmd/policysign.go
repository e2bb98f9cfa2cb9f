package orgcmd

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// newPolicySignCmd is `tomoe org policy sign`: the organisation policy as
// a signed, versioned document, after its embedded tests pass.
func newPolicySignCmd(g *Env) *cobra.Command {
	var keyFile, out string
	cmd := &cobra.Command{
		Use:   "sign --org-key FILE [--out DOC] POLICY.toml",
		Short: "Sign an organisation policy (its [[test]] tables must pass first); nodes with accept_policy apply it",
		Long: `Sign an organisation policy: [[allow]] and [[deny]] tables (from, to, proto,
ports, until) and [[test]] tables (from, to, groups, proto, port, expect). Every
test runs first; one that fails refuses the signature. The version is one more
than the last policy signed with this key (kept in FILE.state).

  tomoe org policy sign --org-key acme.key --out acme.policy policy.toml
  tomoe org policy push acme.policy        # on any node; it spreads`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if keyFile == "" {
				return usageError("--org-key is required: the organisation's key file (tomoe org init)")
			}
			data, err := os.ReadFile(args[0])
			if err != nil {
				return failure(err)
			}
			specs, tests, err := policy.ParseOrgPolicyTOML(data)
			if err != nil {
				return usageError("%s: %v", args[0], err)
			}
			rules := make([]policy.Rule, 0, len(specs))
			docRules := make([]org.PolicyRule, 0, len(specs))
			for i, sp := range specs {
				r, err := policy.ParseRuleSpec(sp)
				if err != nil {
					return usageError("%s: rule %d: %v", args[0], i+1, err)
				}
				rules = append(rules, r)
				action := "allow"
				if sp.Deny {
					action = "deny"
				}
				docRules = append(docRules, org.PolicyRule{Action: action, From: sp.From, To: sp.To, Proto: sp.Proto, Ports: sp.Ports, Until: sp.Until})
			}
			failed := 0
			for i, r := range policy.RunTests(tests, func(t policy.Expectation) (policy.Decision, error) { return policy.EvalOrgTest(rules, t) }) {
				if !r.OK {
					failed++
					got := "error: " + fmt.Sprint(r.Err)
					if r.Err == nil {
						got = map[bool]string{true: "allow", false: "deny"}[r.Got.Allowed] + ": " + r.Got.Reason
					}
					fmt.Fprintf(g.Stderr, "FAIL test %d (line %d): from %s %s/%d: expected %s, got %s\n", i+1, r.Line, r.From, r.Proto, r.Port, r.Expect, got)
				}
			}
			if failed > 0 {
				return failure(fmt.Errorf("%d of %d tests failed: not signed", failed, len(tests)))
			}
			s, err := org.LoadSigner(keyFile)
			if err != nil {
				return signerError(err)
			}
			docTests := make([]org.PolicyTest, 0, len(tests))
			for _, t := range tests {
				docTests = append(docTests, org.PolicyTest{From: t.From, To: t.To, Groups: t.Groups, Proto: t.Proto, Port: t.Port, Expect: t.Expect})
			}
			doc, err := s.SignPolicy(docRules, docTests, time.Now())
			if err != nil {
				return failure(err)
			}
			if out != "" {
				if err := os.WriteFile(out, []byte(doc.Text()+"\n"), 0o644); err != nil {
					return failure(err)
				}
			} else {
				fmt.Fprintln(g.Stdout, doc.Text())
			}
			fmt.Fprintf(g.Stderr, "organisation policy version %d signed: %d rules, %d tests passed\n", doc.Version, len(docRules), len(tests))
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "org-key", "", "the organisation's key file")
	cmd.Flags().StringVar(&out, "out", "", "write the document here instead of stdout")
	return cmd
}
