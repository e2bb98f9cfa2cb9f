// Package privdrop makes `tomoe up`, started as root, give root up once
// the node has made what needs it (the TUN device, its addresses and first
// routes, nftables, the admin socket, listeners on low ports): every thread
// of the process then runs as an ordinary user (config run.user) with its
// primary group, no supplementary groups, and only the capabilities in
// Keep, in the permitted and effective sets; the bounding set holds only
// those, the inheritable and ambient sets are empty, and no_new_privs is
// set, so nothing the process executes can gain more.
//
// Linux keeps credentials per thread and a Go program has many threads:
// the changes are made on all of them at once by libcap's cap package
// through its psx package (with or without cgo), never by a syscall on
// the calling thread alone. Drop checks every thread afterwards
// (/proc/self/task) and fails if one was left behind.
//
// Before the node starts, Prepare hands the run user the directories the
// node writes in (config StateDirs): it can then replace its state files,
// which are written to a temporary file and renamed, and remove the admin
// socket when it exits. Drop hands it the files the node made there as
// root. Neither touches a directory that is not the node's own (see
// Prepare).
package privdrop

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// Target is the user the process becomes.
type Target struct {
	Name string
	UID  int
	GID  int // the user's primary group
}

// Lookup finds the user called name and its primary group.
func Lookup(name string) (Target, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return Target{}, fmt.Errorf("run.user: user %q does not exist: create it (useradd --system --no-create-home %s), or set user = \"root\"", name, name)
		}
		return Target{}, fmt.Errorf("run.user: look up %q: %w", name, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return Target{}, fmt.Errorf("run.user: user %q has uid %q, not a number", name, u.Uid)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return Target{}, fmt.Errorf("run.user: user %q has gid %q, not a number", name, u.Gid)
	}
	if shared(name, uid) {
		return Target{}, fmt.Errorf("run.user: user %q (uid %d) is shared with other programs, which could then reach the node's key and admin socket: create a user of tomoe's own (useradd --system --no-create-home --shell /usr/sbin/nologin tomoe) and set user = \"tomoe\"", name, uid)
	}
	return Target{Name: name, UID: uid, GID: gid}, nil
}

// Overflow is the uid of nobody (the kernel's overflow uid), which other
// programs run as and an unmapped uid shows as.
const Overflow = 65534

// shared reports whether the user named name is one that other programs
// run as, and so a run.user refused: nobody.
func shared(name string, uid int) bool {
	return uid == Overflow || name == "nobody" || name == "nfsnobody" || uid == 4294967294
}

// LoginShell returns the login shell of the user called name, as
// /etc/passwd gives it ("" if it does not or the file cannot be read),
// and whether that shell lets the user log in (not nologin, false or
// empty).
func LoginShell(name string) (shell string, login bool) {
	data, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return "", false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) != 7 || f[0] != name {
			continue
		}
		shell = f[6]
		switch filepath.Base(shell) {
		case "", "nologin", "false", "true":
			return shell, false
		}
		return shell, true
	}
	return "", false
}

// Creds are the credentials of one thread, as /proc shows them.
type Creds struct {
	UID, GID      [4]int // real, effective, saved, filesystem
	Groups        []int  // supplementary
	Eff, Prm, Inh uint64 // capability sets: bit n is capability n
	Bnd, Amb      uint64
	NoNewPrivs    bool
}
