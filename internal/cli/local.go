package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/cli/cmdutil"
	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/fileperm"
)

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Check configuration files"}
	var path string
	check := &cobra.Command{
		Use:   "check -c FILE",
		Short: "Validate a config file without touching the system",
		Long: `Validate a config file: syntax, every key and value, and the key file's
permissions if it exists. Nothing is created or changed. Exit status 0 if the
file is valid, 1 if not (each problem is printed on its own line, naming the key).`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if path == "" {
				return usageError("config check needs -c FILE")
			}
			cfg, err := config.Load(path)
			if err != nil {
				return &exitError{code: ExitFailure, err: err}
			}
			// As root, check as `tomoe up` would: trusting the files of
			// the user it becomes (run.user).
			fileperm.TrustNextUser(cfg.RunUID())
			key, pub, err := checkKeyFile(cfg)
			if err != nil {
				return &exitError{code: ExitFailure, err: fmt.Errorf("%s: key_file: %w", path, err)}
			}
			fmt.Fprintf(g.stdout, "%s: ok\n", path)
			fmt.Fprintf(g.stdout, "  key_file:   %s (%s)\n", cfg.KeyFile, key)
			fmt.Fprintf(g.stdout, "  tun:        %s", cfg.TUN.Mode)
			if cfg.TUN.Mode == config.ModeKernel {
				fmt.Fprintf(g.stdout, " %s", cfg.TUN.Name)
			}
			fmt.Fprintf(g.stdout, ", mtu %d\n", cfg.TUN.MTU)
			fmt.Fprintf(g.stdout, "  listen.udp: %s\n", cfg.Listen.UDP)
			fmt.Fprintf(g.stdout, "  admin:      %s\n", cfg.Admin.Socket)
			fmt.Fprintf(g.stdout, "  peers:      %d static\n", len(cfg.Peers))
			fmt.Fprintf(g.stdout, "  policy:     %d allow rules in the file; changes made through the API are kept in %s\n", len(cfg.Policy.Allow), cfg.StateFile())
			switch v4 := cfg.IPv4(pub); {
			case cfg.TUN.IPv4.Auto && pub.IsZero():
				fmt.Fprintf(g.stdout, "  ipv4:       auto: derived from the key in %s (offered to peers as a /32)\n", cfg.TUN.IPv4Prefix)
			case cfg.TUN.IPv4.Auto:
				fmt.Fprintf(g.stdout, "  ipv4:       %s (auto: derived from the key in %s; offered to peers as %s/32)\n", v4, cfg.TUN.IPv4Prefix, v4)
			case v4.IsValid():
				fmt.Fprintf(g.stdout, "  ipv4:       %s (offered to peers as %s/32)\n", v4, v4)
			}
			if len(cfg.Routes.Offer)+len(cfg.Routes.Accept) > 0 {
				fmt.Fprintf(g.stdout, "  routes:     %d offered, %d accept rules\n", len(cfg.Routes.Offer), len(cfg.Routes.Accept))
			}
			if n := len(cfg.Expose); n > 0 {
				fmt.Fprintf(g.stdout, "  expose:     %d services on the node address\n", n)
			}
			if n := len(cfg.Connect); n > 0 || cfg.Proxy.SOCKS5.IsSet() || cfg.Proxy.HTTP.IsSet() {
				fmt.Fprintf(g.stdout, "  access:     %d port forwards, socks5 %s, http %s\n", n, cmdutil.OrDash(cfg.Proxy.SOCKS5.String()), cmdutil.OrDash(cfg.Proxy.HTTP.String()))
			}
			if len(cfg.AllowedLocalUsers) > 0 {
				fmt.Fprintf(g.stdout, "  users:      only %s reach the overlay\n", strings.Join(cfg.AllowedLocalUsers, ", "))
			}
			if cfg.Listen.Stealth {
				fmt.Fprintf(g.stdout, "  stealth:    on (nothing unsolicited answered on physical interfaces)\n")
			}
			return nil
		},
	}
	check.Flags().StringVarP(&path, "config", "c", "", "config file (TOML)")
	cmd.AddCommand(check)
	return cmd
}
