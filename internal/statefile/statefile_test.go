package statefile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// nobody is the uid the tests give files that another user owns.
const nobody = 65534

type state struct {
	Version int      `json:"version"`
	Items   []string `json:"items"`
}

func TestSaveLoad(t *testing.T) {
	f := File{Path: filepath.Join(t.TempDir(), "sub", "s.json"), What: "test state", Forget: "the items"}
	var st state
	if found, err := f.Load(&st, &st.Version); found || err != nil {
		t.Fatalf("missing file: found %v, err %v", found, err)
	}
	if err := f.Save(state{Version: Version, Items: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(f.Path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, err %v", fi.Mode(), err)
	}
	if found, err := f.Load(&st, &st.Version); !found || err != nil || len(st.Items) != 1 {
		t.Fatalf("load: %v %v %+v", found, err, st)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(f.Path), ".*tmp"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	for _, bad := range []string{"{", `{"version": 2}`} {
		os.WriteFile(f.Path, []byte(bad), 0o600)
		_, err := f.Load(&st, &st.Version)
		if err == nil || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), "the items") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// A state file decides what this node trusts (revocations, enrolled keys,
// offered routes): it is refused if anyone but the node's user (or root)
// can change it or the directory holding it.
func TestLoadRefusesFilesOthersCanChange(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	f := File{Path: filepath.Join(dir, "s.json"), What: "test state", Forget: "the items"}
	if err := f.Save(state{Version: Version, Items: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	load := func() error {
		var st state
		_, err := f.Load(&st, &st.Version)
		return err
	}
	refused := func(what, want string) {
		t.Helper()
		err := load()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error containing %q", what, err, want)
		}
	}

	os.Chmod(f.Path, 0o644) // readable is fine: state files hold no secrets
	if err := load(); err != nil {
		t.Errorf("mode 0644: %v", err)
	}
	os.Chmod(f.Path, 0o620)
	refused("group-writable file", "has mode 0620")
	refused("group-writable file", "chmod go-w "+f.Path)
	os.Chmod(f.Path, 0o602)
	refused("world-writable file", "chmod go-w "+f.Path)
	os.Chmod(f.Path, 0o600)

	os.Chmod(dir, 0o777)
	refused("world-writable directory", "chmod go-w "+dir)
	os.Chmod(dir, 0o770)
	refused("group-writable directory", "chmod go-w "+dir)
	// Sticky, like /tmp: others cannot replace or remove our files.
	os.Chmod(dir, 0o777|os.ModeSticky)
	if err := load(); err != nil {
		t.Errorf("sticky world-writable directory: %v", err)
	}
	os.Chmod(dir, 0o700)
	// A missing file in a directory others can change is refused too:
	// they could have removed it.
	os.Chmod(dir, 0o777)
	missing := File{Path: filepath.Join(dir, "missing.json"), What: "test state"}
	var st state
	if _, err := missing.Load(&st, &st.Version); err == nil || !strings.Contains(err.Error(), "chmod go-w "+dir) {
		t.Errorf("missing file in a world-writable directory: %v", err)
	}
	os.Chmod(dir, 0o700)

	if os.Geteuid() != 0 {
		t.Log("not root: cannot give files to another user; ownership not exercised")
		return
	}
	os.Chown(f.Path, nobody, nobody)
	refused("file owned by another user", "owned by uid 65534")
	refused("file owned by another user", "chown 0 "+f.Path)
	os.Chown(f.Path, 0, 0)
	os.Chown(dir, nobody, nobody)
	refused("directory owned by another user", "chown 0 "+dir)
	os.Chown(dir, 0, 0)
	if err := load(); err != nil {
		t.Errorf("back to normal: %v", err)
	}
}

// TestMaxBytes: a file over MaxBytes is refused as corrupt, unread; one
// at the bound loads.
func TestMaxBytes(t *testing.T) {
	f := File{Path: filepath.Join(t.TempDir(), "s.json"), What: "test state", Forget: "the items", MaxBytes: 64}
	if err := f.Save(state{Version: Version, Items: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	var st state
	if found, err := f.Load(&st, &st.Version); !found || err != nil {
		t.Fatalf("small file: %v %v", found, err)
	}
	os.WriteFile(f.Path, []byte(`{"version": 1, "items": ["`+strings.Repeat("x", 64)+`"]}`), 0o600)
	if _, err := f.Load(&st, &st.Version); err == nil || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), "over the 64") {
		t.Errorf("oversized file: %v", err)
	}
}
