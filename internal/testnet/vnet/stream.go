package vnet

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tomoe-net/tomoe/internal/clock"
)

// Streams are TCP as a test needs it: a connection request (SYN) travels
// the path hop by hop like a datagram, so links, NATs and blocks decide
// whether it arrives, and NATs map it; then data flows reliably and in
// order, each write arriving the path's one-way delay (summed over its
// links when the connection was made) after it was written. There is no
// loss, congestion control or shaping of stream data. A stream is reset
// (reads and writes fail with ECONNRESET) when a link on its path goes
// down or blocks TCP, when a NAT on it changes address or is flushed, or
// when the world closes.

// streamWindow is how many bytes a writer may have in flight and unread
// before Write blocks, like a TCP window.
const streamWindow = 256 << 10

// dialState follows a connection request along its path. links, nats and
// delay are written by whichever goroutine carries the request (one at a
// time, handed over through the links' locks); the rest is guarded by mu.
type dialState struct {
	h      *Host
	local  netip.AddrPort
	target netip.AddrPort
	links  []*Link
	nats   []*NAT
	delay  time.Duration

	mu    sync.Mutex
	state int // dialPending, dialFinished, dialAbandoned
	conn  *Conn
	err   error
	done  chan struct{} // closed when finished
}

const (
	dialPending = iota
	dialFinished
	dialAbandoned
)

func (d *dialState) crossLink(l *Link, delay time.Duration) {
	d.links = append(d.links, l)
	d.delay += delay
}

func (d *dialState) crossNAT(n *NAT) { d.nats = append(d.nats, n) }

// finishAfter ends the dial with c or err once the answer has travelled
// back (the path's delay).
func (d *dialState) finishAfter(c *Conn, err error) {
	if d.delay <= 0 {
		d.finish(c, err)
		return
	}
	d.h.w.clock.AfterFunc(d.delay, func() { d.finish(c, err) })
}

func (d *dialState) finish(c *Conn, err error) {
	d.mu.Lock()
	if d.state != dialPending {
		d.mu.Unlock()
		if c != nil {
			c.s.reset("dial abandoned")
		}
		return
	}
	d.state, d.conn, d.err = dialFinished, c, err
	d.mu.Unlock()
	close(d.done)
}

// abandon gives up on the dial; it reports false if the dial finished
// first.
func (d *dialState) abandon() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state == dialFinished {
		return false
	}
	d.state = dialAbandoned
	return true
}

// Dial connects to address ("ip:port": vnet has no names) over TCP, like
// net.Dialer.DialContext. It fails with ECONNREFUSED if nothing listens
// there, and otherwise waits until ctx is done (or Config.ConnectTimeout
// if ctx has no deadline) when the request is dropped on the way, as a
// real SYN's retries would.
func (h *Host) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	oe := &net.OpError{Op: "dial", Net: network}
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		oe.Err = net.UnknownNetworkError(network)
		return nil, oe
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		oe.Err = &net.AddrError{Err: "vnet dials ip:port, not names", Addr: address}
		return nil, oe
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	oe.Addr = net.TCPAddrFromAddrPort(ap)
	port, err := h.reserveTCP()
	if err != nil {
		oe.Err = err
		return nil, oe
	}
	d := &dialState{h: h, local: netip.AddrPortFrom(h.addr, port), target: ap, done: make(chan struct{})}
	oe.Source = net.TCPAddrFromAddrPort(d.local)
	p := newPacket(TCP, d.local, ap, nil)
	p.syn = d
	h.output(p)

	var timeout <-chan time.Time
	if _, ok := ctx.Deadline(); !ok {
		t := time.NewTimer(h.w.cfg.ConnectTimeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-d.done:
	case <-ctx.Done():
		err = ctx.Err()
	case <-timeout:
		err = os.ErrDeadlineExceeded
	case <-h.done:
		err = net.ErrClosed
	}
	if err != nil && d.abandon() {
		h.releaseTCP(port)
		oe.Err = err
		return nil, oe
	}
	if d.err != nil {
		h.releaseTCP(port)
		oe.Err = d.err
		return nil, oe
	}
	d.conn.release = func() { h.releaseTCP(port) }
	return d.conn, nil
}

