// Package svccmd is `tomoe routes` and `tomoe expose`: the subnet routes
// a node offers, accepts and learns, and the local services it exposes.
package svccmd

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/cli/cmdutil"
)

// Env is what the commands get from package cli (cmdutil.Env).
type Env = cmdutil.Env

// Commands returns `tomoe routes` and `tomoe expose`.
func Commands(e Env) []*cobra.Command {
	g := &env{e}
	return []*cobra.Command{newRoutesCmd(g), newExposeCmd(g)}
}

type env struct{ Env }

func (g *env) client() *adminapi.Client { return g.Client() }

func newRoutesCmd(g *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "routes [--json]",
		Short: "Tunnelled IPv4/IPv6 routes: what this node offers, accepts and uses",
		Long: `A node offers prefixes it forwards (routes.offer; 0.0.0.0/0 and ::/0 make
an exit node) and its own tun.ipv4 as a /32. Another node uses an offered
prefix only if one of its routes.accept rules covers it; then the prefix is
routed into the TUN towards the offering node. The offering node's policy
decides who may use its routes.

Without a subcommand, lists them. The subcommands change them live; the
changes are kept in services.json beside the key file, over the config
file's entries, across restarts:

  tomoe routes offer 192.168.10.0/24 --masquerade
  tomoe routes withdraw 192.168.10.0/24
  tomoe routes accept --from fc12:... 192.168.10.0/24
  tomoe routes unaccept --from fc12:... 192.168.10.0/24`,
		Args: g.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			r, err := g.client().Routes(c.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return cmdutil.PrintJSON(g.Stdout, r)
			}
			printRoutes(g, r)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	change := func(op, use, short string, withFrom, withMasq bool) *cobra.Command {
		var from string
		var masq bool
		sub := &cobra.Command{
			Use:   use,
			Short: short,
			Args:  g.ExactArgs(1, "PREFIX"),
			RunE: func(c *cobra.Command, args []string) error {
				if withFrom && from == "" {
					return g.UsageError("--from is required: the offering node's address or key, or \"*\"")
				}
				r, err := g.client().ChangeRoutes(c.Context(), adminapi.RouteChange{Op: op, Prefix: args[0], From: from, Masquerade: masq})
				if err != nil {
					return err
				}
				printRoutes(g, r)
				fmt.Fprintln(g.Stderr, "changed; kept across restarts (services.json beside the key file)")
				return nil
			},
		}
		if withFrom {
			sub.Flags().StringVar(&from, "from", "", "the offering node: address, public key or \"*\"")
		}
		if withMasq {
			sub.Flags().BoolVar(&masq, "masquerade", false, "rewrite forwarded traffic's source to this node's LAN address")
		}
		return sub
	}
	cmd.AddCommand(
		change(adminapi.RouteOffer, "offer PREFIX [--masquerade]", "Offer a prefix this node forwards (kernel mode)", false, true),
		change(adminapi.RouteWithdraw, "withdraw PREFIX", "Stop offering a prefix", false, false),
		change(adminapi.RouteAccept, "accept --from NODE PREFIX", "Use the routes NODE offers within PREFIX", true, false),
		change(adminapi.RouteUnaccept, "unaccept --from NODE PREFIX", "Remove an accept rule; its routes go at once", true, false),
	)
	return cmd
}

