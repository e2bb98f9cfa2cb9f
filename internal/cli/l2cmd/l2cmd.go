// Package l2cmd is `tomoe l2`: the virtual Ethernet segments a node takes
// part in, and their members.
package l2cmd

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/cli/cmdutil"
)

// Env is what the commands get from package cli (cmdutil.Env).
type Env = cmdutil.Env

// Command returns `tomoe l2`.
func Command(g Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "l2 [--json]",
		Short: "Virtual Ethernet segments: members, MAC addresses, counters",
		Long: `A segment ([[l2]] in the config, kernel mode) is one Ethernet across
nodes: a Linux bridge on each, and a VXLAN tunnel inside the overlay to each
other member (or to the hub, or on the hub to each member). Lists each
segment's tunnels: whether the overlay has a live session with the far end,
the MAC addresses learned behind it, and frame counters (in: from the far
end into the segment; out: to it).

  tomoe l2 add office fc12:...      a member joins the segment, at once
  tomoe l2 remove office fc12:...   a member leaves it, its frames refused at once
  tomoe l2 add office group:acme/office   every node this one holds a valid
                                          acme certificate of, in group office

A member named by certificate (group:, org:, name:) has a tunnel once this
node holds its valid certificate (from a session with it, or a bridge's
lookup), and loses it when the certificate is revoked, expires or no longer
matches. --json lists, for each, the nodes it matched (cert_members, and
each tunnel's matched_by and cert_names).

Changes are kept in services.json beside the key file, over the config
file's members, across restarts.`,
		Args: g.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			r, err := g.Client().L2(c.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return cmdutil.PrintJSON(g.Stdout, r)
			}
			if len(r.Segments) == 0 {
				fmt.Fprintln(g.Stdout, "no virtual Ethernet segments ([[l2]] in the config, kernel mode)")
				return nil
			}
			for i, s := range r.Segments {
				if i > 0 {
					fmt.Fprintln(g.Stdout)
				}
				role := "full mesh"
				if s.Hub {
					role = "hub"
				} else if len(s.Members) == 1 {
					role = "member (one tunnel)"
				}
				fmt.Fprintf(g.Stdout, "segment %s: bridge %s, MTU %d, %s, %d/%d MAC addresses learned\n", s.Name, s.Interface, s.MTU, role, s.MACs, s.MaxMACs)
				tw := tabwriter.NewWriter(g.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "MEMBER\tSTATE\tDEVICE\tVNI\tMACS\tFRAMES IN\tFRAMES OUT\tBYTES IN\tBYTES OUT")
				for _, m := range s.Members {
					state := "down"
					if m.Up {
						state = "up"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", m.Address, state, m.Device, m.VNI, m.MACs,
						m.Counters.RxFrames, m.Counters.TxFrames, m.Counters.RxBytes, m.Counters.TxBytes)
				}
				if s.Attach != "" && s.AttachCounters != nil {
					c := s.AttachCounters
					fmt.Fprintf(tw, "%s (attached)\t-\t%s\t-\t%d\t%d\t%d\t%d\t%d\n", s.Attach, s.Attach, s.AttachMACs, c.RxFrames, c.TxFrames, c.RxBytes, c.TxBytes)
				}
				tw.Flush()
				if s.STP {
					fmt.Fprintf(g.Stdout, "spanning tree: attached port %s %s, overlay %s\n", s.Attach, s.AttachState, s.OverlayState)
				}
				for _, cm := range s.CertMembers {
					fmt.Fprintf(g.Stdout, "%s: %d with a tunnel", cm.Member, len(cm.Matched))
					for _, m := range s.Members {
						for _, a := range cm.Matched {
							if m.Address == a && len(m.CertNames) > 0 {
								fmt.Fprintf(g.Stdout, "; %s %v", a, m.CertNames)
							}
						}
					}
					fmt.Fprintln(g.Stdout)
				}
				if s.LeftOut > 0 {
					fmt.Fprintf(g.Stdout, "%d more members have no tunnel: at most %d per segment\n", s.LeftOut, s.MaxTunnels)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	change := func(op, use, short string) *cobra.Command {
		return &cobra.Command{
			Use:   use,
			Short: short,
			Args:  g.ExactArgs(2, "SEGMENT MEMBER"),
			RunE: func(c *cobra.Command, args []string) error {
				r, err := g.Client().ChangeL2(c.Context(), adminapi.L2Change{Segment: args[0], Op: op, Member: args[1]})
				if err != nil {
					return err
				}
				for _, s := range r.Segments {
					if s.Name == args[0] {
						fmt.Fprintf(g.Stdout, "segment %s: %d tunnels\n", s.Name, len(s.Members))
					}
				}
				fmt.Fprintln(g.Stderr, "changed; kept across restarts (services.json beside the key file)")
				return nil
			},
		}
	}
	cmd.AddCommand(
		change(adminapi.L2Add, "add SEGMENT MEMBER", "Add a member (public key, node address, group:, org: or name:) to a segment, at once"),
		change(adminapi.L2Remove, "remove SEGMENT MEMBER", "Remove a member from a segment: its frames are refused at once"),
	)
	return cmd
}
