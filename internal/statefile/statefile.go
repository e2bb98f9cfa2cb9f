// Package statefile keeps a node's small JSON state files (policy changes
// made through the API, a bridge's tokens and enrolments): versioned,
// mode 0600, written atomically so that a crash leaves the old file or the
// new one, never half of one, and read only if no other user can change
// them.
package statefile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tomoe-net/tomoe/internal/fileperm"
)

// Version is the only state file version so far.
const Version = 1

// File is one state file.
type File struct {
	Path string
	// What names the file in errors, e.g. "policy state".
	What string
	// Forget says what removing the file loses, for the corrupt-file error.
	Forget string
	// MaxVersion is the newest version of the file's format its reader
	// knows (versions 1 to MaxVersion load; 0 means Version). A writer
	// that adds meaning an older reader would silently drop bumps the
	// version it writes, so the older reader refuses the file instead.
	MaxVersion int
	// MaxBytes, if not 0, bounds the file: a longer one is refused as
	// corrupt, unread (a file that can only grow with its entries'
	// bound, read at start).
	MaxBytes int64
}

// Load decodes the file into v, whose Version field version points at.
// It reports false, and no error, if the file does not exist. It refuses a
// file that anyone but this process's user (or root) can change, or one in
// a directory they can (see package fileperm): the node trusts what it
// reads here.
func (f File) Load(v any, version *int) (bool, error) {
	if f.MaxBytes > 0 {
		if fi, err := os.Stat(f.Path); err == nil && fi.Size() > f.MaxBytes {
			return false, f.Corrupt(fmt.Errorf("%d bytes, over the %d it can hold", fi.Size(), f.MaxBytes))
		}
	}
	b, err := fileperm.ReadFile(f.Path, f.What, fileperm.State)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if f.MaxBytes > 0 && int64(len(b)) > f.MaxBytes { // it grew since the Stat
		return false, f.Corrupt(fmt.Errorf("%d bytes, over the %d it can hold", len(b), f.MaxBytes))
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, f.Corrupt(err)
	}
	if maxV := max(f.MaxVersion, Version); *version < 1 || *version > maxV {
		return false, f.Corrupt(fmt.Errorf("unknown version %d", *version))
	}
	return true, nil
}

// Corrupt is the error for a file whose content makes no sense.
func (f File) Corrupt(err error) error {
	return fmt.Errorf("%s %s is corrupt (%v): repair it, or remove it to forget %s", f.What, f.Path, err, f.Forget)
}

// Save writes v as indented JSON: a temporary file of mode 0600 in the
// same directory (created 0700 if missing), synced, then renamed over the
// old one.
func (f File) Save(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	fail := func(err error) error { return fmt.Errorf("%s %s: %w", f.What, f.Path, err) }
	dir := filepath.Dir(f.Path)
	if err := fileperm.MkdirPrivate(dir); err != nil {
		return fail(err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(f.Path)+"-*.tmp") // mode 0600
	if err != nil {
		return fail(err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp.Name(), f.Path); err != nil {
		return fail(err)
	}
	return nil
}