func (h *Host) reserveTCP() (uint16, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return 0, errHostClosed
	}
	p, ok := ephemeral(&h.nextTCP, func(p uint16) bool {
		_, a := h.tcp[p]
		_, b := h.listeners[p]
		return a || b
	})
	if !ok {
		return 0, fmt.Errorf("vnet: %s: no free TCP port", h.name)
	}
	if h.tcp == nil {
		h.tcp = make(map[uint16]struct{})
	}
	h.tcp[p] = struct{}{}
	return p, nil
}

func (h *Host) releaseTCP(port uint16) {
	h.mu.Lock()
	delete(h.tcp, port)
	h.mu.Unlock()
}

// acceptSyn takes a connection request that reached this host.
func (h *Host) acceptSyn(p *packet) {
	d, local, remote := p.syn, p.dst, p.src
	p.release()
	w := h.w
	h.mu.RLock()
	ln := h.listeners[local.Port()]
	h.mu.RUnlock()
	if ln == nil {
		w.stats.noSocket.Add(1)
		d.finishAfter(nil, syscall.ECONNREFUSED)
		return
	}
	s := &stream{w: w, delay: int64(d.delay)}
	client := &Conn{s: s, end: 0, local: d.local, remote: d.target, done: make(chan struct{})}
	server := &Conn{s: s, end: 1, local: local, remote: remote, done: make(chan struct{})}
	if !s.register([]*Host{d.h, h}, d.links, d.nats) {
		w.stats.linkDown.Add(1) // the path broke under the request: it is lost
		return
	}
	if !ln.push(server) {
		s.reset("listen queue full")
		d.finishAfter(nil, syscall.ECONNREFUSED)
		return
	}
	d.finishAfter(client, nil)
}

// stream is one connection: two halves, one per direction.
type stream struct {
	w     *World
	delay int64     // one way
	half  [2]half   // half[i] carries what end i writes
	ends  [2]uint32 // set when end i closed (atomic)

	mu    sync.Mutex // guards the fields below
	dead  bool       // reset or closed at both ends: unregistered
	hosts []*Host
	links []*Link
	nats  []*NAT
}

// half is one direction of a stream: the bytes written and not yet read,
// each with the time it arrives.
type half struct {
	mu       sync.Mutex // guards the fields below
	chunks   []chunk
	buffered int
	fin      bool        // the writer closed: EOF after the chunks
	finDue   int64       // when the FIN arrives
	err      error       // the stream was reset
	rclosed  bool        // the reader closed: writes fail
	timer    clock.Timer // wakes the reader when the next chunk arrives

	readable chan struct{} // cap 1
	writable chan struct{} // cap 1
}

