package orgcmd

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/orgpolicy"
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
			compiled, err := orgpolicy.Compile(data)
			if err != nil {
				return usageError("%s: %v", args[0], err)
			}
			for _, f := range compiled.Failures {
				fmt.Fprintf(g.Stderr, "FAIL %s\n", f)
			}
			if len(compiled.Failures) > 0 {
				return failure(fmt.Errorf("%d of %d tests failed: not signed", len(compiled.Failures), len(compiled.Tests)))
			}
			s, err := org.LoadSigner(keyFile)
			if err != nil {
				return signerError(err)
			}
			doc, err := compiled.Sign(s, time.Now())
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
			fmt.Fprintf(g.Stderr, "organisation policy version %d signed: %d rules, %d tests passed\n", doc.Version, len(compiled.Rules), len(compiled.Tests))
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "org-key", "", "the organisation's key file")
	cmd.Flags().StringVar(&out, "out", "", "write the document here instead of stdout")
	return cmd
}
