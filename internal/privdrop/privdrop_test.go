//go:build linux

package privdrop

import (
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const sampleStatus = `Name:	tomoe
Umask:	0077
State:	S (sleeping)
Uid:	998	998	998	998
Gid:	997	997	997	997
FDSize:	64
Groups:	
NStgid:	4242
CapInh:	0000000000000000
CapPrm:	0000000000001400
CapEff:	0000000000001400
CapBnd:	0000000000001400
CapAmb:	0000000000000000
NoNewPrivs:	1
Seccomp:	0
`

func TestParseStatus(t *testing.T) {
	c, err := parseStatus([]byte(sampleStatus))
	if err != nil {
		t.Fatal(err)
	}
	if c.UID != [4]int{998, 998, 998, 998} || c.GID != [4]int{997, 997, 997, 997} || len(c.Groups) != 0 ||
		c.Eff != KeepMask() || c.Prm != KeepMask() || c.Bnd != KeepMask() || c.Inh != 0 || c.Amb != 0 || !c.NoNewPrivs {
		t.Errorf("parsed %+v", c)
	}
	if KeepMask() != 1<<12|1<<10 {
		t.Errorf("KeepMask() = %#x, want CAP_NET_ADMIN (12) and CAP_NET_BIND_SERVICE (10)", KeepMask())
	}
	for _, bad := range []string{
		strings.Replace(sampleStatus, "CapEff:\t0000000000001400", "CapEff:\tzz", 1),
		strings.Replace(sampleStatus, "Uid:\t998\t998\t998\t998", "Uid:\t998", 1),
		"Name:\ttomoe\n",
		"",
	} {
		if _, err := parseStatus([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if cur, err := Current(); err != nil || cur.UID[1] != os.Geteuid() {
		t.Errorf("Current() = %+v, %v", cur, err)
	}
}

// The directories handed to the run user, and those refused.
func TestPrepareDirs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes files owned by root and another user")
	}
	u := Target{Name: "tomoe-test", UID: 46123, GID: 46123}
	base, err := os.MkdirTemp("", "privdrop-") // t.TempDir's parent is 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	mk := func(name string, mode os.FileMode, uid int) string {
		p := filepath.Join(base, name)
		if err := os.Mkdir(p, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		os.Chown(p, uid, uid)
		return p
	}
	tomoeDir := mk("tomoe", 0o700, 0)
	mine := mk("mine", 0o700, u.UID)
	sticky := mk("tmp", 0o1777, 0)
	other := mk("var", 0o700, 0)
	closed := mk("closed", 0o700, 0)
	behind := filepath.Join(closed, "tomoe")
	os.Mkdir(behind, 0o700)
	etc := mk("tomoe-etc", 0o755, 0)
	cfg := filepath.Join(etc, "tomoe.toml")
	os.WriteFile(cfg, []byte("x"), 0o644)

	var p *Plan
	for _, tc := range []struct {
		dir string
		own bool
		err string
	}{
		{tomoeDir, true, ""},
		{mine, true, ""},
		{filepath.Join(base, "tomoe-new"), true, ""},
		{sticky, false, ""},
		{other, false, "chown tomoe-test " + other},
		{behind, false, "cannot pass through " + closed},
		{etc, false, "holds " + cfg},
	} {
		p, err = Prepare(u, []string{tc.dir}, []string{cfg})
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.dir, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %v, want an error with %q", tc.dir, err, tc.err)
		case err == nil && p.dirs[0].own != tc.own:
			t.Errorf("%s: own = %v, want %v", tc.dir, p.dirs[0].own, tc.own)
		}
	}

	// Drop's first step: root's files in the node's own directory, and
	// the files named elsewhere, go to the user; the groups stay; what is
	// not root's, not a file or below it stays as it is.
	os.WriteFile(filepath.Join(tomoeDir, "node.key"), []byte("k"), 0o600)
	os.Mkdir(filepath.Join(tomoeDir, "sub"), 0o700)
	os.Symlink("/etc/passwd", filepath.Join(tomoeDir, "link"))
	sock := filepath.Join(sticky, "admin.sock")
	os.WriteFile(sock, nil, 0o660)
	os.Chown(sock, 0, 4242)
	p, err = Prepare(u, []string{tomoeDir, sticky}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.handOver([]string{sock}); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string][2]int{
		tomoeDir:                            {u.UID, 0},
		filepath.Join(tomoeDir, "node.key"): {u.UID, 0},
		filepath.Join(tomoeDir, "sub"):      {0, 0},
		sock:                                {u.UID, 4242},
		sticky:                              {0, 0},
		"/etc/passwd":                       {0, 0},
	} {
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if [2]int{int(st.Uid), int(st.Gid)} != want {
			t.Errorf("%s is owned by %d:%d, want %d:%d", path, st.Uid, st.Gid, want[0], want[1])
		}
	}
}

// nobody, which other programs run as, is refused as run.user: they would
// reach the node's key and admin socket.
func TestLookupRefusesNobody(t *testing.T) {
	if _, err := user.Lookup("nobody"); err != nil {
		t.Skip("no user nobody here")
	}
	_, err := Lookup("nobody")
	if err == nil || !strings.Contains(err.Error(), "shared with other programs") {
		t.Fatalf("Lookup(nobody) = %v, want a refusal", err)
	}
	if !shared("x", Overflow) || shared("tomoe", 998) {
		t.Error("shared")
	}
	if _, login := LoginShell("nobody"); login {
		t.Error("nobody has a login shell?")
	}
	if _, login := LoginShell("root"); !login {
		t.Log("root has no login shell here")
	}
}