type chunk struct {
	b   []byte
	due int64
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// register records the stream with everything that can break it; it fails
// if one of them already would have.
func (s *stream) register(hosts []*Host, links []*Link, nats []*NAT) bool {
	for i := range s.half {
		s.half[i].readable = make(chan struct{}, 1)
		s.half[i].writable = make(chan struct{}, 1)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range hosts {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			s.unregisterLocked()
			return false
		}
		if h.streams == nil {
			h.streams = make(map[*stream]struct{})
		}
		h.streams[s] = struct{}{}
		h.mu.Unlock()
		s.hosts = append(s.hosts, h)
	}
	for _, l := range links {
		if !l.addStream(s) {
			s.unregisterLocked()
			return false
		}
		s.links = append(s.links, l)
	}
	for _, n := range nats {
		n.addStream(s)
		s.nats = append(s.nats, n)
	}
	return true
}

func (s *stream) unregisterLocked() {
	s.dead = true
	for _, h := range s.hosts {
		h.mu.Lock()
		delete(h.streams, s)
		h.mu.Unlock()
	}
	for _, l := range s.links {
		l.removeStream(s)
	}
	for _, n := range s.nats {
		n.removeStream(s)
	}
	s.hosts, s.links, s.nats = nil, nil, nil
}

// connReset is the error of a reset stream; it is ECONNRESET to errors.Is.
type connReset string

func (e connReset) Error() string        { return "connection reset by vnet: " + string(e) }
func (e connReset) Is(target error) bool { return target == syscall.ECONNRESET }

// reset fails both ends at once, dropping what was in flight.
func (s *stream) reset(why string) {
	s.mu.Lock()
	if s.dead {
		s.mu.Unlock()
		return
	}
	s.unregisterLocked()
	s.mu.Unlock()
	// Both halves at once: an end woken by the first must not close
	// its own half before the second fails, or its peer would read EOF.
	// Nothing else holds two half locks.
	for i := range s.half {
		s.half[i].mu.Lock()
	}
	for i := range s.half {
		h := &s.half[i]
		h.err = connReset(why)
		h.chunks, h.buffered = nil, 0
		if h.timer != nil {
			h.timer.Stop()
		}
	}
	for i := range s.half {
		s.half[i].mu.Unlock()
	}
	for i := range s.half {
		signal(s.half[i].readable)
		signal(s.half[i].writable)
	}
}

// closed is called when end i closes; the second close unregisters.
func (s *stream) closed(i int) {
	atomic.StoreUint32(&s.ends[i], 1)
	if atomic.LoadUint32(&s.ends[1-i]) == 0 {
		return
	}
	s.mu.Lock()
	if !s.dead {
		s.unregisterLocked()
	}
	s.mu.Unlock()
	for i := range s.half {
		h := &s.half[i]
		h.mu.Lock()
		if h.timer != nil {
			h.timer.Stop()
		}
		h.mu.Unlock()
	}
}

// Conn is one end of a stream; it implements net.Conn.
type Conn struct {
	s             *stream
	end           int // reads s.half[1-end], writes s.half[end]
	local, remote netip.AddrPort
	rd, wd        deadline
	isClosed      atomic.Bool
	done          chan struct{} // closed by Close
	once          sync.Once
	release       func() // frees the dialler's local port; nil at the listener's end
}

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// Read implements net.Conn.
func (c *Conn) Read(b []byte) (int, error) {
	h := &c.s.half[1-c.end]
	for {
		if c.isClosed.Load() {
			return 0, c.opError("read", net.ErrClosed)
		}
		h.mu.Lock()
		if h.err != nil {
			err := h.err
			h.mu.Unlock()
			return 0, c.opError("read", err)
		}
		now := c.s.w.now()
		n := 0
		for n < len(b) && len(h.chunks) > 0 && h.chunks[0].due <= now {
			k := copy(b[n:], h.chunks[0].b)
			n += k
			if k == len(h.chunks[0].b) {
				h.chunks[0] = chunk{}
				h.chunks = h.chunks[1:]
			} else {
				h.chunks[0].b = h.chunks[0].b[k:]
			}
		}
		if n > 0 || len(b) == 0 {
			h.buffered -= n
			h.mu.Unlock()
			signal(h.writable)
			return n, nil
		}
		if len(h.chunks) == 0 && h.fin && h.finDue <= now {
			h.mu.Unlock()
			return 0, io.EOF
		}
		wake := int64(-1)
		if len(h.chunks) > 0 {
			wake = h.chunks[0].due
		} else if h.fin {
			wake = h.finDue
		}
		if wake >= 0 {
			d := time.Duration(wake - now)
			if h.timer == nil {
				h.timer = c.s.w.clock.AfterFunc(d, func() { signal(h.readable) })
			} else {
				h.timer.Reset(d)
			}
		}
		h.mu.Unlock()
		select {
		case <-h.readable:
		case <-c.done:
		case <-c.rd.wait():
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		}
	}
}

// Write implements net.Conn. It blocks while streamWindow bytes are
// unread.
func (c *Conn) Write(b []byte) (int, error) {
	h := &c.s.half[c.end]
	total := 0
	for len(b) > 0 {
		if c.isClosed.Load() {
			return total, c.opError("write", net.ErrClosed)
		}
		if c.wd.expired() {
			return total, c.opError("write", os.ErrDeadlineExceeded)
		}
		h.mu.Lock()
		switch {
		case h.err != nil:
			err := h.err
			h.mu.Unlock()
			return total, c.opError("write", err)
		case h.rclosed:
			h.mu.Unlock()
			return total, c.opError("write", syscall.EPIPE)
		case h.buffered >= streamWindow:
			h.mu.Unlock()
			select {
			case <-h.writable:
			case <-c.done:
			case <-c.wd.wait():
			}
			continue
		}
		k := min(len(b), streamWindow-h.buffered)
		data := make([]byte, k)
		copy(data, b)
		h.chunks = append(h.chunks, chunk{data, c.s.w.now() + c.s.delay})
		h.buffered += k
		h.mu.Unlock()
		signal(h.readable)
		b = b[k:]
		total += k
	}
	return total, nil
}

// Close implements net.Conn: the other end reads what was written, then
// EOF; its writes fail with EPIPE from now on.
func (c *Conn) Close() error {
	c.once.Do(func() {
		c.isClosed.Store(true)
		close(c.done)
		c.rd.stop()
		c.wd.stop()
		s := c.s
		out := &s.half[c.end]
		out.mu.Lock()
		if !out.fin {
			out.fin, out.finDue = true, s.w.now()+s.delay
		}
		out.mu.Unlock()
		signal(out.readable)
		in := &s.half[1-c.end]
		in.mu.Lock()
		in.rclosed = true
		in.chunks, in.buffered = nil, 0
		in.mu.Unlock()
		signal(in.writable)
		s.closed(c.end)
		if c.release != nil {
			c.release()
		}
	})
	return nil
}

// LocalAddr implements net.Conn: the host's own address and port.
func (c *Conn) LocalAddr() net.Addr { return net.TCPAddrFromAddrPort(c.local) }

// RemoteAddr implements net.Conn: at the listener's end, the dialler's
// address as the NATs on the way translated it.
func (c *Conn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.remote) }

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	c.rd.set(t)
	c.wd.set(t)
	return nil
}

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error { c.rd.set(t); return nil }

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error { c.wd.set(t); return nil }

