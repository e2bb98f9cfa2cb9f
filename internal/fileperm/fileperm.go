// Package fileperm decides whether tomoe may trust a file it reads its
// identity or state from (the key file, policy.json, bridge.json,
// services.json, the forwarding record): DESIGN.md's "a node trusts its
// own config and state files" holds only if nobody else can change them.
//
// A file passes if it is a regular file owned by the user tomoe runs as
// (its effective uid) or by root, and group and others cannot write it (a
// Secret: cannot access it at all). The directory holding it must pass
// the same owner test, and group and others must not be able to write it
// unless it is sticky (as /tmp is): whoever can write a directory can
// remove a file in it (a revocation in policy.json with it) or put their
// own in its place. Root may own either because root can change them
// anyway; a file root owns gives nobody a way in that they lack.
//
// Only the file's own directory is checked, not every ancestor (ssh's
// StrictModes checks two levels): tomoe creates that directory 0700 when
// it is missing, and an ancestor others could rename would be a host
// misconfiguration well beyond tomoe.
//
// On Windows (windows.go) the same rules read the files' security
// descriptors: the owner must be the user tomoe runs as, SYSTEM or the
// Administrators group, and the DACL may give others no access to a
// Secret and no write access to a State file or the directory. Those are
// the checks this package makes there; it has not been run on Windows
// here.
package fileperm

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
)

// Kind is what a file holds, which decides who else may read it.
type Kind uint8

const (
	// Secret is a private key: group and others may neither read nor
	// write it.
	Secret Kind = iota + 1
	// State is a state file: group and others may read it, not write it.
	State
)

// checker holds the effective uid the checks are made for, and the uid
// the process is about to become (-1: none); tests set others.
type checker struct{ euid, next int }

func current() checker { return checker{euid: os.Geteuid(), next: int(nextUID.Load())} }

// nextUID is the uid set by TrustNextUser; -1 when unset.
var nextUID atomic.Int64

func init() { nextUID.Store(-1) }

// TrustNextUser makes files and directories that uid owns pass the owner
// test, as root's and this process's own do: for a process started as
// root that will become uid (tomoe up's privilege drop, package privdrop).
// That user can change these files as soon as the process runs as it, so
// trusting them earlier gives nobody anything they would not have. -1
// trusts nobody more.
func TrustNextUser(uid int) { nextUID.Store(int64(uid)) }

// ReadFile returns the contents of the file at path once it and its
// directory have passed the checks; what names the file in errors ("key
// file", "policy state"). The checks look at the open file, so the bytes
// returned are those of the file checked. A missing file (or directory)
// gives an error for which errors.Is(err, fs.ErrNotExist) holds; the
// directory is checked first, so a missing file in a directory others can
// write is an error of its own.
func ReadFile(path, what string, kind Kind) ([]byte, error) {
	return current().readFile(path, what, kind)
}

// Check makes ReadFile's checks on the file at path and its directory
// without reading it: for a file that must pass before it is needed (a
// passphrase file named in the config).
func Check(path, what string, kind Kind) error { return CheckFor(-1, path, what, kind) }

// CheckFor is Check for a process about to become uid next (-1: none),
// as TrustNextUser would make it: for a config validated before anything
// is trusted on that user's behalf.
func CheckFor(next int, path, what string, kind Kind) error {
	c := current()
	if next >= 0 {
		c.next = next
	}
	if err := c.checkDir(filepath.Dir(path), what); err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	return c.checkFile(path, what, kind, fi)
}

// CheckDir checks the directory that holds a file what (see ReadFile),
// before tomoe creates the file in it. A missing directory gives an error
// for which errors.Is(err, fs.ErrNotExist) holds.
func CheckDir(dir, what string) error { return current().checkDir(dir, what) }

func (c checker) readFile(path, what string, kind Kind) ([]byte, error) {
	if err := c.checkDir(filepath.Dir(path), what); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if err := c.checkFile(path, what, kind, fi); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	return b, nil
}
