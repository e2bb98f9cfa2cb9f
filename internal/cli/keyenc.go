package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/fileperm"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/keyenc"
)

// terminalPrompt asks for passphrases; tests replace it.
var terminalPrompt keyenc.Prompt = keyenc.TerminalPrompt

// maxKeyInput bounds a key read from stdin or --in (an encrypted key is
// under 1 KiB).
const maxKeyInput = 64 << 10

func newKeyEncryptCmd(g *globals) *cobra.Command {
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
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if creds && passFile != "" {
				return usageError("--systemd-creds and --passphrase-file: give one")
			}
			if withKey != "" && !creds {
				return usageError("--with-key goes with --systemd-creds")
			}
			if force && out == "" {
				return usageError("--force goes with --out FILE")
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
					return &exitError{code: ExitFailure, err: err}
				}
				how = "a systemd credential named " + keyenc.CredentialName
			} else {
				var pass []byte
				if passFile != "" {
					pass, err = keyenc.ReadPassphraseFile(passFile)
				} else {
					pass, err = keyenc.NewPassphrase(terminalPrompt)
					if err != nil {
						err = fmt.Errorf("%w (give --passphrase-file FILE, or --systemd-creds, where there is no terminal)", err)
					}
				}
				if err != nil {
					return &exitError{code: ExitFailure, err: err}
				}
				data, err = keyenc.EncryptPassphrase(key, pass)
				clear(pass)
				if err != nil {
					return &exitError{code: ExitFailure, err: err}
				}
				how = "an age file, encrypted with the passphrase"
			}
			if out == "" {
				_, err := g.stdout.Write(data)
				return err
			}
			if err := keyenc.WriteFile(out, data, force); err != nil {
				return &exitError{code: ExitFailure, err: err}
			}
			fmt.Fprintf(g.stderr, "tomoe: wrote %s (%s, public key %s); point key_file at it, then remove the plain key\n", out, how, key.Public())
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
func readPlainKey(g *globals, in string) (identity.PrivateKey, error) {
	var r io.Reader = g.stdin
	from := "stdin"
	if in != "" {
		f, err := os.Open(in)
		if err != nil {
			return identity.PrivateKey{}, &exitError{code: ExitFailure, err: fmt.Errorf("--in: %w", err)}
		}
		defer f.Close()
		r, from = f, in
	}
	b, err := readKeyInput(r)
	defer clear(b)
	if err != nil {
		return identity.PrivateKey{}, &exitError{code: ExitFailure, err: fmt.Errorf("read %s: %w", from, err)}
	}
	if f := keyenc.Detect(b); f == keyenc.Age || f == keyenc.SystemdCred {
		return identity.PrivateKey{}, usageError("%s holds a key that is already encrypted (%s)", from, f)
	}
	line, err := readKeyLine(bytes.NewReader(b))
	if err != nil {
		if in != "" {
			err = fmt.Errorf("no key in %s", in)
		} else {
			err = errors.New("no key on stdin; try: tomoe key generate | tomoe key encrypt --out FILE")
		}
		return identity.PrivateKey{}, usageError("%v", err)
	}
	key, err := identity.ParsePrivateKey(line)
	if err != nil {
		return identity.PrivateKey{}, usageError("%s: %v", from, err)
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
func readAnyKey(g *globals, passFile string) (identity.PrivateKey, error) {
	b, err := readKeyInput(g.stdin)
	defer clear(b)
	if err != nil {
		return identity.PrivateKey{}, &exitError{code: ExitFailure, err: fmt.Errorf("read stdin: %w", err)}
	}
	switch keyenc.Detect(b) {
	case keyenc.Age, keyenc.SystemdCred:
		l, err := keyenc.Open("on stdin", b, keyenc.Sources{PassphraseFile: passFile, Prompt: terminalPrompt})
		if err != nil {
			return identity.PrivateKey{}, &exitError{code: ExitFailure, err: err}
		}
		return l.Key, nil
	}
	if passFile != "" {
		return identity.PrivateKey{}, usageError("--passphrase-file: the key on stdin is not encrypted")
	}
	line, err := readKeyLine(bytes.NewReader(b))
	if err != nil {
		return identity.PrivateKey{}, usageError("%v", err)
	}
	k, err := identity.ParsePrivateKey(line)
	if err != nil {
		return identity.PrivateKey{}, usageError("%v", err)
	}
	return k, nil
}

// checkKeyFile describes cfg's key file for config check, and its public
// key when it can be had without asking anyone: a plain key, or an
// encrypted one that key_passphrase_file opens. Nothing is created, and
// systemd-creds is not run.
func checkKeyFile(cfg *config.Config) (string, identity.PublicKey, error) {
	b, err := fileperm.ReadFile(cfg.KeyFile, "key file", fileperm.Secret)
	defer clear(b)
	switch {
	case errors.Is(err, fs.ErrNotExist) && cfg.KeyPassphraseFile != "":
		return "", identity.PublicKey{}, fmt.Errorf("%s does not exist, and key_passphrase_file is set, so tomoe will not create a plain key: create it with: tomoe key generate | tomoe key encrypt --passphrase-file %s --out %s", cfg.KeyFile, cfg.KeyPassphraseFile, cfg.KeyFile)
	case errors.Is(err, fs.ErrNotExist):
		return "will be created on first start", identity.PublicKey{}, nil
	case err != nil:
		return "", identity.PublicKey{}, err
	}
	switch f := keyenc.Detect(b); {
	case f == keyenc.SystemdCred:
		return "a systemd credential: systemd decrypts it for the unit with LoadCredentialEncrypted=" + keyenc.CredentialName + ":" + cfg.KeyFile + ", else tomoe up runs systemd-creds decrypt", identity.PublicKey{}, nil
	case f == keyenc.Age && cfg.KeyPassphraseFile == "":
		return "encrypted with a passphrase; tomoe up asks for it on the terminal (or set key_passphrase_file)", identity.PublicKey{}, nil
	}
	l, err := keyenc.Open(cfg.KeyFile, b, keyenc.Sources{PassphraseFile: cfg.KeyPassphraseFile})
	if err != nil {
		return "", identity.PublicKey{}, err
	}
	pub := l.Key.Public()
	if l.Format == keyenc.Age {
		return "ok, encrypted, opened with key_passphrase_file, address " + pub.Address().String(), pub, nil
	}
	return "ok, address " + pub.Address().String(), pub, nil
}
