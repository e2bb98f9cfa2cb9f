package cli

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/keyenc"
	"github.com/tomoe-net/tomoe/internal/node"
)

func newUpCmd(g *globals) *cobra.Command {
	var path, level string
	cmd := &cobra.Command{
		Use:   "up -c FILE",
		Short: "Run a node in the foreground until SIGINT or SIGTERM",
		Long: `Run a node in the foreground. Logs go to stderr. SIGINT or SIGTERM shuts it
down cleanly: its TUN device, address and routes are removed. SIGHUP makes
it read FILE again and apply the changes live, as 'tomoe reload' does.

Kernel mode (tun.mode = "kernel", the default) needs root or CAP_NET_ADMIN;
userspace mode needs no privileges. Started as root, the node runs as
run.user (default "tomoe" where that user exists) once it is up, keeping
only CAP_NET_ADMIN and CAP_NET_BIND_SERVICE.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if path == "" {
				return usageError("up needs -c FILE (see 'tomoe config check --help' and README's configuration reference)")
			}
			cfg, err := config.Load(path)
			if err != nil {
				return &exitError{code: ExitFailure, err: err}
			}
			lc := cfg.Log // the file's, for reloads to compare with
			if level != "" {
				if err := lc.Level.UnmarshalText([]byte(level)); err != nil {
					return usageError("--log-level: %v", err)
				}
			}
			log := newLogger(g.stderr, lc)
			// Before the node starts: a SIGHUP from then on reloads
			// instead of ending the process.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			opts := node.Options{Logger: log, Version: Version, ConfigPath: path, CredentialsDir: os.Getenv("CREDENTIALS_DIRECTORY")}
			if f, ok := g.stdin.(*os.File); ok && keyenc.IsTerminal(f) {
				opts.KeyPrompt = terminalPrompt
			}
			plan, err := prepareDrop(cfg, path, log)
			if err != nil {
				return &exitError{code: ExitFailure, err: err}
			}
			n, err := node.New(cfg, opts)
			if err != nil {
				return &exitError{code: ExitFailure, err: fmt.Errorf("start: %w", err)}
			}
			if plan != nil {
				if err := dropPrivileges(plan, cfg, log); err != nil {
					n.Close()
					return &exitError{code: ExitFailure, err: err}
				}
			}
		wait:
			for {
				select {
				case <-c.Context().Done():
					log.Info("shutting down")
					break wait
				case <-n.Done():
					break wait
				case <-hup:
					log.Info("SIGHUP: reloading the config", "file", path)
					n.Reload(c.Context()) // it logs what changed, or why not
				}
			}
			if err := n.Close(); err != nil {
				return &exitError{code: ExitFailure, err: fmt.Errorf("shutdown: %w", err)}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "config file (TOML)")
	cmd.Flags().StringVar(&level, "log-level", "", "override log.level: debug, info, warn or error")
	return cmd
}

func newLogger(w io.Writer, lc config.Log) *slog.Logger {
	opts := &slog.HandlerOptions{Level: lc.Level}
	if lc.Format == config.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
