package config

import (
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
)

// DefaultRunUser is the user `tomoe up` becomes, when started as root with
// run.user unset, if a user of that name exists (the .deb and .rpm create
// it). Where none does, the node stays root and says so.
const DefaultRunUser = "tomoe"

// Run says whom `tomoe up` runs as.
type Run struct {
	// User is the user `tomoe up` becomes once, started as root, it has
	// made what needs root (TUN device, addresses, routes, nftables, the
	// admin socket, listeners): it then keeps only the capabilities the
	// node needs later (package privdrop). "" (unset): DefaultRunUser if
	// it exists, else no change. "root": stay root. Started as any other
	// user, tomoe has nothing to drop and this key changes nothing.
	User string `toml:"user"`
}

// validateRun checks that run.user names a user of this host.
func (c *Config) validateRun(bad func(key, format string, args ...any)) {
	name := c.Run.User
	if name == "" || name == "root" {
		return
	}
	u, err := user.Lookup(name)
	if err != nil {
		bad("run.user", "user %q does not exist: create it (useradd --system --no-create-home %s), name another, or set user = \"root\" to keep running as root", name, name)
		return
	}
	if name == "nobody" || name == "nfsnobody" || u.Uid == "65534" {
		bad("run.user", "user %q (uid %s) is shared with other programs, which could then reach the node's key and admin socket: create a user of tomoe's own (useradd --system --no-create-home --shell /usr/sbin/nologin tomoe) and set user = \"tomoe\"", name, u.Uid)
	}
}

// RunUser is the user `tomoe up` started as root should become: run.user,
// or DefaultRunUser when run.user is unset and that user exists. "" means
// no change (run.user = "root", or unset with no DefaultRunUser here).
// explicit tells whether the config chose it.
func (c *Config) RunUser() (name string, explicit bool) {
	switch c.Run.User {
	case "root":
		return "", true
	case "":
		if _, err := user.Lookup(DefaultRunUser); err != nil {
			return "", false
		}
		return DefaultRunUser, false
	}
	return c.Run.User, true
}

// RunUID is the uid of RunUser when the process started as root and will
// give root up, else -1: files that user owns are then trusted as the
// process's own (package fileperm).
func (c *Config) RunUID() int {
	if !startedAsRoot {
		return -1
	}
	name, _ := c.RunUser()
	if name == "" {
		return -1
	}
	u, err := user.Lookup(name)
	if err != nil {
		return -1
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil || uid == 0 {
		return -1
	}
	return uid
}

// StateDirs are the directories the node writes in while it runs: that of
// the key file (the key, and the state files beside it), of the policy and
// bridge state files, and of the admin socket (removed on exit). A node
// that gives up root must be able to write them.
func (c *Config) StateDirs() []string {
	var dirs []string
	for _, p := range []string{c.KeyFile, c.StateFile(), c.BridgeStateFile(), c.Admin.Socket} {
		if p == "" {
			continue
		}
		if d := filepath.Dir(p); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}
