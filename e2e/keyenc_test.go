package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/keyenc"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// encryptNodeKey replaces n's plain key file with node.key.age, encrypted
// with passphrase, and returns its path. The scrypt cost is lowered: the
// file carries it, so the binary's decryption follows it, and 2^18 under
// the race detector takes tens of seconds here (tomoe key encrypt itself
// is tested in internal/cli).
func encryptNodeKey(t *testing.T, n *nodeDir, passphrase string) string {
	t.Helper()
	old := keyenc.ScryptWorkFactor
	keyenc.ScryptWorkFactor = 10
	defer func() { keyenc.ScryptWorkFactor = old }()
	data, err := keyenc.EncryptPassphrase(n.key, []byte(passphrase))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(n.dir, "node.key.age")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(n.dir, "node.key"))
	return path
}

// noPlainKey fails if any file under dir holds n's key in clear.
func noPlainKey(t *testing.T, n *nodeDir) {
	t.Helper()
	filepath.WalkDir(n.dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(n.key.Base64())) {
			t.Errorf("%s holds the private key in clear", p)
		}
		return nil
	})
}

func statusKey(t *testing.T, n *nodeDir) string {
	t.Helper()
	var st adminapi.Status
	n.cliJSON(t, &st, "status")
	return st.PublicKey
}