func printRoutes(g *env, r adminapi.Routes) {
	tw := tabwriter.NewWriter(g.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "OFFERED\tMASQUERADE\tACCEPTED BY")
	if len(r.Offered) == 0 {
		fmt.Fprintln(tw, "-\t\t")
	}
	for _, o := range r.Offered {
		p := o.Prefix
		if o.Self {
			p += " (tun.ipv4)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", p, yesNo(o.Masquerade), cmdutil.OrDash(strings.Join(o.AcceptedBy, ", ")))
	}
	fmt.Fprintln(tw, "\t\t")
	fmt.Fprintln(tw, "ACCEPT FROM\tWITHIN\t")
	if len(r.Accept) == 0 {
		fmt.Fprintln(tw, "-\t\t")
	}
	for _, a := range r.Accept {
		fmt.Fprintf(tw, "%s\t%s\t\n", a.From, a.Prefix)
	}
	fmt.Fprintln(tw, "\t\t")
	fmt.Fprintln(tw, "LEARNED\tFROM\tSTATE")
	if len(r.Learned) == 0 {
		fmt.Fprintln(tw, "-\t\t")
	}
	for _, l := range r.Learned {
		state := l.State
		if l.Reason != "" {
			state += " (" + l.Reason + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", l.Prefix, l.Address, state)
	}
	tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func newExposeCmd(g *env) *cobra.Command {
	var asJSON bool
	var proto string
	cmd := &cobra.Command{
		Use:   "expose [--json]",
		Short: "Services reachable at [this node's address]:port, and local proxies",
		Long: `An exposed service listens only on this machine (e.g. 127.0.0.1:8080) and
becomes reachable on the overlay at [node address]:PORT, for the identities
the policy allows (tomoe policy allow NODE --proto tcp --ports PORT).
Nothing listens on the physical interfaces.

Without a subcommand, lists exposed services, port forwards and proxies.
The subcommands change exposed services live; the changes are kept in
services.json beside the key file, over the config file's [[expose]]
entries, across restarts:

  tomoe expose add 80 127.0.0.1:8080
  tomoe expose add 53 127.0.0.1:5353 --proto udp
  tomoe expose remove 80`,
		Args: g.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			s, err := g.client().Services(c.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return cmdutil.PrintJSON(g.Stdout, s)
			}
			printServices(g, s)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	add := &cobra.Command{
		Use:   "add PORT TARGET [--proto tcp|udp]",
		Short: "Expose the service at TARGET (IP:PORT on this machine) on overlay port PORT",
		Args:  g.ExactArgs(2, "PORT TARGET"),
		RunE: func(c *cobra.Command, args []string) error {
			port, err := g.parsePort(args[0])
			if err != nil {
				return err
			}
			s, err := g.client().ChangeExpose(c.Context(), adminapi.ExposeChange{Proto: proto, Port: port, Target: args[1]})
			if err != nil {
				return err
			}
			printServices(g, s)
			fmt.Fprintln(g.Stderr, "exposed; kept across restarts; the policy decides who may connect (tomoe policy allow NODE --proto "+proto+" --ports "+args[0]+")")
			return nil
		},
	}
	add.Flags().StringVar(&proto, "proto", "tcp", "tcp or udp")
	remove := &cobra.Command{
		Use:   "remove PORT [--proto tcp|udp]",
		Short: "Stop exposing a port; its connections are cut",
		Args:  g.ExactArgs(1, "PORT"),
		RunE: func(c *cobra.Command, args []string) error {
			port, err := g.parsePort(args[0])
			if err != nil {
				return err
			}
			s, err := g.client().ChangeExpose(c.Context(), adminapi.ExposeChange{Remove: true, Proto: proto, Port: port})
			if err != nil {
				return err
			}
			printServices(g, s)
			return nil
		},
	}
	remove.Flags().StringVar(&proto, "proto", "tcp", "tcp or udp")
	cmd.AddCommand(add, remove)
	return cmd
}

func (g *env) parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, g.UsageError("port %q: want a number in 1..65535", s)
	}
	return uint16(n), nil
}

func printServices(g *env, s adminapi.Services) {
	tw := tabwriter.NewWriter(g.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EXPOSED\tTARGET\tACTIVE\tTOTAL\tBYTES IN\tBYTES OUT")
	if len(s.Expose) == 0 {
		fmt.Fprintln(tw, "-\t\t\t\t\t")
	}
	for _, e := range s.Expose {
		fmt.Fprintf(tw, "%s/%s\t%s\t%d\t%d\t%d\t%d\n", e.Address, e.Proto, e.Target, e.Active, e.Total, e.BytesIn, e.BytesOut)
	}
	if len(s.Connect)+len(s.Proxies) > 0 {
		fmt.Fprintln(tw, "\t\t\t\t\t")
		fmt.Fprintln(tw, "LOCAL\tKIND\tREMOTE\t\t\t")
		for _, l := range append(s.Connect, s.Proxies...) {
			fmt.Fprintf(tw, "%s\t%s\t%s\t\t\t\n", l.Listen, l.Kind, cmdutil.OrDash(l.Remote))
		}
	}
	tw.Flush()
}
