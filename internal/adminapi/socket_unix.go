//go:build !windows

package adminapi

import (
	"net"
	"os"
	"os/user"
	"slices"
	"strconv"
)

// makeSocketDir creates the socket's directory: 0700, or 0750 and owned by
// grp.
func makeSocketDir(dir string, grp *user.Group) error {
	gid, err := groupID(grp)
	if err != nil {
		return err
	}
	mode := os.FileMode(0o700)
	if gid >= 0 {
		mode = 0o750
	}
	if err := os.MkdirAll(dir, mode); err != nil {
		return err
	}
	if gid >= 0 {
		return os.Chown(dir, -1, gid)
	}
	return nil
}

// secureSocket makes the socket at path 0600, or 0660 and owned by grp,
// and closes at once connections from users other than root, this
// process's user and grp's members (peerCred), which also covers the
// instant between creating the socket and setting its mode.
func secureSocket(ln net.Listener, path string, grp *user.Group) (net.Listener, error) {
	gid, err := groupID(grp)
	if err != nil {
		return nil, err
	}
	mode := os.FileMode(0o600)
	if gid >= 0 {
		mode = 0o660
		if err := os.Chown(path, -1, gid); err != nil {
			return nil, err
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		return nil, err
	}
	return &credListener{Listener: ln, uid: os.Geteuid(), gid: gid}, nil
}

// groupID is grp's gid, or -1 for none.
func groupID(grp *user.Group) (int, error) {
	if grp == nil {
		return -1, nil
	}
	return strconv.Atoi(grp.Gid)
}

// credListener admits only root, our own user and members of the admin group.
type credListener struct {
	net.Listener
	uid, gid int
}

func (l *credListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.allowed(c) {
			return c, nil
		}
		c.Close()
	}
}

func (l *credListener) allowed(c net.Conn) bool {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return false
	}
	var uid int
	var gids []int
	var cerr error
	if err := raw.Control(func(fd uintptr) { uid, gids, cerr = peerCred(fd) }); err != nil || cerr != nil {
		return false
	}
	// os.Geteuid as well as the uid at Listen: a node started as root
	// that gave root up (package privdrop) still admits its own user.
	if uid == 0 || uid == l.uid || uid == os.Geteuid() {
		return true
	}
	if l.gid < 0 {
		return false
	}
	if slices.Contains(gids, l.gid) {
		return true
	}
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return false
	}
	groups, _ := u.GroupIds()
	return slices.Contains(groups, strconv.Itoa(l.gid))
}
