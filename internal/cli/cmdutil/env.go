package cmdutil

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/adminapi"
)

// Env is what a command group that talks to the running node (svccmd,
// devicecmd, l2cmd) gets from package cli: the admin API, where to write,
// and the command line's own argument checks (usage errors exit with
// status 2).
type Env struct {
	Client         func() *adminapi.Client
	Stdout, Stderr io.Writer
	NoArgs         cobra.PositionalArgs
	ExactArgs      func(n int, names string) cobra.PositionalArgs
	UsageError     func(format string, args ...any) error
}
