package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/identity"
)

func newKeyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "Generate keys and derive addresses (works offline)",
		Long: `Keys are Curve25519 keys in standard base64, exactly as 'wg genkey' and
'wg pubkey' print them. A node's address is derived from its public key:

  tomoe key generate > node.key && chmod 600 node.key
  tomoe key public < node.key
  tomoe key address PUBKEY          # fc00::/8 node address
  tomoe key address --site PUBKEY   # site prefix /64
  tomoe key address --ipv4 PUBKEY   # IPv4 address in 100.64.0.0/10 (--prefix P: in P)
  tomoe key encrypt --in node.key --out node.key.age   # encrypted at rest`,
	}
	gen := &cobra.Command{
		Use:   "generate",
		Short: "Print a new private key",
		Args:  noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			k, err := identity.GeneratePrivateKey()
			if err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, k.Base64())
			return nil
		},
	}
	var passFile string
	pub := &cobra.Command{
		Use:   "public [--passphrase-file FILE]",
		Short: "Read a private key on stdin, print its public key",
		Long: `Read a private key on stdin, print its public key. The key may be encrypted
(tomoe key encrypt): a passphrase is read from --passphrase-file FILE or asked
on the terminal; a systemd credential is opened with systemd-creds decrypt.`,
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			k, err := readAnyKey(g, passFile)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.stdout, k.Public())
			return nil
		},
	}
	pub.Flags().StringVar(&passFile, "passphrase-file", "", "the passphrase of an encrypted key, on the first line of FILE")
	var site, ipv4 bool
	var ipv4Prefix string
	addr := &cobra.Command{
		Use:   "address [--site | --ipv4 [--prefix P]] PUBKEY",
		Short: "Print the node address (or the site prefix, or the IPv4 address) of a public key",
		Long: `Print the node address of a public key; with --site its site prefix, with
--ipv4 the IPv4 address that tun.ipv4 = "auto" gives it, in --prefix (the
tun.ipv4_prefix of the node that looks, default ` + identity.DefaultIPv4Prefix.String() + `).`,
		Args: exactArgs(1, "one public key (base64)"),
		RunE: func(c *cobra.Command, args []string) error {
			k, err := identity.ParsePublicKey(args[0])
			if err != nil {
				return usageError("%v", err)
			}
			if site && ipv4 {
				return usageError("--site and --ipv4: give one")
			}
			if c.Flags().Changed("prefix") && !ipv4 {
				return usageError("--prefix goes with --ipv4")
			}
			switch {
			case site:
				fmt.Fprintln(g.stdout, k.SitePrefix())
			case ipv4:
				p, err := config.ParseIPv4Prefix(ipv4Prefix)
				if err != nil {
					return usageError("--prefix %v", err)
				}
				a, err := k.IPv4Address(p)
				if err != nil {
					return usageError("--prefix %v", err)
				}
				fmt.Fprintln(g.stdout, a)
			default:
				fmt.Fprintln(g.stdout, k.Address())
			}
			return nil
		},
	}
	addr.Flags().BoolVar(&site, "site", false, "print the site prefix (prefix/64) instead of the node address")
	addr.Flags().BoolVar(&ipv4, "ipv4", false, "print the IPv4 address derived from the key (tun.ipv4 = \"auto\")")
	addr.Flags().StringVar(&ipv4Prefix, "prefix", identity.DefaultIPv4Prefix.String(), "with --ipv4: the prefix to derive it in (tun.ipv4_prefix)")
	cmd.AddCommand(gen, pub, addr, newKeyEncryptCmd(g))
	return cmd
}

// readKeyLine reads the first non-empty line of r (a key file).
func readKeyLine(r io.Reader) (string, error) {
	sc := bufio.NewScanner(io.LimitReader(r, 4096))
	for sc.Scan() {
		if s := strings.TrimSpace(sc.Text()); s != "" {
			return s, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read stdin: %w", err)
	}
	return "", errors.New("no key on stdin; try: tomoe key generate | tomoe key public")
}

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
				fmt.Fprintf(g.stdout, "  access:     %d port forwards, socks5 %s, http %s\n", n, orDash(cfg.Proxy.SOCKS5.String()), orDash(cfg.Proxy.HTTP.String()))
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
