//go:build !windows

package fileperm

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

func (c checker) checkFile(path, what string, kind Kind, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s %s: not a regular file", what, path)
	}
	if err := c.checkOwner(path, what, fi); err != nil {
		return err
	}
	perm := fi.Mode().Perm()
	switch kind {
	case Secret:
		if perm&0o077 != 0 {
			return fmt.Errorf("%s %s has mode %04o: group and others must have no access; fix with: chmod 600 %s", what, path, perm, path)
		}
	case State:
		if perm&0o022 != 0 {
			return fmt.Errorf("%s %s has mode %04o: group and others must not be able to change it; fix with: chmod go-w %s", what, path, perm, path)
		}
	default:
		return fmt.Errorf("%s %s: fileperm: unknown kind %d", what, path, kind)
	}
	return nil
}

func (c checker) checkDir(dir, what string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%s directory %s: %w", what, dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s directory %s: not a directory", what, dir)
	}
	if err := c.checkOwner(dir, what+" directory", fi); err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
		return fmt.Errorf("%s directory %s has mode %04o: group or others could remove or replace the %s in it; fix with: chmod go-w %s", what, dir, perm, what, dir)
	}
	return nil
}

// checkOwner refuses a file or directory that neither the effective uid
// nor root owns.
func (c checker) checkOwner(path, what string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s %s: cannot tell its owner", what, path)
	}
	uid := int(st.Uid)
	if uid == c.euid || uid == 0 || uid == c.next {
		return nil
	}
	return fmt.Errorf("%s %s is owned by uid %d%s, but tomoe runs as uid %d%s: only that user or root may own it, or its owner could change what this node trusts; fix with: chown %d %s (or run tomoe as its owner)",
		what, path, uid, userName(uid), c.euid, userName(c.euid), c.euid, path)
}

// userName is " (name)" for uid, or "" if it has none.
func userName(uid int) string {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return ""
	}
	return " (" + u.Username + ")"
}

// MkdirPrivate creates dir and its missing parents, 0700.
func MkdirPrivate(dir string) error { return os.MkdirAll(dir, 0o700) }
