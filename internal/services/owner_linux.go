package services

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// tcpOwnerFor returns how to find a loopback TCP client's owner.
func tcpOwnerFor(UIDSet) (func(net.Conn) (uint32, error), error) { return tcpOwner, nil }

// unixOwnerFor returns how to find a Unix socket client's owner.
func unixOwnerFor(UIDSet, string) (func(net.Conn) (uint32, error), error) { return unixOwner, nil }

// tcpOwner returns the uid owning the client end of a loopback TCP
// connection: the socket whose local address is c's remote address.
func tcpOwner(c net.Conn) (uint32, error) {
	la, ok1 := c.LocalAddr().(*net.TCPAddr)
	ra, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return 0, fmt.Errorf("not a TCP connection (%T)", c)
	}
	var s *netlink.Socket
	var err error
	for range 3 {
		s, err = netlink.SocketGet(ra, la)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("sock_diag lookup of %s -> %s: %w", ra, la, err)
	}
	// The kernel matches a dump only on family and ports, and SocketGet
	// takes the first of up to two answers, so check it is our client.
	if s.ID.SourcePort != uint16(ra.Port) || s.ID.DestinationPort != uint16(la.Port) ||
		!s.ID.Source.Equal(ra.IP) || !s.ID.Destination.Equal(la.IP) {
		return 0, fmt.Errorf("sock_diag lookup of %s -> %s answered for %s:%d -> %s:%d", ra, la,
			s.ID.Source, s.ID.SourcePort, s.ID.Destination, s.ID.DestinationPort)
	}
	// A client that has already closed its socket leaves an orphan or
	// time-wait socket, which has no inode and reports uid 0.
	if s.INode == 0 {
		return 0, fmt.Errorf("client socket %s is already closed", ra)
	}
	return s.UID, nil
}

// unixOwner returns the uid of a Unix socket's peer (SO_PEERCRED).
func unixOwner(c net.Conn) (uint32, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, fmt.Errorf("not a socket (%T)", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	return cred.Uid, nil
}
