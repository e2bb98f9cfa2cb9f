//go:build !linux

package services

import (
	"fmt"
	"net"
	"runtime"
)

// tcpOwnerFor: off Linux tomoe cannot tell which local user owns a
// loopback TCP connection, so such a listener is only for allow.Any,
// and checks nobody (nil).
func tcpOwnerFor(allow UIDSet) (func(net.Conn) (uint32, error), error) {
	if allow.Any {
		return nil, nil
	}
	return nil, fmt.Errorf("tomoe cannot tell which local user owns a loopback TCP connection on %s (Linux's sock_diag can): "+
		"admit every local user with proxy.users = [\"*\"], or listen on a Unix socket path", runtime.GOOS)
}
