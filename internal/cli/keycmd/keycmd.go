// Package keycmd is `tomoe key`: private keys made, read (plain or
// encrypted at rest, package keyenc) and encrypted, and the addresses a
// public key gives. It works offline: no node is involved.
package keycmd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/keyenc"
)

// Env is where the commands read and write, how they report usage errors
// (exit status 2; other errors exit 1) and how they ask for a passphrase.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	NoArgs         cobra.PositionalArgs
	ExactArgs      func(n int, names string) cobra.PositionalArgs
	UsageError     func(format string, args ...any) error
	// Prompt asks for a passphrase without echo (keyenc.TerminalPrompt).
	Prompt keyenc.Prompt
}

type env struct{ Env }

// Command returns `tomoe key`.
func Command(e Env) *cobra.Command {
	g := &env{e}
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
		Args:  g.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			k, err := identity.GeneratePrivateKey()
			if err != nil {
				return err
			}
			fmt.Fprintln(g.Stdout, k.Base64())
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
		Args: g.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			k, err := readAnyKey(g, passFile)
			if err != nil {
				return err
			}
			fmt.Fprintln(g.Stdout, k.Public())
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
		Args: g.ExactArgs(1, "one public key (base64)"),
		RunE: func(c *cobra.Command, args []string) error {
			k, err := identity.ParsePublicKey(args[0])
			if err != nil {
				return g.UsageError("%v", err)
			}
			if site && ipv4 {
				return g.UsageError("--site and --ipv4: give one")
			}
			if c.Flags().Changed("prefix") && !ipv4 {
				return g.UsageError("--prefix goes with --ipv4")
			}
			switch {
			case site:
				fmt.Fprintln(g.Stdout, k.SitePrefix())
			case ipv4:
				p, err := config.ParseIPv4Prefix(ipv4Prefix)
				if err != nil {
					return g.UsageError("--prefix %v", err)
				}
				a, err := k.IPv4Address(p)
				if err != nil {
					return g.UsageError("--prefix %v", err)
				}
				fmt.Fprintln(g.Stdout, a)
			default:
				fmt.Fprintln(g.Stdout, k.Address())
			}
			return nil
		},
	}
	addr.Flags().BoolVar(&site, "site", false, "print the site prefix (prefix/64) instead of the node address")
	addr.Flags().BoolVar(&ipv4, "ipv4", false, "print the IPv4 address derived from the key (tun.ipv4 = \"auto\")")
	addr.Flags().StringVar(&ipv4Prefix, "prefix", identity.DefaultIPv4Prefix.String(), "with --ipv4: the prefix to derive it in (tun.ipv4_prefix)")
	cmd.AddCommand(gen, pub, addr, newEncryptCmd(g))
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

// maxKeyInput bounds a key read from stdin or --in (an encrypted key is
// under 1 KiB).
const maxKeyInput = 64 << 10

func newEncryptCmd(g *env) *cobra.Command {
	var in, out, passFile, withKey string
	var creds, force bool
	cmd := &cobra.Command{
		Use:   "encrypt [--in FILE] [--out FILE] [--passphrase-file FILE | --systemd-creds]",
		Short: "Encrypt a private key with a passphrase (age) or as a systemd credential",
		Long: `Read a private key (the base64 line of 'tomoe key generate', from --in FILE or
stdin) and write it encrypted to --out FILE (mode 0600; an existing file only
with --force) or stdout. key_file may then name the encrypted file: tomoe up
decrypts it in memory and never writes the key decrypted to disk.

With a passphrase (the default): an age file (age-encryption.org, scrypt), that
'age -d' also opens. The passphrase is asked twice on the terminal, or read
from the first line of --passphrase-file FILE (a file only its owner can
read). tomoe up reads it from key_passphrase_file, or asks on the terminal.

With --systemd-creds: 'systemd-creds encrypt --name=tomoe-key' makes a systemd
credential, bound to this host's TPM2 where it has one (--with-key chooses:
host, tpm2, host+tpm2, auto). The unit hands it to tomoe decrypted with
LoadCredentialEncrypted=tomoe-key:FILE; outside systemd, tomoe up runs
systemd-creds decrypt (as root).

  tomoe key generate | tomoe key encrypt --out /var/lib/tomoe/node.key.age
  tomoe key encrypt --in node.key --systemd-creds --out /var/lib/tomoe/node.key.cred`,
		Args: g.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if creds && passFile != "" {
				return g.UsageError("--systemd-creds and --passphrase-file: give one")
			}
			if withKey != "" && !creds {
				return g.UsageError("--with-key goes with --systemd-creds")
			}
			if force && out == "" {
				return g.UsageError("--force goes with --out FILE")
			}
			key, err := readPlainKey(g, in)
			if err != nil {
				return err
			}
			var data []byte
			var how string
			if creds {
				data, err = keyenc.SystemdCreds{WithKey: withKey}.Encrypt(c.Context(), key)
				if err != nil {
					return err
				}
				how = "a systemd credential named " + keyenc.CredentialName
			} else {
				var pass []byte
				if passFile != "" {
					pass, err = keyenc.ReadPassphraseFile(passFile)
				} else {
					pass, err = keyenc.NewPassphrase(g.Prompt)
					if err != nil {
						err = fmt.Errorf("%w (give --passphrase-file FILE, or --systemd-creds, where there is no terminal)", err)
					}
				}
				if err != nil {
					return err
				}
				data, err = keyenc.EncryptPassphrase(key, pass)
				clear(pass)
				if err != nil {
					return err
				}
				how = "an age file, encrypted with the passphrase"
			}
			if out == "" {
				_, err := g.Stdout.Write(data)
				return err
			}
			if err := keyenc.WriteFile(out, data, force); err != nil {
				return err
			}
			fmt.Fprintf(g.Stderr, "tomoe: wrote %s (%s, public key %s); point key_file at it, then remove the plain key\n", out, how, key.Public())
			return nil
		},
	}
	cmd.Flags().StringVar(&in, "in", "", "read the private key from FILE (default stdin)")
	cmd.Flags().StringVar(&out, "out", "", "write the encrypted key to FILE, mode 0600 (default stdout)")
	cmd.Flags().StringVar(&passFile, "passphrase-file", "", "read the passphrase from the first line of FILE instead of asking on the terminal")
	cmd.Flags().BoolVar(&creds, "systemd-creds", false, "encrypt with systemd-creds (the host's TPM2 where present) instead of a passphrase")
	cmd.Flags().StringVar(&withKey, "with-key", "", "with --systemd-creds: systemd-creds' --with-key (host, tpm2, host+tpm2, auto; default auto)")
	cmd.Flags().BoolVar(&force, "force", false, "replace --out FILE if it exists")
	return cmd
}

