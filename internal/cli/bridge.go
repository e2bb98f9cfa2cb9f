package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/cli/cmdutil"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/units"
)

func newBridgeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bridge",
		Short: "Run this node's bridge: join tokens, registered nodes, revocation",
		Long: `These commands talk to a node whose config has [bridge] enable = true.

A node may register if its key is in [[bridge.allow]], or if it presents a
join token (its key is then enrolled). Tokens are shown once and stored
hashed; they expire and have a use count.

  tomoe bridge token create --uses 5 --ttl 24h
  tomoe bridge nodes --json
  tomoe bridge revoke BASE64KEY`,
	}
	token := &cobra.Command{Use: "token", Short: "Manage join tokens"}
	var uses int
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create [--uses N] [--ttl 24h]",
		Short: "Print a new join token",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if uses < 1 {
				return usageError("--uses %d: a token must allow at least one join", uses)
			}
			if ttl <= 0 {
				return usageError("--ttl %s: must be positive, e.g. 24h", ttl)
			}
			resp, err := g.client().CreateToken(c.Context(), adminapi.TokenRequest{Uses: uses, TTL: ttl.String()})
			if err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, resp.Token)
			fmt.Fprintf(g.stderr, "token %s: %d use(s), expires %s; put it in the joining node's [[bridges]] token\n", resp.ID, resp.Uses, resp.Expires)
			return nil
		},
	}
	create.Flags().IntVar(&uses, "uses", 1, "how many nodes may join with the token")
	create.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid")
	token.AddCommand(create)

	var asJSON bool
	nodes := &cobra.Command{
		Use:   "nodes [--json]",
		Short: "List the nodes registered with this bridge",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			list, err := g.client().BridgeNodes(c.Context())
			if err != nil {
				return err
			}
			if asJSON {
				if list == nil {
					list = []adminapi.BridgeNode{}
				}
				return cmdutil.PrintJSON(g.stdout, list)
			}
			if len(list) == 0 {
				fmt.Fprintln(g.stdout, "no nodes registered")
				return nil
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ADDRESS\tKEY\tENDPOINT\tTRANSPORT\tLAST SEEN\tRELAYED")
			for _, n := range list {
				seen := n.LastSeen
				if t, err := time.Parse(time.RFC3339, n.LastSeen); err == nil {
					seen = time.Since(t).Round(time.Second).String() + " ago"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Address, n.PublicKey, n.Endpoint, n.Transport, seen, units.Bytes(n.RelayedBytes))
			}
			return tw.Flush()
		},
	}
	nodes.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	revoke := &cobra.Command{
		Use:   "revoke KEY",
		Short: "Remove a node: its registration and relaying stop at once",
		Args:  exactArgs(1, "KEY: the node's public key (base64)"),
		RunE: func(c *cobra.Command, args []string) error {
			if _, err := identity.ParsePublicKey(args[0]); err != nil {
				return usageError("%v", err)
			}
			resp, err := g.client().BridgeRevoke(c.Context(), adminapi.BridgeRevokeRequest{PublicKey: args[0]})
			if err != nil {
				return err
			}
			state := "it was not registered"
			if resp.WasRegistered {
				state = "its registration and relaying stopped"
			}
			fmt.Fprintf(g.stdout, "revoked %s: %s; it can no longer register\n", resp.PublicKey, state)
			return nil
		},
	}
	cmd.AddCommand(token, nodes, revoke)
	return cmd
}

// bridgeLines is the bridges part of `tomoe status`.
func bridgeLines(st adminapi.Status) []string {
	var out []string
	for _, b := range st.Bridges {
		s := fmt.Sprintf("bridge:       %s %s", b.Endpoint, b.State)
		if b.State == "registered" {
			s += " over " + b.Transport
			if b.Observed != "" {
				s += ", seen as " + b.Observed
			}
		}
		if b.Error != "" {
			s += " (" + b.Error + ")"
		}
		out = append(out, s)
	}
	if r := st.BridgeRole; r != nil {
		s := fmt.Sprintf("bridge role:  %d node(s) registered, %s relayed", r.Nodes, units.Bytes(r.RelayedBytes))
		if r.TCP != "" {
			s += ", tcp " + r.TCP
		}
		out = append(out, s)
	}
	return out
}
