// Package uicmd is `tomoe ui`: it asks the running node, over its admin
// socket, for a single-use login URL of the web UI ([admin] web), prints
// it, and with --open hands it to the desktop's browser (xdg-open).
// Only users allowed on the admin socket get one.
package uicmd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"time"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/cli/cmdutil"
)

// ExitError carries the exit status (1 failure, 2 bad usage) for cli.Main.
type ExitError = cmdutil.ExitError

// Command returns `tomoe ui`. opener opens a URL in a browser; nil means
// xdg-open.
func Command(stdout io.Writer, client func() *adminapi.Client, opener func(url string) error) *cobra.Command {
	if opener == nil {
		opener = xdgOpen
	}
	var open, asJSON bool
	c := &cobra.Command{
		Use:   "ui [--open] [--json]",
		Short: "Print a single-use login URL for the node's web UI (valid 60 s); --open opens it",
		Long: `Print a URL that logs a browser into the node's web UI ([admin] web in the
config). The URL carries a token that works once, for 60 seconds; only users
allowed on the admin socket can get one. With --open, hand it to the desktop's
browser (xdg-open).`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return &ExitError{Code: 2, Err: fmt.Errorf("%s takes no arguments, got %q", c.CommandPath(), args)}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			tok, err := client().UIToken(ctx)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(tok); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(stdout, tok.URL)
			}
			if open {
				if err := opener(tok.URL); err != nil {
					return &ExitError{Code: 1, Err: fmt.Errorf("cannot open a browser (%v): open the URL above by hand", err)}
				}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&open, "open", false, "open the URL with xdg-open")
	c.Flags().BoolVar(&asJSON, "json", false, "print {\"url\", \"expires\"} as JSON")
	return c
}

// xdgOpen hands url to the desktop's default browser and waits for
// xdg-open to say whether it could.
func xdgOpen(url string) error {
	path, err := exec.LookPath("xdg-open")
	if err != nil {
		return err
	}
	out, err := exec.Command(path, url).CombinedOutput()
	if err != nil {
		return fmt.Errorf("xdg-open: %v %s", err, out)
	}
	return nil
}
