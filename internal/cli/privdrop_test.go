package cli

import (
	"os"
	"path/filepath"
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
	// As root, to nobody: the key's directory is below t.TempDir (0700),
	// which nobody cannot pass through.
	write(base + "[run]\nuser = \"nobody\"\n")
	r := runCLI(t, "", "up", "-c", cfg).want(t, 1, "up")
	if !strings.Contains(r.stderr, "run.user nobody: that user cannot pass through") {
		t.Errorf("tomoe up: %s", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); err == nil {
		t.Errorf("tomoe up made the state directory before refusing")
	}
}
