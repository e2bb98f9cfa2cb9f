//go:build !windows

package fileperm

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const nobody = 65534

func TestModes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := current()
	for _, tc := range []struct {
		perm   fs.FileMode
		kind   Kind
		reject string // "" = accepted
	}{
		{0o600, Secret, ""},
		{0o400, Secret, ""},
		{0o640, Secret, "chmod 600"},
		{0o604, Secret, "chmod 600"},
		{0o620, Secret, "chmod 600"},
		{0o600, State, ""},
		{0o644, State, ""},
		{0o664, State, "chmod go-w"},
		{0o646, State, "chmod go-w"},
	} {
		os.Chmod(path, tc.perm)
		b, err := c.readFile(path, "test file", tc.kind)
		switch {
		case tc.reject == "" && (err != nil || string(b) != "x"):
			t.Errorf("%04o kind %d: %q, %v", tc.perm, tc.kind, b, err)
		case tc.reject != "" && (err == nil || !strings.Contains(err.Error(), tc.reject) || !strings.Contains(err.Error(), path)):
			t.Errorf("%04o kind %d: %v, want an error naming the file and %q", tc.perm, tc.kind, err, tc.reject)
		}
	}
	os.Chmod(path, 0o600)

	// Missing files and directories are fs.ErrNotExist, for the callers
	// that create them.
	if _, err := c.readFile(filepath.Join(dir, "missing"), "test file", State); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := c.readFile(filepath.Join(dir, "no", "f"), "test file", State); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing directory: %v", err)
	}
	if _, err := c.readFile(dir, "test file", State); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory as the file: %v", err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err == nil {
		// Open would block on a FIFO without a writer; refused before.
		if err := c.checkDir(dir, "x"); err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(filepath.Join(dir, "fifo"))
		if err := c.checkFile(filepath.Join(dir, "fifo"), "test file", State, fi); err == nil {
			t.Error("a FIFO passed")
		}
	}
}

// Owners: the effective uid or root, for the file and its directory.
func TestOwners(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to give files to other users")
	}
	dir := filepath.Join(t.TempDir(), "d")
	os.Mkdir(dir, 0o700)
	path := filepath.Join(dir, "f")
	os.WriteFile(path, []byte("x"), 0o600)
	asNobody := checker{euid: nobody}

	// Root owns both: fine for root and for a node running as nobody.
	for _, c := range []checker{current(), asNobody} {
		if _, err := c.readFile(path, "test file", Secret); err != nil {
			t.Errorf("euid %d, root's files: %v", c.euid, err)
		}
	}
	// nobody's own files, as the userspace e2e tests run them.
	os.Chown(dir, nobody, nobody)
	os.Chown(path, nobody, nobody)
	if _, err := asNobody.readFile(path, "test file", Secret); err != nil {
		t.Errorf("nobody's own files: %v", err)
	}
	// Root about to become nobody (tomoe up's privilege drop) trusts
	// them too; root alone does not.
	if os.Geteuid() == 0 {
		if _, err := (checker{euid: 0, next: nobody}).readFile(path, "test file", Secret); err != nil {
			t.Errorf("root becoming nobody, nobody's files: %v", err)
		}
		if _, err := (checker{euid: 0, next: -1}).readFile(path, "test file", Secret); err == nil {
			t.Errorf("root accepted nobody's files")
		}
	}
	// Another user's file, or directory.
	os.Chown(path, 1234, 1234)
	_, err := asNobody.readFile(path, "test file", Secret)
	if err == nil || !strings.Contains(err.Error(), "owned by uid 1234") || !strings.Contains(err.Error(), "runs as uid 65534") || !strings.Contains(err.Error(), "chown 65534 "+path) {
		t.Errorf("another user's file: %v", err)
	}
	os.Chown(path, nobody, nobody)
	os.Chown(dir, 1234, 1234)
	err = asNobody.checkDir(dir, "test file")
	if err == nil || !strings.Contains(err.Error(), "test file directory "+dir+" is owned by uid 1234") || !strings.Contains(err.Error(), "chown 65534 "+dir) {
		t.Errorf("another user's directory: %v", err)
	}
}

// Check makes ReadFile's checks without reading.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := Check(path, "test file", Secret); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
	os.WriteFile(path, []byte("x"), 0o600)
	if err := Check(path, "test file", Secret); err != nil {
		t.Fatalf("0600: %v", err)
	}
	os.Chmod(path, 0o640)
	if err := Check(path, "test file", Secret); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("0640: %v", err)
	}
	if err := Check(dir, "test file", Secret); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("directory: %v", err)
	}
}