// tomoe up with a key encrypted with a passphrase, read from
// key_passphrase_file: the node runs with its own key, which is on disk
// only encrypted; a wrong passphrase stops it with exit status 1 and a
// message naming the files.
func TestEncryptedKeyUp(t *testing.T) {
	parallel(t, 5*time.Second)
	n := newNodeDir(t, "enc")
	keyFile := encryptNodeKey(t, n, "correct horse battery")
	pass := filepath.Join(n.dir, "pass")
	if err := os.WriteFile(pass, []byte("correct horse battery\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.writeTop(t, "", "[tun]\nmode = \"userspace\"\n[listen]\nudp = \"0.0.0.0:0\"\n")
	cfg := strings.Replace(readFile(t, n.config()), "node.key\"\n", "node.key.age\"\nkey_passphrase_file = \"pass\"\n", 1)
	if err := os.WriteFile(n.config(), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	out := mustRun(t, "config", "check", "-c", n.config())
	if !strings.Contains(out, keyFile) || !strings.Contains(out, "encrypted") || !strings.Contains(out, n.addr()) {
		t.Fatalf("config check:\n%s", out)
	}
	p := startUp(t, n)
	if got := statusKey(t, n); got != n.pub().String() {
		t.Fatalf("status shows public key %s, want %s", got, n.pub())
	}
	if !strings.Contains(p.Output(), "decrypted the node key in memory") {
		t.Errorf("no log line about the encrypted key:\n%s", p.Output())
	}
	if strings.Contains(p.Output(), n.key.Base64()) || strings.Contains(p.Output(), "correct horse") {
		t.Fatal("the log holds the key or the passphrase")
	}
	noPlainKey(t, n)
	if err := p.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatalf("stop: %v\n%s", err, p.Output())
	}
	noPlainKey(t, n)

	// A wrong passphrase: exit 1, the message names both files.
	os.WriteFile(pass, []byte("wrong horse\n"), 0o600)
	r := run(t, "", "up", "-c", n.config())
	if r.code != 1 || !strings.Contains(r.stderr, "wrong passphrase in key_passphrase_file "+pass) || !strings.Contains(r.stderr, keyFile) {
		t.Fatalf("wrong passphrase: exit %d\n%s", r.code, r.stderr)
	}
	// A damaged file: exit 1, says so.
	os.WriteFile(pass, []byte("correct horse battery\n"), 0o600)
	data := []byte(readFile(t, keyFile))
	os.WriteFile(keyFile, data[:len(data)-60], 0o600)
	r = run(t, "", "up", "-c", n.config())
	if r.code != 1 || !strings.Contains(r.stderr, "damaged or was altered") || !strings.Contains(r.stderr, keyFile) {
		t.Fatalf("damaged key file: exit %d\n%s", r.code, r.stderr)
	}
	// No passphrase file, and stdin is not a terminal: exit 1, says what to do.
	os.WriteFile(keyFile, data, 0o600)
	os.WriteFile(n.config(), []byte(strings.Replace(cfg, "key_passphrase_file = \"pass\"\n", "", 1)), 0o600)
	r = run(t, "", "up", "-c", n.config())
	if r.code != 1 || !strings.Contains(r.stderr, "set key_passphrase_file") {
		t.Fatalf("no passphrase: exit %d\n%s", r.code, r.stderr)
	}
}

// tomoe up with a systemd credential as key_file: systemd's decrypted copy
// in $CREDENTIALS_DIRECTORY (as LoadCredentialEncrypted= leaves it; not
// systemd itself, which does not run here), and, without it, the real
// systemd-creds where it is installed (the null key: no TPM2 here).
func TestSystemdCredentialKeyUp(t *testing.T) {
	parallel(t, 5*time.Second)
	if _, err := exec.LookPath("systemd-creds"); err != nil {
		t.Skip("systemd-creds is not installed")
	}
	n := newNodeDir(t, "cred")
	keyFile := filepath.Join(n.dir, "node.key.cred")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cred, err := keyenc.SystemdCreds{WithKey: "tpm2-absent"}.Encrypt(ctx, n.key)
	if err != nil {
		t.Skipf("systemd-creds cannot encrypt here: %v", err)
	}
	if err := os.WriteFile(keyFile, cred, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(n.dir, "node.key"))
	n.writeTop(t, "", "[tun]\nmode = \"userspace\"\n[listen]\nudp = \"0.0.0.0:0\"\n")
	cfg := strings.Replace(readFile(t, n.config()), "node.key\"\n", "node.key.cred\"\n", 1)
	os.WriteFile(n.config(), []byte(cfg), 0o600)

	creds := t.TempDir()
	os.WriteFile(filepath.Join(creds, "tomoe-key"), []byte(n.key.Base64()+"\n"), 0o400)
	for _, tc := range []struct {
		name, env, from string
	}{
		{"from $CREDENTIALS_DIRECTORY", "CREDENTIALS_DIRECTORY=" + creds, "$CREDENTIALS_DIRECTORY/tomoe-key"},
		{"with systemd-creds decrypt", "", "systemd-creds decrypt"},
	} {
		cmd := exec.Command(tomoeBin, "up", "-c", n.config())
		cmd.Env = os.Environ()
		if tc.env != "" {
			cmd.Env = append(cmd.Env, tc.env)
		}
		p := testnet.StartCmd(t, n.name, cmd)
		n.waitReady(t, func() bool { return !p.Exited() })
		if got := statusKey(t, n); got != n.pub().String() {
			t.Fatalf("%s: status shows %s, want %s", tc.name, got, n.pub())
		}
		if !strings.Contains(p.Output(), tc.from) {
			t.Errorf("%s: the log does not say %q:\n%s", tc.name, tc.from, p.Output())
		}
		if err := p.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
			t.Fatalf("%s: stop: %v", tc.name, err)
		}
		noPlainKey(t, n)
	}
	// A tampered credential: exit 1, names the file.
	bad := bytes.Clone(cred) // one base64 character in the ciphertext changed
	i := len(bad) / 2
	for bad[i] == '\n' {
		i++
	}
	if bad[i] == 'A' {
		bad[i] = 'B'
	} else {
		bad[i] = 'A'
	}
	os.WriteFile(keyFile, bad, 0o600)
	r := run(t, "", "up", "-c", n.config())
	if r.code != 1 || !strings.Contains(r.stderr, keyFile) || !strings.Contains(r.stderr, "could not be decrypted") {
		t.Fatalf("tampered credential: exit %d\n%s", r.code, r.stderr)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// openPTY opens a pseudo-terminal: the master, and the slave a process
// takes as its terminal.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty slave: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// tomoe up started on a terminal, with no key_passphrase_file: it asks for
// the passphrase there, without echo, and runs with the key.
func TestEncryptedKeyUpPrompt(t *testing.T) {
	parallel(t, 5*time.Second)
	n := newNodeDir(t, "tty")
	encryptNodeKey(t, n, "typed at the terminal")
	n.writeTop(t, "", "[tun]\nmode = \"userspace\"\n[listen]\nudp = \"0.0.0.0:0\"\n")
	os.WriteFile(n.config(), []byte(strings.Replace(readFile(t, n.config()), "node.key\"\n", "node.key.age\"\n", 1)), 0o600)

	master, slave := openPTY(t)
	cmd := exec.Command(tomoeBin, "up", "-c", n.config())
	cmd.Stdin = slave
	// A session of its own with the pty as its controlling terminal
	// (/dev/tty), as a shell gives it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	var screen testnet.SyncBuffer
	go io.Copy(&screen, master) // ends when the test closes master
	p := testnet.StartCmd(t, n.name, cmd)
	testnet.WaitFor(t, 30*time.Second, "the passphrase prompt", func() bool {
		return strings.Contains(screen.String(), "Passphrase for "+filepath.Join(n.dir, "node.key.age"))
	})
	if _, err := master.Write([]byte("typed at the terminal\n")); err != nil {
		t.Fatal(err)
	}
	n.waitReady(t, func() bool { return !p.Exited() })
	if got := statusKey(t, n); got != n.pub().String() {
		t.Fatalf("status shows %s, want %s", got, n.pub())
	}
	if strings.Contains(screen.String(), "typed at the terminal") {
		t.Errorf("the passphrase was echoed: %q", screen.String())
	}
	if !strings.Contains(p.Output(), `from="the terminal"`) {
		t.Errorf("the log does not say where the passphrase came from:\n%s", p.Output())
	}
	if err := p.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
}
