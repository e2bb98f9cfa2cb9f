package services

import (
	"errors"
	"net"

	"github.com/tomoe-net/tomoe/internal/fileperm"
)

// unixOwnerFor: Windows tells nobody who connected to a Unix socket, but
// connecting needs write access to the socket file. So a Unix socket
// serves only the user tomoe runs as (with SYSTEM and Administrators):
// its file gets an ACL for them alone, and connections are not checked
// one by one (nil). (Not run on Windows here.)
func unixOwnerFor(allow UIDSet, path string) (func(net.Conn) (uint32, error), error) {
	if allow.Any || len(allow.UIDs) > 0 {
		return nil, errors.New("on windows a Unix socket serves only the user tomoe runs as (its file's ACL is the check): remove proxy.users, or listen on a loopback TCP port with proxy.users = [\"*\"]")
	}
	if err := fileperm.SetPrivateACL(path, ""); err != nil {
		return nil, err
	}
	return nil, nil
}
