//go:build !unix

package bridge

// readAvailable is the unix one's fallback: nothing more than the
// bufio.Reader held (frames still arrive, in smaller batches).
func (c *serverConn) readAvailable(p []byte) int { return 0 }
