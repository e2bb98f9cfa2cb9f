package keyenc

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// keyDir is a directory only its owner can use, as a key's must be.
func keyDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, mode)
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one with %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not say %q", err, p)
		}
	}
}

func TestLoadPlainAndCreate(t *testing.T) {
	dir := keyDir(t)
	path := filepath.Join(dir, "node.key")
	l, err := LoadOrCreate(path, Sources{})
	if err != nil || !l.Created || l.Format != Plain {
		t.Fatalf("create: %+v, %v", l, err)
	}
	again, err := LoadOrCreate(path, Sources{})
	if err != nil || again.Created || again.Key.Public() != l.Key.Public() {
		t.Fatalf("reload: %+v, %v", again, err)
	}
	// With a passphrase file set, a missing key file is not made plain.
	pass := filepath.Join(dir, "pass")
	writeFile(t, pass, "pw\n", 0o600)
	missing := filepath.Join(dir, "new.key.age")
	_, err = LoadOrCreate(missing, Sources{PassphraseFile: pass})
	wantErr(t, err, missing, "does not exist", "tomoe key generate | tomoe key encrypt --passphrase-file "+pass+" --out "+missing)
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Error("a key file was created")
	}
	writeFile(t, path, "garbage\n", 0o600)
	_, err = LoadOrCreate(path, Sources{})
	wantErr(t, err, path, "age file from tomoe key encrypt")
}

