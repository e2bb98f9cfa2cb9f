//go:build unix

package bridge

import "syscall"

// readAvailable reads into p what c's socket holds now, without waiting:
// one system call that takes many frames, where a read through the
// connection's small bufio.Reader would take a few.
func (c *serverConn) readAvailable(p []byte) int {
	if c.rc == nil || len(p) == 0 {
		return 0
	}
	var n int
	err := c.rc.Read(func(fd uintptr) bool {
		n, _ = syscall.Read(int(fd), p)
		return true // never wait
	})
	if err != nil || n < 0 {
		return 0
	}
	return n
}