// Listener accepts streams on a host's TCP port; it implements
// net.Listener.
type Listener struct {
	h    *Host
	addr netip.AddrPort
	ch   chan *Conn // the accept queue (backlog)
	done chan struct{}

	mu     sync.Mutex // guards closed, and sending on ch
	closed bool
}

// listenBacklog is the accept queue's length (Linux's somaxconn is
// 4096; tests need far fewer).
const listenBacklog = 128

// Listen listens for streams on address (":port", "0.0.0.0:port" or the
// host's own "ip:port"; port 0 picks one), like net.Listen.
func (h *Host) Listen(network, address string) (net.Listener, error) {
	oe := &net.OpError{Op: "listen", Net: network}
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		oe.Err = net.UnknownNetworkError(network)
		return nil, oe
	}
	host, portStr, err := net.SplitHostPort(address)
	var port uint64
	if err == nil {
		_, err = fmt.Sscan(portStr, &port)
	}
	if err != nil || port > 65535 {
		oe.Err = &net.AddrError{Err: "bad address", Addr: address}
		return nil, oe
	}
	if host != "" {
		a, err := netip.ParseAddr(host)
		if err != nil || !(a.IsUnspecified() || a.Unmap() == h.addr) {
			oe.Err = &net.AddrError{Err: "not an address of " + h.name, Addr: address}
			return nil, oe
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		oe.Err = errHostClosed
		return nil, oe
	}
	p := uint16(port)
	if p == 0 {
		var ok bool
		p, ok = ephemeral(&h.nextTCP, func(p uint16) bool {
			_, a := h.tcp[p]
			_, b := h.listeners[p]
			return a || b
		})
		if !ok {
			oe.Err = fmt.Errorf("vnet: %s: no free TCP port", h.name)
			return nil, oe
		}
	} else if _, used := h.listeners[p]; used {
		oe.Err = syscall.EADDRINUSE
		return nil, oe
	}
	l := &Listener{h: h, addr: netip.AddrPortFrom(h.addr, p), ch: make(chan *Conn, listenBacklog), done: make(chan struct{})}
	if h.listeners == nil {
		h.listeners = make(map[uint16]*Listener)
	}
	h.listeners[p] = l
	return l, nil
}

func (l *Listener) push(c *Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	select {
	case l.ch <- c:
		return true
	default:
		return false
	}
}

// Accept implements net.Listener.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
	}
}

// Close implements net.Listener; connections not yet accepted are reset.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.done)
	l.mu.Unlock()
	l.h.mu.Lock()
	if l.h.listeners[l.addr.Port()] == l {
		delete(l.h.listeners, l.addr.Port())
	}
	l.h.mu.Unlock()
	for {
		select {
		case c := <-l.ch:
			c.s.reset("listener closed")
		default:
			return nil
		}
	}
}

// Addr implements net.Listener.
func (l *Listener) Addr() net.Addr { return net.TCPAddrFromAddrPort(l.addr) }
