package adminapi

import (
	"net"
	"os/user"

	"github.com/tomoe-net/tomoe/internal/fileperm"
)

// Windows has no peer credentials for AF_UNIX sockets (no SO_PEERCRED,
// LOCAL_PEERCRED or getpeereid), so the check is the one Windows makes
// itself: connecting to a Unix socket needs write access to its file.
// The socket file's ACL gives that only to the user tomoe runs as,
// SYSTEM, Administrators and the admin group; the directory, when tomoe
// creates it, gets the same ACL, which the socket file inherits from the
// moment it is created. (Not run on Windows here.)

// makeSocketDir creates the socket's directory with the socket's ACL.
func makeSocketDir(dir string, grp *user.Group) error {
	if err := fileperm.MkdirPrivate(dir); err != nil {
		return err
	}
	return fileperm.SetPrivateACL(dir, groupSID(grp))
}

// secureSocket gives the socket file its ACL; connections are not checked
// one by one (see above).
func secureSocket(ln net.Listener, path string, grp *user.Group) (net.Listener, error) {
	if err := fileperm.SetPrivateACL(path, groupSID(grp)); err != nil {
		return nil, err
	}
	return ln, nil
}

// groupSID is grp's SID (os/user gives it as Gid on Windows), or "".
func groupSID(grp *user.Group) string {
	if grp == nil {
		return ""
	}
	return grp.Gid
}
