package cli

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/keyenc"
)

func init() { keyenc.ScryptWorkFactor = 4 } // the format, not the cost, is tested

// answers makes terminalPrompt answer with these, in turn, for the test.
func answers(t *testing.T, a ...string) {
	t.Helper()
	old := terminalPrompt
	t.Cleanup(func() { terminalPrompt = old })
	terminalPrompt = func(string) ([]byte, error) {
		if len(a) == 0 {
			return nil, errors.New("no terminal")
		}
		s := a[0]
		a = a[1:]
		return []byte(s), nil
	}
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestKeyEncryptPassphrase(t *testing.T) {
	answers(t) // no terminal unless a test step gives one
	dir := filepath.Join(t.TempDir(), "k")
	os.Mkdir(dir, 0o700)
	gen := runCLI(t, "", "key", "generate").want(t, 0)
	k, err := identity.ParsePrivateKey(gen.stdout)
	if err != nil {
		t.Fatal(err)
	}
	pub := k.Public().String()
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte("a long passphrase\n"), 0o600)
	out := filepath.Join(dir, "node.key.age")

	r := runCLI(t, gen.stdout, "key", "encrypt", "--passphrase-file", pass, "--out", out).want(t, 0)
	if r.stdout != "" || !strings.Contains(r.stderr, pub) {
		t.Errorf("encrypt printed %q / %q", r.stdout, r.stderr)
	}
	if m := mode(t, out); m != 0o600 {
		t.Errorf("encrypted key has mode %04o", m)
	}
	data, _ := os.ReadFile(out)
	if keyenc.Detect(data) != keyenc.Age || strings.Contains(string(data), k.Base64()) {
		t.Fatalf("not an age file, or the key in clear:\n%s", data)
	}

	// key public opens it, with the file or on the terminal.
	r = runCLI(t, string(data), "key", "public", "--passphrase-file", pass).want(t, 0)
	if strings.TrimSpace(r.stdout) != pub {
		t.Errorf("key public = %q, want %s", r.stdout, pub)
	}
	answers(t, "a long passphrase")
	if r = runCLI(t, string(data), "key", "public").want(t, 0); strings.TrimSpace(r.stdout) != pub {
		t.Errorf("key public on the terminal = %q", r.stdout)
	}
	answers(t, "wrong")
	r = runCLI(t, string(data), "key", "public").want(t, 1)
	if !strings.Contains(r.stderr, "wrong passphrase") {
		t.Errorf("wrong passphrase: %q", r.stderr)
	}
	answers(t)
	r = runCLI(t, string(data), "key", "public").want(t, 1)
	if !strings.Contains(r.stderr, "no terminal") {
		t.Errorf("no terminal: %q", r.stderr)
	}

	// Not over an existing file, unless --force.
	r = runCLI(t, gen.stdout, "key", "encrypt", "--passphrase-file", pass, "--out", out).want(t, 1)
	if !strings.Contains(r.stderr, "--force") {
		t.Errorf("overwrite: %q", r.stderr)
	}
	if again, _ := os.ReadFile(out); string(again) != string(data) {
		t.Fatal("the file changed")
	}
	plain := filepath.Join(dir, "node.key")
	os.WriteFile(plain, []byte(gen.stdout), 0o600)
	runCLI(t, "", "key", "encrypt", "--in", plain, "--passphrase-file", pass, "--out", out, "--force").want(t, 0)
	if again, _ := os.ReadFile(out); string(again) == string(data) || mode(t, out) != 0o600 {
		t.Fatal("--force did not replace the file, or not with mode 0600")
	}

	// On the terminal: asked twice; to stdout without --out.
	answers(t, "typed", "typed")
	r = runCLI(t, gen.stdout, "key", "encrypt").want(t, 0)
	answers(t, "typed")
	if p := runCLI(t, r.stdout, "key", "public").want(t, 0); strings.TrimSpace(p.stdout) != pub {
		t.Errorf("stdout round trip: %q", p.stdout)
	}
	answers(t, "typed", "typo")
	r = runCLI(t, gen.stdout, "key", "encrypt", "--out", filepath.Join(dir, "x")).want(t, 1)
	if !strings.Contains(r.stderr, "differ") {
		t.Errorf("mismatch: %q", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Error("wrote a file after a mismatch")
	}
	answers(t)
	r = runCLI(t, gen.stdout, "key", "encrypt").want(t, 1)
	if !strings.Contains(r.stderr, "--passphrase-file") {
		t.Errorf("no terminal: %q", r.stderr)
	}

	// A passphrase file others can read is refused.
	os.Chmod(pass, 0o644)
	r = runCLI(t, gen.stdout, "key", "encrypt", "--passphrase-file", pass).want(t, 1)
	if !strings.Contains(r.stderr, "chmod 600 "+pass) {
		t.Errorf("0644 passphrase file: %q", r.stderr)
	}
	os.Chmod(pass, 0o600)

	// Bad input and flags: exit 2.
	for _, tc := range []struct {
		stdin string
		args  []string
		say   string
	}{
		{string(data), []string{"--passphrase-file", pass}, "already encrypted"},
		{"", []string{"--passphrase-file", pass}, "no key on stdin"},
		{"not a key\n", []string{"--passphrase-file", pass}, "private key"},
		{gen.stdout, []string{"--passphrase-file", pass, "--systemd-creds"}, "give one"},
		{gen.stdout, []string{"--with-key", "tpm2"}, "--with-key goes with --systemd-creds"},
		{gen.stdout, []string{"--force"}, "--force goes with --out"},
	} {
		r := runCLI(t, tc.stdin, append([]string{"key", "encrypt"}, tc.args...)...).want(t, 2)
		if !strings.Contains(r.stderr, tc.say) {
			t.Errorf("%v: %q, want %q", tc.args, r.stderr, tc.say)
		}
	}
	runCLI(t, gen.stdout, "key", "public", "--passphrase-file", pass).want(t, 2)
}

// A stand-in for systemd-creds (see keyenc's tests); systemd-creds itself
// is tested in internal/keyenc where it is installed.
func fakeSystemdCreds(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	script := `#!/bin/sh
case "$1" in
encrypt) { printf '%064d' 0; cat; } | base64 ;;
decrypt) base64 -d | tail -c +65 ;;
esac
`
	if err := os.WriteFile(filepath.Join(dir, "systemd-creds"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestKeyEncryptSystemdCreds(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "k")
	os.Mkdir(dir, 0o700)
	gen := runCLI(t, "", "key", "generate").want(t, 0)
	k, _ := identity.ParsePrivateKey(gen.stdout)
	out := filepath.Join(dir, "node.key.cred")

	t.Setenv("PATH", t.TempDir())
	r := runCLI(t, gen.stdout, "key", "encrypt", "--systemd-creds", "--out", out).want(t, 1)
	if !strings.Contains(r.stderr, "systemd-creds not found") {
		t.Errorf("missing systemd-creds: %q", r.stderr)
	}

	t.Setenv("PATH", fakeSystemdCreds(t)+":/usr/bin:/bin")
	runCLI(t, gen.stdout, "key", "encrypt", "--systemd-creds", "--out", out).want(t, 0)
	if m := mode(t, out); m != 0o600 {
		t.Errorf("credential has mode %04o", m)
	}
	data, _ := os.ReadFile(out)
	if keyenc.Detect(data) != keyenc.SystemdCred {
		t.Fatalf("not a credential: %q", data)
	}
	r = runCLI(t, string(data), "key", "public").want(t, 0)
	if strings.TrimSpace(r.stdout) != k.Public().String() {
		t.Errorf("key public of a credential = %q", r.stdout)
	}
}

// tomoe up and config check with an encrypted key: the checks before the
// node starts (the node itself: e2e TestEncryptedKeyUp).
func TestUpAndCheckEncryptedKey(t *testing.T) {
	answers(t)
	dir := filepath.Join(t.TempDir(), "n")
	os.Mkdir(dir, 0o700)
	k, _ := identity.GeneratePrivateKey()
	data, err := keyenc.EncryptPassphrase(k, []byte("right"))
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "node.key.age")
	os.WriteFile(keyFile, data, 0o600)
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte("right\n"), 0o600)
	cfg := filepath.Join(dir, "tomoe.toml")
	write := func(top string) {
		doc := fmt.Sprintf("%s[tun]\nmode = \"userspace\"\n[listen]\nudp = \"0.0.0.0:0\"\n[admin]\nsocket = %q\n", top, filepath.Join(dir, "s"))
		os.WriteFile(cfg, []byte(doc), 0o600)
	}

	write(fmt.Sprintf("key_file = %q\nkey_passphrase_file = %q\n", keyFile, pass))
	r := runCLI(t, "", "config", "check", "-c", cfg).want(t, 0)
	if !strings.Contains(r.stdout, "encrypted") || !strings.Contains(r.stdout, k.Public().Address().String()) {
		t.Errorf("check with the passphrase file:\n%s", r.stdout)
	}
	write(fmt.Sprintf("key_file = %q\n", keyFile))
	r = runCLI(t, "", "config", "check", "-c", cfg).want(t, 0)
	if !strings.Contains(r.stdout, "asks for it on the terminal") {
		t.Errorf("check without a passphrase file:\n%s", r.stdout)
	}
	// No passphrase file, no terminal: up refuses, exit 1.
	r = runCLI(t, "", "up", "-c", cfg).want(t, 1)
	if !strings.Contains(r.stderr, keyFile) || !strings.Contains(r.stderr, "key_passphrase_file") {
		t.Errorf("up without a passphrase: %q", r.stderr)
	}

	os.WriteFile(pass, []byte("wrong\n"), 0o600)
	write(fmt.Sprintf("key_file = %q\nkey_passphrase_file = %q\n", keyFile, pass))
	r = runCLI(t, "", "config", "check", "-c", cfg).want(t, 1)
	if !strings.Contains(r.stderr, "wrong passphrase") {
		t.Errorf("check, wrong passphrase: %q", r.stderr)
	}
	r = runCLI(t, "", "up", "-c", cfg).want(t, 1)
	if !strings.Contains(r.stderr, "wrong passphrase in key_passphrase_file "+pass) {
		t.Errorf("up, wrong passphrase: %q", r.stderr)
	}

	// key_passphrase_file set, key_file missing: nothing is created.
	missing := filepath.Join(dir, "new.key")
	write(fmt.Sprintf("key_file = %q\nkey_passphrase_file = %q\n", missing, pass))
	for _, args := range [][]string{{"config", "check", "-c", cfg}, {"up", "-c", cfg}} {
		r = runCLI(t, "", args...).want(t, 1)
		if !strings.Contains(r.stderr, "tomoe key generate | tomoe key encrypt --passphrase-file "+pass+" --out "+missing) {
			t.Errorf("%v, missing key: %q", args, r.stderr)
		}
	}
	if _, err := os.Stat(missing); err == nil {
		t.Fatal("a key file was created")
	}
}

// The real systemd-creds, where installed, with the null key (no TPM2 and
// no host key needed, nothing changed on the host).
func TestKeyEncryptRealSystemdCreds(t *testing.T) {
	if _, err := exec.LookPath("systemd-creds"); err != nil {
		t.Skip("systemd-creds is not installed")
	}
	dir := filepath.Join(t.TempDir(), "k")
	os.Mkdir(dir, 0o700)
	gen := runCLI(t, "", "key", "generate").want(t, 0)
	k, _ := identity.ParsePrivateKey(gen.stdout)
	out := filepath.Join(dir, "node.key.cred")
	r := runCLI(t, gen.stdout, "key", "encrypt", "--systemd-creds", "--with-key", "tpm2-absent", "--out", out)
	if r.code != 0 {
		t.Skipf("systemd-creds cannot encrypt here: %s", r.stderr)
	}
	data, _ := os.ReadFile(out)
	if keyenc.Detect(data) != keyenc.SystemdCred || mode(t, out) != 0o600 {
		t.Fatalf("not a 0600 credential: %q", data)
	}
	if r := runCLI(t, string(data), "key", "public").want(t, 0); strings.TrimSpace(r.stdout) != k.Public().String() {
		t.Errorf("key public = %q", r.stdout)
	}
}
