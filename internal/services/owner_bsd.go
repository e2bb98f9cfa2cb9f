//go:build darwin || freebsd

package services

import (
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// unixOwnerFor returns how to find a Unix socket client's owner.
func unixOwnerFor(UIDSet, string) (func(net.Conn) (uint32, error), error) { return unixOwner, nil }

// unixOwner returns the effective uid of a Unix socket's peer
// (LOCAL_PEERCRED, taken by the kernel at connect time).
func unixOwner(c net.Conn) (uint32, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, fmt.Errorf("not a socket (%T)", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Xucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, fmt.Errorf("LOCAL_PEERCRED: %w", cerr)
	}
	return cred.Uid, nil
}
