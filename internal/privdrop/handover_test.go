//go:build linux

package privdrop

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Prepare refuses to hand over a directory that
// holds the config file itself, but compares only the config's parent
// (filepath.Dir(k) == d). A config one level further down (key_file =
// "/etc/tomoe/node.key", config /etc/tomoe/conf/tomoe.toml) lets the run
// user own /etc/tomoe, rename conf away and put its own conf/tomoe.toml
// there with run.user = "root": the next start runs as root with the
// user's config.
func TestPrepareRefusesAncestorOfConfigDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	u := Target{Name: "tomoe-test", UID: 46123, GID: 46123}
	base, err := os.MkdirTemp("", "privdrop-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	etc := filepath.Join(base, "tomoe")
	os.MkdirAll(filepath.Join(etc, "conf"), 0o755)
	cfg := filepath.Join(etc, "conf", "tomoe.toml")
	os.WriteFile(cfg, []byte("x"), 0o644)
	p, err := Prepare(u, []string{etc}, []string{cfg})
	if err == nil && p.dirs[0].own {
		t.Fatalf("%s, which holds the directory of the config %s, is handed to the run user", etc, cfg)
	}
}

// handOver chowns every regular file root owns in
// the node's directory, not only those the node made, by path (Lchown):
// a hard link the run user left there (where fs.protected_hardlinks = 0)
// to a file of root's elsewhere hands that file over too.
func TestHandOverSkipsHardLinks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	u := Target{Name: "tomoe-test", UID: 46123, GID: 46123}
	base, err := os.MkdirTemp("", "privdrop-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	dir := filepath.Join(base, "tomoe")
	os.Mkdir(dir, 0o700)
	os.Chown(dir, u.UID, u.GID) // the run user's from an earlier run
	secret := filepath.Join(base, "shadow")
	os.WriteFile(secret, []byte("root's"), 0o600)
	if err := os.Link(secret, filepath.Join(dir, "state.json")); err != nil {
		t.Skip(err)
	}
	p, err := Prepare(u, []string{dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.handOver(nil); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Lstat(secret)
	if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 0 {
		t.Fatalf("root's file %s, hard-linked into the node's directory, is now owned by %d", secret, uid)
	}
}

// Prepare and handOver work on path strings and
// follow symbolic links in the directories above a state directory. When
// the run user controls a directory above it (key_file in its home, as
// with run.user = "alice" and key_file = "~alice/.config/tomoe/node.key"),
// it makes that path lead to a directory of root's named tomoe* (as
// /etc/tomoe, which holds the config): Prepare's os.Stat sees root's
// "tomoe" directory and calls it the node's own, the keep test compares
// the unresolved strings and misses the config there, and handOver hands
// root's directory and every file of root's in it (the config) to the
// user.
func TestPrepareRefusesUserDirAbove(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	u := Target{Name: "tomoe-test", UID: 46123, GID: 46123}
	base, err := os.MkdirTemp("", "privdrop-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	etc := filepath.Join(base, "etc")
	os.MkdirAll(filepath.Join(etc, "tomoe"), 0o755)
	cfg := filepath.Join(etc, "tomoe", "tomoe.toml")
	os.WriteFile(cfg, []byte("[run]\nuser = \"tomoe-test\"\n"), 0o644)
	home := filepath.Join(base, "home")
	os.Mkdir(home, 0o755)
	os.Chown(home, u.UID, u.GID)
	// What the user does in its own home: .config -> etc.
	os.Symlink(etc, filepath.Join(home, ".config"))
	state := filepath.Join(home, ".config", "tomoe")
	p, err := Prepare(u, []string{state}, []string{cfg})
	if err != nil {
		t.Logf("refused: %v", err)
		return
	}
	if err := p.handOver(nil); err != nil {
		t.Logf("handOver refused: %v", err)
	}
	for _, path := range []string{filepath.Join(etc, "tomoe"), cfg} {
		fi, _ := os.Lstat(path)
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 0 {
			t.Errorf("%s (root's, reached through the user's symlink) is now owned by %d", path, uid)
		}
	}
}

// A directory swapped for a symbolic link between Prepare and the drop is
// not followed; the config file, or a directory above it, that the run
// user can write is refused; a symbolic link in root's directories (as
// /var/run -> /run) is resolved and the directory it leads to handed over.
func TestHandOverRechecksPath(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	u := Target{Name: "tomoe-test", UID: 46123, GID: 46123}
	base, err := os.MkdirTemp("", "privdrop-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	etc := filepath.Join(base, "etc")
	os.MkdirAll(filepath.Join(etc, "tomoe"), 0o755)
	cfg := filepath.Join(etc, "tomoe", "tomoe.toml")
	os.WriteFile(cfg, []byte("x"), 0o644)

	// Root's link: resolved, handed over where it leads.
	run := filepath.Join(base, "run")
	os.MkdirAll(filepath.Join(run, "tomoe"), 0o755)
	os.Symlink(run, filepath.Join(base, "varrun"))
	p, err := Prepare(u, []string{filepath.Join(base, "varrun", "tomoe")}, []string{cfg})
	if err != nil {
		t.Fatal(err)
	}
	if p.dirs[0].path != filepath.Join(run, "tomoe") || !p.dirs[0].own {
		t.Fatalf("dirs = %+v", p.dirs)
	}
	// Between Prepare and the drop, root's run/tomoe becomes a link to
	// etc/tomoe (as if a directory above had been the user's).
	os.Rename(filepath.Join(run, "tomoe"), filepath.Join(run, "old"))
	os.Symlink(filepath.Join(etc, "tomoe"), filepath.Join(run, "tomoe"))
	if err := p.handOver(nil); err == nil {
		t.Error("handOver followed a symbolic link")
	}
	for _, path := range []string{filepath.Join(etc, "tomoe"), cfg} {
		fi, _ := os.Lstat(path)
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 0 {
			t.Errorf("%s is now owned by %d", path, uid)
		}
	}

	// In a sticky directory (as /tmp), what the user made is the user's
	// to replace; what root made is not.
	sticky := filepath.Join(base, "tmp")
	os.Mkdir(sticky, 0o1777)
	os.Chmod(sticky, 0o777|os.ModeSticky)
	os.MkdirAll(filepath.Join(sticky, "users", "tomoe"), 0o755)
	os.Chown(filepath.Join(sticky, "users"), u.UID, u.GID)
	if _, err := Prepare(u, []string{filepath.Join(sticky, "users", "tomoe")}, []string{cfg}); err == nil || !strings.Contains(err.Error(), "owns or can write") {
		t.Errorf("state directory below the user's directory in a sticky one: %v", err)
	}
	os.MkdirAll(filepath.Join(sticky, "roots", "tomoe"), 0o755)
	if _, err := Prepare(u, []string{filepath.Join(sticky, "roots", "tomoe")}, []string{cfg}); err != nil {
		t.Errorf("state directory below root's directory in a sticky one: %v", err)
	}

	// The config writable by the user, or in a directory it can write.
	os.Chown(cfg, u.UID, u.GID)
	if _, err := Prepare(u, []string{filepath.Join(base, "tomoe-state")}, []string{cfg}); err == nil || !strings.Contains(err.Error(), "can write the config file") {
		t.Errorf("config owned by the run user: %v", err)
	}
	os.Chown(cfg, 0, u.GID)
	os.Chmod(cfg, 0o664)
	if _, err := Prepare(u, []string{filepath.Join(base, "tomoe-state")}, []string{"", cfg}); err == nil || !strings.Contains(err.Error(), "can write the config file") {
		t.Errorf("config writable by the run user's group: %v", err)
	}
	os.Chmod(cfg, 0o640)
	if _, err := Prepare(u, []string{filepath.Join(base, "tomoe-state")}, []string{"", cfg}); err != nil {
		t.Errorf("config readable by the run user's group (README): %v", err)
	}
	os.Chmod(filepath.Join(etc, "tomoe"), 0o777)
	if _, err := Prepare(u, []string{filepath.Join(base, "tomoe-state")}, []string{cfg}); err == nil || !strings.Contains(err.Error(), "owns or can write") {
		t.Errorf("config in a directory the run user can write: %v", err)
	}
}
