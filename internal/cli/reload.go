package cli

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/cli/cmdutil"
)

func newReloadCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "reload [--json]",
		Short: "Make the node read its config file again and apply the changes",
		Long: `Make the running node read the config file it was started with again
(as SIGHUP to 'tomoe up' or 'systemctl reload tomoe' does) and apply what
changed, live: static peers, policy rules, routes, exposed services, port
forwards and proxies, and [[admin.allow]]. Rules and changes made through
the admin API, by organisations or by a console stay as they are.

Changed keys that only a restart applies (key_file, tun.*, listen.*, the
admin socket, log, [bridge], [[bridges]], [[orgs]], ...) are listed as
"needs restart" and left as they were.

An invalid file changes nothing: the problems are printed with their
FILE:LINE and the exit status is 1. Only the admin socket serves this.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			res, err := g.client().Reload(c.Context())
			var apiErr *adminapi.APIError
			if errors.As(err, &apiErr) && apiErr.Code == http.StatusUnprocessableEntity {
				return &exitError{code: ExitFailure, err: fmt.Errorf("config not reloaded, the node runs on unchanged:\n%s", apiErr.Message)}
			}
			if err != nil {
				return &exitError{code: ExitFailure, err: err}
			}
			if asJSON {
				if err := cmdutil.PrintJSON(g.stdout, res); err != nil {
					return err
				}
			} else {
				if res.Unchanged() {
					fmt.Fprintln(g.stdout, "unchanged: "+res.Summary())
				} else {
					fmt.Fprintln(g.stdout, res.Summary())
				}
				if len(res.PeersCut) > 0 {
					fmt.Fprintln(g.stdout, "sessions cut: "+strings.Join(res.PeersCut, ", "))
				}
				for _, w := range res.Warnings {
					fmt.Fprintln(g.stderr, "warning: "+w)
				}
			}
			if len(res.Errors) > 0 {
				return &exitError{code: ExitFailure, err: fmt.Errorf("reloaded, but not all of it: %s", strings.Join(res.Errors, "; "))}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
