package cli

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// run.user naming no user: config check and up fail with exit status 1
// and say how to fix it; a run.user that could not write the node's
// directories stops up before it touches anything.
func TestRunUserErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "tomoe.toml")
	write := func(body string) {
		t.Helper()
		if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := "key_file = \"" + filepath.Join(dir, "state", "node.key") + "\"\n[admin]\nsocket = \"" + filepath.Join(dir, "state", "admin.sock") + "\"\n[tun]\nmode = \"userspace\"\n"
	write(base + "[run]\nuser = \"no-such-user-tomoe\"\n")
	for _, args := range [][]string{{"config", "check", "-c", cfg}, {"up", "-c", cfg}} {
		r := runCLI(t, "", args...).want(t, 1, args...)
		if !strings.Contains(r.stderr, `run.user: user "no-such-user-tomoe" does not exist`) || !strings.Contains(r.stderr, "useradd") {
			t.Errorf("tomoe %s: %s", strings.Join(args, " "), r.stderr)
		}
	}
	if os.Geteuid() != 0 {
		return
	}
	// nobody, shared with other programs, is refused.
	write(base + "[run]\nuser = \"nobody\"\n")
	r := runCLI(t, "", "up", "-c", cfg).want(t, 1, "up")
	if !strings.Contains(r.stderr, `run.user: user "nobody" (uid 65534) is shared with other programs`) {
		t.Errorf("tomoe up, run.user nobody: %s", r.stderr)
	}
	// As root, to daemon: the key's directory is below t.TempDir (0700),
	// which daemon cannot pass through.
	write(base + "[run]\nuser = \"daemon\"\n")
	r = runCLI(t, "", "up", "-c", cfg).want(t, 1, "up")
	if !strings.Contains(r.stderr, "run.user daemon: that user cannot pass through") {
		t.Errorf("tomoe up: %s", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); err == nil {
		t.Errorf("tomoe up made the state directory before refusing")
	}
}

// As root, config check trusts the files of the user run.user names, as
// tomoe up does: the .deb's /var/lib/tomoe is tomoe's.
func TestConfigCheckTrustsRunUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	u, err := user.Lookup("daemon")
	if err != nil {
		t.Skip("no user daemon here")
	}
	daemon, _ := strconv.Atoi(u.Uid)
	base, err := os.MkdirTemp("", "tomoe-check-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	state := filepath.Join(base, "tomoe")
	os.Mkdir(state, 0o700)
	key := filepath.Join(state, "node.key")
	pass := filepath.Join(state, "key.pass")
	os.WriteFile(key, []byte("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"), 0o600)
	os.WriteFile(pass, []byte("x\n"), 0o600)
	for _, p := range []string{state, key, pass} {
		os.Chown(p, daemon, daemon)
	}
	cfg := filepath.Join(base, "tomoe.toml")
	body := "key_file = \"" + key + "\"\n[tun]\nmode = \"userspace\"\n[run]\nuser = "
	os.WriteFile(cfg, []byte(body+"\"daemon\"\n"), 0o600)
	runCLI(t, "", "config", "check", "-c", cfg).want(t, 0, "config check, run.user daemon")
	os.WriteFile(cfg, []byte(body+"\"root\"\n"), 0o600)
	r := runCLI(t, "", "config", "check", "-c", cfg).want(t, 1, "config check, run.user root")
	if !strings.Contains(r.stderr, "owned by uid "+u.Uid) {
		t.Errorf("run.user root: %s", r.stderr)
	}
}
