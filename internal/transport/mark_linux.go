package transport

import "golang.org/x/sys/unix"

// setMark puts fwmark mark on socket fd (SO_MARK; CAP_NET_ADMIN).
func setMark(fd uintptr, mark uint32) error {
	return unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
}
