package bridge

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/ratelimit"
)

// serverConn is a node's TCP connection: frames with a two-byte length in
// front, read by one goroutine and written from a bounded queue by another,
// so that a slow peer never blocks the UDP receive path.
type serverConn struct {
	s          *Server
	nc         net.Conn
	remote     netip.AddrPort
	source     netip.Addr // what its slot counts against: ratelimit.Source of remote
	br         *bufio.Reader
	rc         syscall.RawConn // nil if nc has no file descriptor
	q          chan *[]byte    // nil: flush and stop
	done       chan struct{}
	writerDone chan struct{}
	closeOnce  sync.Once

	// Guarded by Server.mu.
	key identity.PublicKey
	reg *registration
	// retired: its node registered again elsewhere, and the bridge closes
	// it; a Register still read from it must not take the node back.
	retired bool
}

var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

var bufWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

func (s *Server) acceptLoop(ln net.Listener) {
	defer s.wg.Done()
	// The pause after a failed Accept (out of file descriptors) is the
	// kernel's pace: real time, not the bridge's clock.
	backoff := 5 * time.Millisecond
	for {
		nc, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.logLimited(slog.LevelWarn, "bridge: tcp accept", "err", err)
			select {
			case <-s.done:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		s.addConn(nc)
	}
}

func (s *Server) addConn(nc net.Conn) {
	var remote netip.AddrPort
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		remote = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	c := &serverConn{
		s:          s,
		nc:         nc,
		remote:     remote,
		source:     ratelimit.Source(remote.Addr()),
		br:         bufio.NewReader(nc),
		q:          make(chan *[]byte, tcpQueueLen),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	if sc, ok := nc.(syscall.Conn); ok {
		c.rc, _ = sc.SyscallConn()
	}
	s.connMu.Lock()
	// Counted per IPv6 /64, not per address: a host given a /64 has 2^64
	// addresses to open connections from.
	if s.closing || len(s.conns) >= maxTCPConns || s.pending[c.source] >= maxPendingPerSource {
		s.connMu.Unlock()
		nc.Close()
		return
	}
	s.pending[c.source]++
	s.conns[c] = struct{}{}
	s.wg.Add(2)
	s.connMu.Unlock()
	s.stats.tcpConns.Add(1)
	go c.writeLoop()
	go s.serveConn(c)
}

// serveConn reads c's frames until it fails or closes. The first frame
// must be a Register that is accepted.
func (s *Server) serveConn(c *serverConn) {
	defer s.wg.Done()
	defer s.dropConn(c)
	// The first frame, from a stranger, goes into a small buffer: an
	// unregistered connection must cost the bridge little. Socket
	// deadlines are the kernel's: real time, whatever the bridge's clock.
	c.nc.SetReadDeadline(time.Now().Add(s.firstTimeout))
	var first [maxFirstFrame]byte
	var hdr [2]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err == nil {
		if n := int(binary.BigEndian.Uint16(hdr[:])); n <= maxFirstFrame {
			if _, err := io.ReadFull(c.br, first[:n]); err == nil && wire.IsControl(first[:n]) {
				s.control(first[:n], c.remote, c, s.now())
			}
		}
	}
	s.connMu.Lock()
	s.pending[c.source]--
	if s.pending[c.source] <= 0 {
		delete(s.pending, c.source)
	}
	s.connMu.Unlock()
	s.mu.RLock()
	ok := c.reg != nil && c.reg.tcp == c
	s.mu.RUnlock()
	if !ok {
		c.finish() // deliver a Refused, if any, then close
		return
	}
	out := s.getOut()
	defer s.putOut(out)
	var b *tcpBatch
	defer func() {
		if b != nil {
			b.put()
		}
	}()
	for {
		c.nc.SetReadDeadline(time.Now().Add(tcpIdleTimeout))
		var err error
		if b == nil {
			// Wait for data before taking a batch buffer, so an idle
			// connection holds none; then take all the socket has.
			if _, err := c.br.Peek(1); err != nil {
				return
			}
			b = tcpBatches.Get().(*tcpBatch)
			n, _ := c.br.Read(b.raw[:cap(b.raw)]) // what br holds
			b.raw = b.raw[:n]
			b.raw = b.raw[:n+c.readAvailable(b.raw[n:cap(b.raw)])]
		} else {
			// A frame is incomplete: wait for the rest (and take what
			// else has come).
			var n int
			n, err = c.br.Read(b.raw[len(b.raw):cap(b.raw)])
			b.raw = b.raw[:len(b.raw)+n]
		}
		rest := c.relayFrames(b.raw, out)
		s.flush(out)
		if len(rest) == 0 {
			b.put()
			b = nil
		} else {
			b.raw = b.raw[:copy(b.raw, rest)]
		}
		if err != nil {
			return
		}
	}
}

// relayFrames handles the complete frames at the start of raw (each with
// its two-byte length) and returns the incomplete rest. Relay frames for
// UDP nodes collect in out, still in raw: each is moved down against the
// one before it in out, over the lengths and the frames not sent, so that
// a send batch lies back to back, and each frame's capacity runs on over
// those after it. A GSO send (wireguard-go's StdNetBind appends a batch's
// datagrams to its first) then coalesces them without moving a byte.
func (c *serverConn) relayFrames(raw []byte, out *relayOut) []byte {
	s := c.s
	now := s.now()
	w, p := 0, 0 // where the next relay frame goes; what is read
	for len(raw)-p >= 2 {
		n := int(binary.BigEndian.Uint16(raw[p:]))
		if len(raw)-p < 2+n {
			break
		}
		f := raw[p+2 : p+2+n : p+2+n]
		p += 2 + n
		if n == 0 {
			continue
		}
		switch f[0] {
		case wire.FrameRelay:
			g := raw[w : w+n : len(raw)]
			copy(g, f)
			s.relay(g, c.remote, c, now, out)
			if k := len(out.frames); k > 0 && &out.frames[k-1][0] == &g[0] {
				w += n // in out: keep it
			}
		case wire.FrameControl:
			s.control(f, c.remote, c, now)
		}
	}
	return raw[p:]
}

// dropConn removes c's registration if it is still on c, and closes c.
func (s *Server) dropConn(c *serverConn) {
	s.mu.Lock()
	if c.reg != nil && c.reg.tcp == c {
		s.removeLocked(c.reg)
	}
	s.mu.Unlock()
	c.close()
	<-c.writerDone
	s.connMu.Lock()
	delete(s.conns, c)
	s.connMu.Unlock()
}

// tcpBatch holds the bytes read from a connection in one go: complete
// frames, each with its length, and perhaps the start of another. It holds
// any frame whole, so a frame it cannot complete is one still arriving.
type tcpBatch struct {
	raw []byte
}

var tcpBatches = sync.Pool{New: func() any {
	return &tcpBatch{raw: make([]byte, 0, 2*(2+wire.MaxFrame))}
}}

func (b *tcpBatch) put() {
	b.raw = b.raw[:0]
	tcpBatches.Put(b)
}

// enqueue copies f onto c's send queue; false if the queue is full or c
// is closed.
func (c *serverConn) enqueue(f []byte) bool {
	if len(f) > wire.MaxFrame {
		return false
	}
	select {
	case <-c.done:
		return false
	default:
	}
	p := frameBufs.Get().(*[]byte)
	*p = append((*p)[:0], f...)
	select {
	case c.q <- p:
		return true
	default:
		putFrameBuf(p)
		return false
	}
}

func putFrameBuf(p *[]byte) {
	if cap(*p) <= pooledFrameMaxSize {
		frameBufs.Put(p)
	}
}

// finish lets the writer send what is queued, then waits for it to stop.
func (c *serverConn) finish() {
	select {
	case c.q <- nil:
		<-c.writerDone
	default:
	}
}

func (c *serverConn) close() {
	c.closeOnce.Do(func() {
		close(c.done)
		c.nc.Close()
	})
}

// writeLoop drains the send queue. It takes a write buffer only while
// there is something to write.
func (c *serverConn) writeLoop() {
	defer c.s.wg.Done()
	defer close(c.writerDone)
	var hdr [2]byte
	for {
		var p *[]byte
		select {
		case <-c.done:
			return
		case p = <-c.q:
		}
		if p == nil {
			return
		}
		bw := bufWriters.Get().(*bufio.Writer)
		bw.Reset(c.nc)
		c.nc.SetWriteDeadline(time.Now().Add(tcpWriteTimeout))
		var err error
		stop := false
		for p != nil && err == nil {
			binary.BigEndian.PutUint16(hdr[:], uint16(len(*p)))
			if _, err = bw.Write(hdr[:]); err == nil {
				_, err = bw.Write(*p)
			}
			putFrameBuf(p)
			p = nil
			select {
			case p = <-c.q:
				stop = p == nil
			default:
			}
		}
		if err == nil {
			err = bw.Flush()
		}
		bw.Reset(nil)
		bufWriters.Put(bw)
		if err != nil {
			c.close()
			return
		}
		if stop {
			return
		}
	}
}