func TestLoadAge(t *testing.T) {
	dir := keyDir(t)
	k := newKey(t)
	data, err := EncryptPassphrase(k, []byte("s3cret pass"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "node.key.age")
	writeFile(t, path, string(data), 0o600)
	pass := filepath.Join(dir, "pass")
	writeFile(t, pass, "s3cret pass\n", 0o600)

	l, err := LoadOrCreate(path, Sources{PassphraseFile: pass})
	if err != nil || l.Key.Public() != k.Public() || l.Format != Age || l.Created {
		t.Fatalf("passphrase file: %+v, %v", l, err)
	}
	if !strings.Contains(l.From, pass) {
		t.Errorf("From = %q", l.From)
	}
	// The prompt, when no file is set.
	asked := ""
	prompt := func(q string) ([]byte, error) { asked = q; return []byte("s3cret pass"), nil }
	l, err = LoadOrCreate(path, Sources{Prompt: prompt})
	if err != nil || l.Key.Public() != k.Public() || !strings.Contains(asked, path) {
		t.Fatalf("prompt: %+v, %v (asked %q)", l, err, asked)
	}
	// The file wins over the prompt.
	l, err = LoadOrCreate(path, Sources{PassphraseFile: pass, Prompt: func(string) ([]byte, error) { t.Fatal("prompted"); return nil, nil }})
	if err != nil || l.Key.Public() != k.Public() {
		t.Fatalf("file and prompt: %v", err)
	}
	_, err = LoadOrCreate(path, Sources{})
	wantErr(t, err, path, "key_passphrase_file", "terminal")
	_, err = LoadOrCreate(path, Sources{Prompt: func(string) ([]byte, error) { return nil, errors.New("no tty") }})
	wantErr(t, err, path, "no tty")

	writeFile(t, pass, "wrong\n", 0o600)
	_, err = LoadOrCreate(path, Sources{PassphraseFile: pass})
	wantErr(t, err, path, "wrong passphrase", pass)
	_, err = LoadOrCreate(path, Sources{Prompt: func(string) ([]byte, error) { return []byte("nope"), nil }})
	wantErr(t, err, path, "wrong passphrase")

	// Permissions: the passphrase file and the encrypted key file are
	// checked as a plain key file is.
	writeFile(t, pass, "s3cret pass\n", 0o644)
	_, err = LoadOrCreate(path, Sources{PassphraseFile: pass})
	wantErr(t, err, pass, "chmod 600")
	os.Chmod(pass, 0o600)
	os.Chmod(path, 0o640)
	_, err = LoadOrCreate(path, Sources{PassphraseFile: pass})
	wantErr(t, err, path, "chmod 600")
	os.Chmod(path, 0o600)

	// Tampered and truncated files name the file and what to do.
	lines := strings.Split(string(data), "\n")
	lines[len(lines)-3] = strings.Repeat("A", len(lines[len(lines)-3])) // the payload's last full line
	writeFile(t, path, strings.Join(lines, "\n"), 0o600)
	_, err = LoadOrCreate(path, Sources{PassphraseFile: pass})
	wantErr(t, err, path, "damaged or was altered", "backup")
	writeFile(t, path, string(data[:len(data)/2]), 0o600)
	_, err = LoadOrCreate(path, Sources{PassphraseFile: pass})
	wantErr(t, err, path, "damaged or was altered")
}

// fakeSystemdCreds writes a stand-in for systemd-creds: encrypt wraps its
// input in base64 after a 64-byte header, decrypt undoes it, and with
// FAIL in its environment it fails as the real one does. It logs its
// arguments to args.
func fakeSystemdCreds(t *testing.T) (path, args string) {
	t.Helper()
	dir := t.TempDir()
	path = filepath.Join(dir, "systemd-creds")
	args = filepath.Join(dir, "args")
	script := `#!/bin/sh
echo "$@" >> ` + args + `
if [ -n "$FAIL" ]; then echo "Warning: something" >&2; echo "Failed to decrypt credential: Bad message" >&2; exit 1; fi
case "$1" in
encrypt) { printf '%064d' 0; cat; } | base64 ;;
decrypt) base64 -d | tail -c +65 ;;
esac
`
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, args
}

func TestSystemdCredsFake(t *testing.T) {
	bin, args := fakeSystemdCreds(t)
	sc := SystemdCreds{Path: bin, WithKey: "host"}
	k := newKey(t)
	cred, err := sc.Encrypt(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	if Detect(cred) != SystemdCred {
		t.Fatalf("the fake's output is not detected as a credential: %q", cred)
	}
	dir := keyDir(t)
	path := filepath.Join(dir, "node.key.cred")
	writeFile(t, path, string(cred), 0o600)

	// Not under systemd: tomoe runs systemd-creds decrypt.
	l, err := LoadOrCreate(path, Sources{SystemdCreds: SystemdCreds{Path: bin}})
	if err != nil || l.Key.Public() != k.Public() || l.Format != SystemdCred || l.From != "systemd-creds decrypt" {
		t.Fatalf("decrypt: %+v, %v", l, err)
	}
	logged, _ := os.ReadFile(args)
	want := "encrypt --name=tomoe-key --with-key=host - -\ndecrypt --name=tomoe-key - -\n"
	if string(logged) != want {
		t.Errorf("systemd-creds ran with\n%s\nwant\n%s", logged, want)
	}

	// Under systemd: the decrypted key is in $CREDENTIALS_DIRECTORY and
	// systemd-creds is not run.
	creds := t.TempDir()
	writeFile(t, filepath.Join(creds, CredentialName), k.Base64()+"\n", 0o400)
	l, err = LoadOrCreate(path, Sources{CredentialsDir: creds, SystemdCreds: SystemdCreds{Path: "/nonexistent"}})
	if err != nil || l.Key.Public() != k.Public() || !strings.Contains(l.From, "CREDENTIALS_DIRECTORY") {
		t.Fatalf("credentials directory: %+v, %v", l, err)
	}
	writeFile(t, filepath.Join(creds, CredentialName), "junk\n", 0o400)
	_, err = LoadOrCreate(path, Sources{CredentialsDir: creds})
	wantErr(t, err, filepath.Join(creds, CredentialName), path)
	// A credentials directory without tomoe-key: systemd-creds.
	l, err = LoadOrCreate(path, Sources{CredentialsDir: t.TempDir(), SystemdCreds: SystemdCreds{Path: bin}})
	if err != nil || l.Key.Public() != k.Public() {
		t.Fatalf("empty credentials directory: %v", err)
	}

	t.Setenv("FAIL", "1")
	_, err = LoadOrCreate(path, Sources{SystemdCreds: SystemdCreds{Path: bin}})
	wantErr(t, err, path, "Failed to decrypt credential: Bad message", "LoadCredentialEncrypted=tomoe-key:"+path)
	if strings.Contains(err.Error(), "Warning") {
		t.Errorf("error carries systemd-creds' warning: %v", err)
	}
	if _, err := sc.Encrypt(context.Background(), k); err == nil {
		t.Error("a failed encrypt gave a credential")
	}
}

func TestSystemdCredsMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	dir := keyDir(t)
	path := filepath.Join(dir, "node.key.cred")
	writeFile(t, path, realCredential, 0o600)
	_, err := LoadOrCreate(path, Sources{})
	wantErr(t, err, path, "systemd-creds not found", "LoadCredentialEncrypted=tomoe-key:"+path)
	if _, err := (SystemdCreds{}).Encrypt(context.Background(), newKey(t)); !errors.Is(err, ErrNoSystemdCreds) {
		t.Errorf("encrypt without systemd-creds: %v", err)
	}
}

// TestSystemdCredsReal runs the real systemd-creds where there is one, with
// the null key (--with-key=tpm2-absent) so that it needs neither a TPM2
// nor the host key, and changes nothing on the host.
func TestSystemdCredsReal(t *testing.T) {
	if _, err := exec.LookPath("systemd-creds"); err != nil {
		t.Skip("systemd-creds is not installed")
	}
	k := newKey(t)
	sc := SystemdCreds{WithKey: "tpm2-absent"}
	cred, err := sc.Encrypt(context.Background(), k)
	if err != nil {
		t.Skipf("systemd-creds cannot encrypt here: %v", err)
	}
	if Detect(cred) != SystemdCred {
		t.Fatalf("not detected as a credential: %q", cred)
	}
	got, err := sc.Decrypt(context.Background(), cred)
	if err != nil || got.Public() != k.Public() {
		t.Fatalf("decrypt: %v", err)
	}
	// The name is bound into the credential: another name is refused.
	cmd := exec.Command("systemd-creds", "decrypt", "--name=other", "-", "-")
	cmd.Stdin = strings.NewReader(string(cred))
	if out, err := cmd.Output(); err == nil {
		if _, perr := identity.ParsePrivateKey(strings.TrimSpace(string(out))); perr == nil {
			t.Error("systemd-creds decrypted tomoe-key under another name")
		}
	}
	// Tampered: one base64 character of the ciphertext changed.
	bad := []byte(cred)
	i := len(bad) / 2
	for bad[i] == '\n' {
		i++
	}
	if bad[i] == 'A' {
		bad[i] = 'B'
	} else {
		bad[i] = 'A'
	}
	if _, err := sc.Decrypt(context.Background(), bad); err == nil {
		t.Error("a tampered credential decrypted")
	}
}
