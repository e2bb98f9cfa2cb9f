package transport

import (
	"context"
	"net"
	"syscall"
)

// MarkControl returns a socket Control function (net.Dialer's,
// net.ListenConfig's) that puts fwmark mark on the socket (nil for mark
// 0), so that the node's own routes (an exit node's default route) never
// capture its underlay connections: those to and from bridges over TCP.
func MarkControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	if mark == 0 {
		return nil
	}
	return func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = setMark(fd, mark) }); err != nil {
			return err
		}
		return serr
	}
}

// MarkedListen returns a function that listens as net.Listen does, on
// sockets that carry fwmark mark (see MarkControl).
func MarkedListen(mark uint32) func(network, address string) (net.Listener, error) {
	lc := net.ListenConfig{Control: MarkControl(mark)}
	return func(network, address string) (net.Listener, error) {
		return lc.Listen(context.Background(), network, address)
	}
}
