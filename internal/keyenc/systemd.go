package keyenc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// CredentialName is the name a key credential carries and the file
// systemd hands the decrypted key in: a unit says
// LoadCredentialEncrypted=tomoe-key:/var/lib/tomoe/node.key.cred and tomoe
// reads $CREDENTIALS_DIRECTORY/tomoe-key.
const CredentialName = "tomoe-key"

// ErrNoSystemdCreds is returned when the systemd-creds program is not
// found.
var ErrNoSystemdCreds = errors.New("systemd-creds not found on PATH (it comes with systemd 250 or later)")

// SystemdCreds runs the systemd-creds program. The key goes to it and
// comes back through pipes, never through a file.
type SystemdCreds struct {
	// Path is the program; "" finds systemd-creds on PATH.
	Path string
	// WithKey is systemd-creds' --with-key (host, tpm2, host+tpm2, auto,
	// ...); "" leaves systemd-creds' default, auto: the host's TPM2 where
	// there is one, and the host key in /var/lib/systemd.
	WithKey string
}

func (s SystemdCreds) path() (string, error) {
	if s.Path != "" {
		return s.Path, nil
	}
	p, err := exec.LookPath("systemd-creds")
	if err != nil {
		return "", ErrNoSystemdCreds
	}
	return p, nil
}

// Encrypt returns key as a systemd credential named tomoe-key (the output
// of systemd-creds encrypt --name=tomoe-key - -).
func (s SystemdCreds) Encrypt(ctx context.Context, key identity.PrivateKey) ([]byte, error) {
	args := []string{"encrypt", "--name=" + CredentialName}
	if s.WithKey != "" {
		args = append(args, "--with-key="+s.WithKey)
	}
	line := []byte(key.Base64() + "\n")
	defer clear(line)
	out, err := s.run(ctx, line, append(args, "-", "-")...)
	if err != nil {
		return nil, err
	}
	if Detect(out) != SystemdCred {
		return nil, errors.New("systemd-creds encrypt: its output is not a credential (base64 text)")
	}
	return out, nil
}

// Decrypt opens cred, a credential named tomoe-key, with systemd-creds
// decrypt. It works only where the credential was made (its host key, its
// TPM2), and the host key is readable by root only.
func (s SystemdCreds) Decrypt(ctx context.Context, cred []byte) (identity.PrivateKey, error) {
	out, err := s.run(ctx, cred, "decrypt", "--name="+CredentialName, "-", "-")
	defer clear(out)
	if err != nil {
		return identity.PrivateKey{}, err
	}
	key, err := identity.ParsePrivateKey(string(bytes.TrimSpace(out)))
	if err != nil {
		return identity.PrivateKey{}, fmt.Errorf("systemd-creds decrypt: the credential holds no key: %v", err)
	}
	return key, nil
}

func (s SystemdCreds) run(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	p, err := s.path()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, p, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		clear(out.Bytes())
		msg := lastLine(errb.String())
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("systemd-creds %s: %s", args[0], msg)
	}
	return out.Bytes(), nil
}

// lastLine is the last non-empty line of s, which is where systemd-creds
// puts its reason (warnings about null keys come before it).
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
