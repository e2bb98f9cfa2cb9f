package cli

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/demo"
)

func newDemoCmd(g *globals) *cobra.Command {
	var verbose bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a three-node network in this process (no root) and check it works",
		Long: `Start three nodes (alice, bob, mallory) in userspace mode in this process,
talking over loopback UDP. alice serves HTTP on her overlay address and allows
only bob. The demo checks that bob fetches the page, that mallory is refused,
that a packet with a forged source address is dropped, and that default deny
holds in the other direction too. Exit status 0 if every check passed.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			opts := demo.Options{RefuseTimeout: wait}
			if verbose {
				opts.Log = g.stderr
			}
			if err := demo.Run(c.Context(), g.stdout, opts); err != nil {
				return &exitError{code: ExitFailure, err: err}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print the nodes' logs to stderr")
	cmd.Flags().DurationVar(&wait, "refuse-timeout", 3*time.Second, "how long mallory waits before she counts as refused")
	return cmd
}
