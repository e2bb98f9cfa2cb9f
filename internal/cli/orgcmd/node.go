package orgcmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/adminapi"
)

// addNodeCmds adds the organisation commands that talk to a running
// node (through Env.Client) to the offline ones: `tomoe org status`,
// `tomoe org crl push`, `tomoe org policy push`, and enrolment by request
// (join.go).
func addNodeCmds(g *Env, cmds []*cobra.Command) {
	for _, c := range cmds {
		if c.Name() != "org" {
			continue
		}
		var statusJSON, pushJSON bool
		status := &cobra.Command{
			Use:   "status [--json]",
			Short: "The organisations a running node trusts: its certificate, the lists and policy it holds, members seen",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				out, err := g.Client().Orgs(context.Background())
				if err != nil {
					return err
				}
				if statusJSON {
					return writeJSON(g.Stdout, out)
				}
				for _, o := range out {
					fmt.Fprintf(g.Stdout, "%s  %s  members seen: %d\n", o.Name, o.PublicKey, o.Members)
					if o.JoinOnly {
						fmt.Fprintln(g.Stdout, "  not trusted yet: only this node's request to join names it")
					}
					if j := o.Join; j != nil {
						fmt.Fprintf(g.Stdout, "  join request: %s groups %s, of %s\n", j.Name, orNone(j.Groups), j.Requested)
						for _, a := range j.Bridges {
							fmt.Fprintf(g.Stdout, "    bridge %s: %s %s\n", a.Bridge, a.State, a.Error)
						}
					}
					if o.JoinOnly {
						continue
					}
					if o.Cert != nil {
						fmt.Fprintf(g.Stdout, "  certificate (%s): %s groups %s serial %s until %s: %s %s\n", o.Cert.Source, o.Cert.Name, strings.Join(o.Cert.Groups, ","), o.Cert.Serial, o.Cert.NotAfter, o.Cert.State, o.Cert.Error)
					} else {
						fmt.Fprintln(g.Stdout, "  certificate: none (verifies others only)")
					}
					if o.CRL != nil {
						fmt.Fprintf(g.Stdout, "  revocation list: version %d issued %s, %d entries\n", o.CRL.Version, o.CRL.Issued, o.CRL.Entries)
					} else {
						fmt.Fprintln(g.Stdout, "  revocation list: none")
					}
					if o.CRLStale {
						fmt.Fprintf(g.Stdout, "  STALE: no list newer than crl_max_age %s: this organisation's certificates are refused\n", o.CRLMaxAge)
					}
					if o.Policy != nil {
						fmt.Fprintf(g.Stdout, "  policy: version %d issued %s, %d rules, accept_policy %v %s\n", o.Policy.Version, o.Policy.Issued, o.Policy.Rules, o.AcceptPolicy, o.PolicyError)
					}
				}
				return nil
			},
		}
		status.Flags().BoolVar(&statusJSON, "json", false, "print JSON")
		c.AddCommand(status)
		c.AddCommand(joinCmds(g)...)
		push := func(use, what string) *cobra.Command {
			cmd := &cobra.Command{
				Use:   use + " FILE|- [--json]",
				Short: "Hand a " + what + " to the running node, which installs it if newer and passes it on to its peers and bridges",
				Args:  cobra.ExactArgs(1),
				RunE: func(cmd *cobra.Command, args []string) error {
					text, err := readInput(g, args)
					if err != nil {
						return err
					}
					res, err := g.Client().OrgPush(context.Background(), adminapi.OrgPushRequest{Document: text})
					if err != nil {
						return err
					}
					if pushJSON {
						return writeJSON(g.Stdout, res)
					}
					if res.Newer {
						fmt.Fprintf(g.Stdout, "%s %s version %d installed (was %d); spreading to peers and bridges\n", res.Org, res.Kind, res.Version, res.Held)
					} else {
						fmt.Fprintf(g.Stdout, "%s %s version %d not newer than the one held (version %d): nothing changed\n", res.Org, res.Kind, res.Version, res.Held)
					}
					return nil
				},
			}
			cmd.Flags().BoolVar(&pushJSON, "json", false, "print JSON")
			return cmd
		}
		for _, sub := range c.Commands() {
			if sub.Name() == "crl" {
				sub.AddCommand(push("push", "revocation list"))
			}
		}
		for _, sub := range c.Commands() {
			if sub.Name() == "policy" {
				sub.AddCommand(push("push", "signed organisation policy"))
			}
		}
	}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