// readPlainKey reads the plain private key to encrypt from the file in, or
// stdin.
func readPlainKey(g *env, in string) (identity.PrivateKey, error) {
	var r io.Reader = g.Stdin
	from := "stdin"
	if in != "" {
		f, err := os.Open(in)
		if err != nil {
			return identity.PrivateKey{}, fmt.Errorf("--in: %w", err)
		}
		defer f.Close()
		r, from = f, in
	}
	b, err := readKeyInput(r)
	defer clear(b)
	if err != nil {
		return identity.PrivateKey{}, fmt.Errorf("read %s: %w", from, err)
	}
	if f := keyenc.Detect(b); f == keyenc.Age || f == keyenc.SystemdCred {
		return identity.PrivateKey{}, g.UsageError("%s holds a key that is already encrypted (%s)", from, f)
	}
	line, err := readKeyLine(bytes.NewReader(b))
	if err != nil {
		if in != "" {
			err = fmt.Errorf("no key in %s", in)
		} else {
			err = errors.New("no key on stdin; try: tomoe key generate | tomoe key encrypt --out FILE")
		}
		return identity.PrivateKey{}, g.UsageError("%v", err)
	}
	key, err := identity.ParsePrivateKey(line)
	if err != nil {
		return identity.PrivateKey{}, g.UsageError("%s: %v", from, err)
	}
	return key, nil
}

// readKeyInput reads a key in any form from r: a plain key's line alone
// (so that a key typed or pasted on a terminal needs no end of file), or
// else everything up to the end of the input (an encrypted key spans
// lines).
func readKeyInput(r io.Reader) ([]byte, error) {
	br := bufio.NewReader(io.LimitReader(r, maxKeyInput))
	var b []byte
	for {
		line, err := br.ReadBytes('\n')
		b = append(b, line...)
		clear(line)
		if len(bytes.TrimSpace(b)) > 0 || err != nil {
			if err == io.EOF {
				err = nil
			}
			if err != nil || keyenc.Detect(b) == keyenc.Plain {
				return b, err
			}
			break
		}
	}
	rest, err := io.ReadAll(br)
	b = append(b, rest...)
	clear(rest)
	return b, err
}

// readAnyKey reads a private key on stdin in any form a key file takes:
// plain, or encrypted (opened with passFile or the terminal, or with
// systemd-creds).
func readAnyKey(g *env, passFile string) (identity.PrivateKey, error) {
	b, err := readKeyInput(g.Stdin)
	defer clear(b)
	if err != nil {
		return identity.PrivateKey{}, fmt.Errorf("read stdin: %w", err)
	}
	switch keyenc.Detect(b) {
	case keyenc.Age, keyenc.SystemdCred:
		l, err := keyenc.Open("on stdin", b, keyenc.Sources{PassphraseFile: passFile, Prompt: g.Prompt})
		if err != nil {
			return identity.PrivateKey{}, err
		}
		return l.Key, nil
	}
	if passFile != "" {
		return identity.PrivateKey{}, g.UsageError("--passphrase-file: the key on stdin is not encrypted")
	}
	line, err := readKeyLine(bytes.NewReader(b))
	if err != nil {
		return identity.PrivateKey{}, g.UsageError("%v", err)
	}
	k, err := identity.ParsePrivateKey(line)
	if err != nil {
		return identity.PrivateKey{}, g.UsageError("%v", err)
	}
	return k, nil
}
