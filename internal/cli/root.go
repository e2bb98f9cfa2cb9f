// Package cli is the `tomoe` command line: `tomoe <noun> <verb>`. Commands
// that act on a running node talk to it only through the admin API
// (internal/adminapi); key, config and demo commands work locally. Results
// go to stdout, diagnostics to stderr.
//
// Exit status: 0 success; 1 the operation failed (node unreachable, no
// reply, invalid config file, rule not found); 2 bad usage or bad input
// (unknown flag, malformed key, address or rule).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/cli/cmdutil"
	"github.com/tomoe-net/tomoe/internal/cli/consolecmd"
	"github.com/tomoe-net/tomoe/internal/cli/devicecmd"
	"github.com/tomoe-net/tomoe/internal/cli/keycmd"
	"github.com/tomoe-net/tomoe/internal/cli/l2cmd"
	"github.com/tomoe-net/tomoe/internal/cli/orgcmd"
	"github.com/tomoe-net/tomoe/internal/cli/svccmd"
	"github.com/tomoe-net/tomoe/internal/cli/uicmd"
	"github.com/tomoe-net/tomoe/internal/config"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// exitError carries an exit code with its message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError marks bad input (exit 2).
func usageError(format string, args ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf(format, args...)}
}

// failure marks an operation that did not succeed (exit 1), printing nothing more.
type silentFailure struct{}

func (silentFailure) Error() string { return "" }

// Version is set by main.
var Version = "dev"

type globals struct {
	socket string
	remote string // --remote: a node's admin API over the overlay
	stdout io.Writer
	stderr io.Writer
	stdin  io.Reader
}

func (g *globals) client() *adminapi.Client {
	remote := g.remote
	if remote == "" && g.socket == "" {
		remote = os.Getenv("TOMOE_REMOTE")
	}
	if remote != "" {
		return adminapi.NewRemoteClient(remote)
	}
	path := g.socket
	if path == "" {
		path = os.Getenv("TOMOE_SOCKET")
	}
	if path == "" {
		path = defaultSocket(config.DefaultSocket(), systemSocket)
	}
	return adminapi.NewClient(path)
}

// systemSocket is the admin socket of the node the packages' service runs.
const systemSocket = "/run/tomoe/admin.sock"

// defaultSocket is the user's own node's socket, or, when there is none
// and the system's service has one, the system's: a member of group tomoe
// then reaches the service's node without naming its socket.
func defaultSocket(own, system string) string {
	if _, err := os.Stat(own); err != nil && own != system {
		if fi, err := os.Stat(system); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return system
		}
	}
	return own
}

// Main runs the CLI with args (without the program name) and returns the
// exit status.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr, stdin: stdin}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	var coded interface{ ExitCode() int } // errors of command packages beside cli (orgcmd)
	switch {
	case errors.As(err, &ee):
		if ee.err.Error() != "" {
			fmt.Fprintln(stderr, "tomoe: "+ee.err.Error())
		}
		return ee.code
	case errors.As(err, &coded):
		if err.Error() != "" {
			fmt.Fprintln(stderr, "tomoe: "+err.Error())
		}
		return coded.ExitCode()
	case errors.Is(err, silentFailure{}):
		return ExitFailure
	case isCobraUsage(err):
		fmt.Fprintln(stderr, "tomoe: "+err.Error()+" (see 'tomoe --help' or 'tomoe COMMAND --help')")
		return ExitUsage
	}
	var apiErr *adminapi.APIError
	if errors.As(err, &apiErr) && apiErr.Code == 400 {
		fmt.Fprintln(stderr, "tomoe: "+err.Error())
		return ExitUsage
	}
	fmt.Fprintln(stderr, "tomoe: "+err.Error())
	return ExitFailure
}

// flagError wraps cobra's argument and flag errors so Main can tell them apart.
type flagError struct{ error }

func isCobraUsage(err error) bool {
	var fe flagError
	return errors.As(err, &fe)
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "tomoe",
		Short: "tomoe: a zero-trust peer-to-peer overlay network",
		Long: `tomoe connects devices into an overlay network whose addresses are hashes
of the devices' public keys. Traffic is encrypted from one device's TUN to the
destination's daemon (WireGuard), and every node decides for itself who may
reach it: inbound is denied unless a rule allows it.

Run a node with 'tomoe up -c FILE'; the other commands talk to it through its
admin socket (--socket, or TOMOE_SOCKET), or with --remote ADDR to another
node's admin API over the overlay (it must list this node in
[[admin.allow]]). 'tomoe demo' shows a three-node network in one process,
without root.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.socket, "socket", "", "admin socket of the node (default $TOMOE_SOCKET, else "+config.DefaultSocket()+")")
	root.PersistentFlags().StringVar(&g.remote, "remote", "", "talk to the admin API of the node at this overlay address or .tomoe name instead (port 4680, over the overlay; default $TOMOE_REMOTE)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return flagError{err} })
	root.AddCommand(
		newUpCmd(g),
		newDemoCmd(g),
		keycmd.Command(keycmd.Env{Stdin: g.stdin, Stdout: g.stdout, Stderr: g.stderr, NoArgs: noArgs, ExactArgs: exactArgs, UsageError: usageError,
			Prompt: func(q string) ([]byte, error) { return terminalPrompt(q) }}),
		newConfigCmd(g),
		newStatusCmd(g),
		newPeersCmd(g),
		consolecmd.Command(g.client, g.stdout, noArgs),
		newPolicyCmd(g),
		newPingCmd(g),
		newEventsCmd(g),
		newReloadCmd(g),
		newBridgeCmd(g),
		&cobra.Command{
			Use:   "version",
			Short: "Print the version",
			Args:  noArgs,
			Run:   func(c *cobra.Command, _ []string) { fmt.Fprintln(g.stdout, "tomoe "+Version) },
		},
	)
	root.AddCommand(uicmd.Command(g.stdout, g.client, nil))
	nodeEnv := cmdutil.Env{Client: g.client, Stdout: g.stdout, Stderr: g.stderr, NoArgs: noArgs, ExactArgs: exactArgs, UsageError: usageError}
	root.AddCommand(l2cmd.Command(nodeEnv))
	root.AddCommand(devicecmd.Command(nodeEnv))
	root.AddCommand(orgcmd.Commands(orgcmd.Env{Stdin: g.stdin, Stdout: g.stdout, Stderr: g.stderr, Client: g.client})...)
	root.AddCommand(svccmd.Commands(nodeEnv)...)
	strictGroups(root)
	return root
}

// strictGroups makes every command that only groups others (tomoe, tomoe
// policy, tomoe org, ...) refuse an unknown subcommand with a usage error
// (exit status 2) instead of printing its help and succeeding; alone, it
// still prints its help.
func strictGroups(c *cobra.Command) {
	for _, sub := range c.Commands() {
		strictGroups(sub)
	}
	if !c.HasSubCommands() || c.Runnable() {
		return
	}
	c.SuggestionsMinimumDistance = 2
	c.Args = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf(" (did you mean %q?)", s[0])
		}
		return flagError{errors.New(msg)}
	}
	c.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
}

// Positional-argument validators that report usage errors.
func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return flagError{fmt.Errorf("%s takes no arguments, got %q", c.CommandPath(), args)}
	}
	return nil
}

func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) != n {
			return flagError{fmt.Errorf("%s needs %s", c.CommandPath(), names)}
		}
		return nil
	}
}
