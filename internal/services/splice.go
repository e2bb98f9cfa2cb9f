package services

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// spliceBufSize is the copy buffer per direction when the kernel cannot
// splice the two connections directly.
const spliceBufSize = 32 << 10

var spliceBufs = sync.Pool{New: func() any {
	b := make([]byte, spliceBufSize)
	return &b
}}

// halfCloser is a connection that can signal EOF to its peer while still
// reading: *net.TCPConn, *net.UnixConn and gVisor's gonet.TCPConn.
type halfCloser interface{ CloseWrite() error }

// Splice copies a to b and b to a until both directions end, then closes both
// connections. When one direction reaches EOF, Splice passes the half-close
// on with CloseWrite if the other connection has one, and keeps copying the
// other direction; if it has none, or a direction fails, both connections are
// closed at once, which ends the other direction too. Splice uses one extra
// goroutine, which has exited when it returns.
func Splice(a, b net.Conn) {
	splice(a, b, nil, nil)
}

// splice is Splice that adds the bytes copied from a to b to ab and from b to
// a to ba as they move (either may be nil). Counting rules out the kernel's
// zero-copy splice between two sockets.
func splice(a, b net.Conn, ab, ba *atomic.Uint64) {
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			a.Close()
			b.Close()
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		copyHalf(a, b, ba, closeBoth)
	}()
	copyHalf(b, a, ab, closeBoth)
	<-done
	closeBoth()
}

// copyHalf copies src to dst until EOF or an error, then half-closes dst or,
// failing that, closes both connections.
func copyHalf(dst, src net.Conn, n *atomic.Uint64, closeBoth func()) {
	if err := copyConn(dst, src, n); err != nil {
		closeBoth()
		return
	}
	if hc, ok := dst.(halfCloser); ok && hc.CloseWrite() == nil {
		return
	}
	closeBoth()
}

// copyConn copies src to dst. Between two kernel sockets it lets io.Copy use
// splice(2); otherwise it copies through a pooled buffer, hiding ReadFrom and
// WriteTo so that net's fallbacks do not allocate a buffer of their own.
func copyConn(dst, src net.Conn, n *atomic.Uint64) error {
	if n == nil && kernelSpliceable(dst, src) {
		_, err := io.Copy(dst, src)
		return err
	}
	bp := spliceBufs.Get().(*[]byte)
	defer spliceBufs.Put(bp)
	var w io.Writer = writerOnly{dst}
	if n != nil {
		w = &countingWriter{w: dst, n: n}
	}
	_, err := io.CopyBuffer(w, readerOnly{src}, *bp)
	return err
}

// kernelSpliceable reports whether the net package can move src to dst with
// splice(2): TCP to TCP, or between TCP and a Unix stream socket.
func kernelSpliceable(dst, src net.Conn) bool {
	_, dstTCP := dst.(*net.TCPConn)
	_, srcTCP := src.(*net.TCPConn)
	_, dstUnix := dst.(*net.UnixConn)
	_, srcUnix := src.(*net.UnixConn)
	return (dstTCP && (srcTCP || srcUnix)) || (srcTCP && dstUnix)
}

type readerOnly struct{ io.Reader }

type writerOnly struct{ io.Writer }

// countingWriter adds every byte written to n.
type countingWriter struct {
	w io.Writer
	n *atomic.Uint64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	k, err := c.w.Write(p)
	c.n.Add(uint64(k))
	return k, err
}
