package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/cli/cmdutil"
	"github.com/tomoe-net/tomoe/internal/policy"
	"github.com/tomoe-net/tomoe/internal/units"
)

func newStatusCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show the node's identity, mode and peers",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			st, err := g.client().Status(c.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return cmdutil.PrintJSON(g.stdout, st)
			}
			w := g.stdout
			fmt.Fprintf(w, "public key:   %s\n", st.PublicKey)
			fmt.Fprintf(w, "address:      %s\n", st.Address)
			fmt.Fprintf(w, "site prefix:  %s\n", st.SitePrefix)
			if st.IPv4 != "" {
				fmt.Fprintf(w, "ipv4:         %s\n", st.IPv4)
			}
			if st.Mode == "kernel" {
				fmt.Fprintf(w, "mode:         kernel (interface %s, mtu %d)\n", st.Interface, st.MTU)
			} else {
				fmt.Fprintf(w, "mode:         userspace (mtu %d)\n", st.MTU)
			}
			if st.DNS != "" {
				how := "not registered with systemd-resolved: point the resolver at it for .tomoe"
				if st.DNSResolved {
					how = "systemd-resolved sends it ~tomoe on " + st.Interface
				}
				fmt.Fprintf(w, "dns:          %s port 53, names under .tomoe (%s)\n", st.DNS, how)
			}
			fmt.Fprintf(w, "listen:       udp port %d\n", st.ListenPort)
			active, up := 0, 0
			for _, p := range st.Peers {
				if p.Active {
					active++
				}
				if p.Up {
					up++
				}
			}
			fmt.Fprintf(w, "peers:        %d known, %d active, %d up\n", st.PeerCount, active, up)
			ct := st.Counters
			fmt.Fprintf(w, "packets:      %d out, %d in; dropped: %d denied, %d spoofed, %d not local; %d handshakes refused\n",
				ct.TxPackets, ct.RxPackets, ct.Denied, ct.Spoofed, ct.NotLocal, ct.HandshakeDenied)
			fmt.Fprintf(w, "flows:        %d opened here, %d opened by peers; refused: %d table full, %d over a peer's quota\n",
				ct.Flows, ct.RemoteFlows, ct.TableFull, ct.FlowQuota)
			for _, l := range bridgeLines(st) {
				fmt.Fprintln(w, l)
			}
			if r := st.RunsAs; r != nil {
				who := strconv.Itoa(r.UID)
				if r.User != "" {
					who = r.User + " (uid " + who + ")"
				}
				caps := strings.Join(r.Caps, ", ")
				switch {
				case len(r.Caps) == 0:
					caps = "none"
				case len(r.Caps) > 6:
					caps = strconv.Itoa(len(r.Caps)) + " (root's)"
				}
				fmt.Fprintf(w, "runs as:      %s, capabilities: %s\n", who, caps)
			}
			fmt.Fprintf(w, "version:      %s, up since %s\n", st.Version, st.StartedAt)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newPeersCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "peers [--json]",
		Short: "List peers: endpoint, path, last handshake, traffic",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			peers, err := g.client().Peers(c.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return cmdutil.PrintJSON(g.stdout, peers)
			}
			if len(peers) == 0 {
				fmt.Fprintln(g.stdout, "no peers")
				return nil
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ADDRESS\tNAME\tENDPOINT\tPATH\tHANDSHAKE\tRX\tTX\tINBOUND")
			for _, p := range peers {
				ep := "-"
				if p.Endpoint != nil {
					ep = *p.Endpoint
				}
				hs := "never"
				if p.LastHandshake != nil {
					if t, err := time.Parse(time.RFC3339, *p.LastHandshake); err == nil {
						hs = time.Since(t).Round(time.Second).String() + " ago"
					}
				}
				if !p.Active {
					hs = "(inactive)"
				}
				in := "denied"
				if p.AllowedInbound {
					in = "allowed"
				}
				path := p.Path
				if p.Bridge != nil {
					path += " via " + *p.Bridge
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Address, cmdutil.OrDash(p.Name), ep, path, hs, units.Bytes(p.RxBytes), units.Bytes(p.TxBytes), in)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Show and change who may reach this node",
		Long: `Inbound traffic is denied unless a rule allows it; replies to flows this node
opened always pass. FROM is a node address (fc..), a public key, "*", or
an organisation membership: group:ORG/GROUP, org:ORG, name:GLOB (e.g.
name:*@sales.acme). A deny rule beats every allow rule, whatever its
source; it never stops replies to flows this node opened.
Changes apply at once and persist across restarts. Revoking cuts the
identity's live sessions and forgets the flows this node opened with it,
even if another rule still admits it for something else (revoking "*"
cuts only the peers no remaining rule admits).

  tomoe policy allow fc12:...:1 --proto tcp --ports 22,8000-8080
  tomoe policy allow group:acme/sales --proto tcp --ports 443 --for 2h
  tomoe policy deny name:mallory*
  tomoe policy explain name:alice@sales.acme --proto tcp --port 443
  tomoe policy test tests.toml
  tomoe policy revoke fc12:...:1
  tomoe policy list --json`,
	}
	var af ruleFlags
	allow := &cobra.Command{
		Use:   "allow FROM [--proto P] [--ports R] [--to DEST] [--for 2h | --until T]",
		Short: "Allow inbound traffic from an identity",
		Args:  exactArgs(1, "FROM: a node address, a public key, \"*\", group:ORG/GROUP, org:ORG or name:GLOB"),
		RunE: func(c *cobra.Command, args []string) error {
			req, err := af.request(args[0], false, time.Now())
			if err != nil {
				return err
			}
			resp, err := g.client().Allow(c.Context(), req)
			if err != nil {
				return err
			}
			if resp.Added {
				fmt.Fprintf(g.stdout, "allowed: %s\n", ruleString(resp.Rule))
			} else {
				fmt.Fprintf(g.stdout, "already allowed: %s\n", ruleString(resp.Rule))
			}
			return nil
		},
	}
	af.register(allow)
	revoke := &cobra.Command{
		Use:   "revoke FROM",
		Short: "Remove every rule for an identity and cut its sessions",
		Args:  exactArgs(1, "FROM: a node address, a public key or \"*\""),
		RunE: func(c *cobra.Command, args []string) error {
			if _, err := policy.ParseIdentity(args[0]); err != nil {
				return usageError("%v", err)
			}
			resp, err := g.client().Revoke(c.Context(), adminapi.RevokeRequest{From: args[0]})
			var apiErr *adminapi.APIError
			if errors.As(err, &apiErr) && apiErr.Code == 404 {
				return &exitError{code: ExitFailure, err: err}
			}
			if err != nil {
				return err
			}
			for _, r := range resp.Removed {
				fmt.Fprintf(g.stdout, "revoked: %s (%s)\n", ruleString(r), r.Source)
			}
			fmt.Fprintf(g.stdout, "sessions cut: %d\n", len(resp.PeersCut))
			return nil
		},
	}
	var asJSON bool
	list := &cobra.Command{
		Use:   "list [--json]",
		Short: "List the allow rules in force",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			rules, err := g.client().Policy(c.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return cmdutil.PrintJSON(g.stdout, rules)
			}
			if len(rules) == 0 {
				fmt.Fprintln(g.stdout, "no rules: all inbound traffic is denied (replies to this node's own flows pass)")
				return nil
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ACTION\tFROM\tTO\tPROTO\tPORTS\tUNTIL\tSOURCE")
			for _, r := range rules {
				p, to, until, action, origin := r.Ports, r.To, "-", r.Action, r.Origin
				if p == "" {
					p = "all"
				}
				if to == "" {
					to = "-"
				}
				if r.Until != nil {
					until = *r.Until
				}
				if action == "" {
					action = "allow"
				}
				if origin == "" {
					origin = r.Source
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", action, r.From, to, r.Proto, p, until, origin)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(allow, revoke, list)
	cmd.AddCommand(newPolicyDenyCmds(g)...)
	return cmd
}

func ruleString(r adminapi.Rule) string {
	s := "from " + r.From
	if r.Action == "deny" {
		s = "deny " + s
	}
	if r.To != "" {
		s += " to " + r.To
	}
	s += " proto " + r.Proto
	if r.Ports != "" {
		s += " ports " + r.Ports
	}
	if r.Until != nil {
		s += " until " + *r.Until
	}
	return s
}

func newEventsCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "events [--json]",
		Short: "Follow the node's events (peers up and down, handshakes, policy changes, denials)",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			err := g.client().Events(c.Context(), nil, func(ev adminapi.Event) {
				if asJSON {
					b, _ := json.Marshal(ev)
					fmt.Fprintln(g.stdout, string(b))
					return
				}
				parts := []string{ev.Time, ev.Type}
				for _, s := range []string{ev.Address, ev.Endpoint, ev.Detail} {
					if s != "" {
						parts = append(parts, s)
					}
				}
				fmt.Fprintln(g.stdout, strings.Join(parts, "  "))
			})
			if c.Context().Err() != nil {
				return nil // interrupted: a normal end
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per line")
	return cmd
}
