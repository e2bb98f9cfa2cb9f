// Package consolecmd is `tomoe console`: the network as the node can read
// it over the overlay (GET /v1/console), as a table and a matrix.
package consolecmd

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/cli/cmdutil"
	"github.com/tomoe-net/tomoe/internal/config"
)

// Command returns `tomoe console`; client is the running node's admin API.
func Command(client func() *adminapi.Client, stdout io.Writer, noArgs cobra.PositionalArgs) *cobra.Command {
	var asJSON bool
	var configFile string
	cmd := &cobra.Command{
		Use:   "console [-c FILE] [--json]",
		Short: "Show the whole network as this node can read it over the overlay",
		Long: `The node finds the other nodes (its peers, its bridges, the nodes registered
at bridges it can read, and theirs in turn) and asks each one's admin API over
the overlay (port 4680) for its status, policy, routes and services. Each node
must list this one in [[admin.allow]] (role "read" is enough to see it;
"write" to change it with 'tomoe --remote ADDR ...').

Every node found is listed: "online", "refused" (it does not list this node)
or "unreachable" since when. The matrix shows, for every node whose rules
were read (the column), what each other node (the row) may open there:
"tcp 22", "any", "-" (default deny), "!" before what a deny rule refuses.

-c FILE talks to the node that config file runs (its admin socket); without
it, to the node --socket, $TOMOE_SOCKET or the default socket names.

Act on what you see: 'tomoe console revoke' (with [console] org_key), or
'tomoe cert revoke' and 'tomoe org crl push' (revoke a member), 'tomoe
--remote ADDR policy allow|revoke|deny' (a node's rules), 'tomoe org policy
sign|push'; the web UI's console page (tomoe ui) does the same by form.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl := client()
			if configFile != "" {
				cfg, err := config.Load(configFile)
				if err != nil {
					return cmdutil.Failure(err)
				}
				cl = adminapi.NewClient(cfg.Admin.Socket)
			}
			v, err := cl.Console(c.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return cmdutil.PrintJSON(stdout, v)
			}
			Print(stdout, v)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVarP(&configFile, "config", "c", "", "the config file of the node to ask (its admin socket)")
	cmd.AddCommand(revokeCmd(client, stdout))
	return cmd
}

// revokeCmd is `tomoe console revoke`: with [console] org_key, the node
// signs a new revocation list and pushes it, from where it spreads.
func revokeCmd(client func() *adminapi.Client, stdout io.Writer) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "revoke (SERIAL | NODEKEY) [--json]",
		Short: "Revoke a member of the console's organisation ([console] org_key): sign a new list and push it",
		Long: `The node holding the organisation's key ([console] org_key) signs a new
revocation list naming the certificate serial (16 hex digits, from 'tomoe
peers' or 'tomoe cert show') or the node key, and installs it: it cuts that
member's sessions here and spreads to every node, which cut it too.`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cmdutil.Usage("%s needs a certificate serial or a node key", c.CommandPath())
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			req := adminapi.ConsoleRevokeRequest{Serial: args[0]}
			if len(args[0]) > 16 {
				req = adminapi.ConsoleRevokeRequest{Key: args[0]}
			}
			res, err := client().ConsoleRevoke(c.Context(), req)
			if err != nil {
				return err
			}
			if asJSON {
				return cmdutil.PrintJSON(stdout, res)
			}
			fmt.Fprintf(stdout, "%s revocation list version %d signed and installed here; it spreads to every node\n", res.Org, res.Version)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// Print writes v as a table of nodes and a matrix.
func Print(out io.Writer, v adminapi.ConsoleView) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "#\tNAME\tADDRESS\tSTATE\tSINCE\tVERSION\tPEERS (direct/relay)\tRULES\tFOUND BY")
	label := map[string]string{}
	for i, n := range v.Nodes {
		name := n.Name
		if name == "" {
			name = "-"
		}
		if n.Self {
			name += " (this node)"
		}
		label[n.Address] = fmt.Sprint(i + 1)
		state := n.State
		if n.Error != "" && n.State != "online" {
			state += ": " + shorten(n.Error, 60)
		}
		rules := "?"
		if n.Rules != nil {
			rules = fmt.Sprint(len(n.Rules))
		}
		version := n.Version
		if version == "" {
			version = "?"
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%d (%d/%d)\t%s\t%s\n", i+1, name, n.Address, state, ago(n.Since), version, n.Peers, n.Direct, n.Relayed, rules, n.FoundBy)
	}
	w.Flush()
	if v.Truncated {
		fmt.Fprintf(out, "(more nodes were found than one view holds; the list is cut)\n")
	}
	if len(v.Matrix) == 0 {
		fmt.Fprintln(out, "\nno node's rules could be read: nothing to say about who may reach whom")
		return
	}
	cells := map[[2]string]adminapi.ConsoleCell{}
	cols := []string{}
	for _, c := range v.Matrix {
		cells[[2]string{c.From, c.To}] = c
		if !slices.Contains(cols, c.To) {
			cols = append(cols, c.To)
		}
	}
	fmt.Fprintln(out, "\nwho may open what (row: from, column: to; only nodes whose rules were read have a column):")
	w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	head := []string{"from\\to"}
	for _, c := range cols {
		head = append(head, label[c])
	}
	fmt.Fprintln(w, strings.Join(head, "\t"))
	for _, n := range v.Nodes {
		row := []string{label[n.Address]}
		for _, to := range cols {
			c, ok := cells[[2]string{n.Address, to}]
			switch {
			case to == n.Address:
				row = append(row, "·")
			case !ok:
				row = append(row, "?")
			default:
				row = append(row, cellText(c))
			}
		}
		fmt.Fprintln(w, strings.Join(row, "\t"))
	}
	w.Flush()
}

func cellText(c adminapi.ConsoleCell) string {
	var parts []string
	parts = append(parts, c.Allow...)
	for _, d := range c.Deny {
		parts = append(parts, "!"+d)
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

// ago renders an RFC 3339 time as "since 14:02:05 (3m ago)".
func ago(ts string) string {
	t, err := time.Parse(time.RFC3339, ts)
	if err != nil {
		return ts
	}
	return fmt.Sprintf("%s (%s ago)", t.Local().Format("15:04:05"), time.Since(t).Round(time.Second))
}
