package vnet

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// socket is a bound UDP port: the queue of datagrams that arrived for it.
// Binds and UDPConns are views of one.
type socket struct {
	h     *Host
	port  uint16
	limit int

	isClosed atomic.Bool   // lets senders fail without the lock
	notify   chan struct{} // cap 1: something arrived, or the socket closed
	done     chan struct{} // closed by close

	mu     sync.Mutex // guards q and closed
	closed bool
	q      packetQueue
}

func newSocket(h *Host, port uint16) *socket {
	return &socket{
		h:      h,
		port:   port,
		limit:  h.w.cfg.SocketQueue,
		notify: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
}

func (s *socket) addr() netip.AddrPort { return netip.AddrPortFrom(s.h.addr, s.port) }

// deliver queues p for the reader, or drops it if the queue is full.
func (s *socket) deliver(p *packet) {
	w := s.h.w
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		w.drop(p, &w.stats.noSocket)
		return
	}
	if !s.q.push(p, s.limit) {
		s.mu.Unlock()
		w.drop(p, &w.stats.socketFull)
		return
	}
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// recv waits until a datagram is queued, then takes up to len(out) of
// them. It fails with net.ErrClosed once the socket is closed, and with
// os.ErrDeadlineExceeded when deadline is closed first.
func (s *socket) recv(out []*packet, deadline <-chan struct{}) (int, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return 0, net.ErrClosed
		}
		n := 0
		for n < len(out) && !s.q.empty() {
			out[n] = s.q.pop()
			n++
		}
		more := !s.q.empty()
		s.mu.Unlock()
		if n > 0 {
			if more { // another reader may be waiting for the rest
				select {
				case s.notify <- struct{}{}:
				default:
				}
			}
			return n, nil
		}
		select {
		case <-s.notify:
		case <-s.done:
		case <-deadline:
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// send sends b from the socket to dst.
func (s *socket) send(dst netip.AddrPort, b []byte) error { return s.sendTTL(dst, b, DefaultTTL) }

// sendTTL sends b from the socket to dst with the TTL ttl.
func (s *socket) sendTTL(dst netip.AddrPort, b []byte, ttl uint8) error {
	if s.isClosed.Load() {
		return net.ErrClosed
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if !dst.IsValid() || dst.Port() == 0 {
		return syscall.EINVAL
	}
	if ttl == 0 {
		return syscall.EINVAL
	}
	p := newPacket(UDP, s.addr(), dst, b)
	if p == nil {
		return syscall.EMSGSIZE
	}
	p.ttl = ttl
	s.h.output(p)
	return nil
}

func (s *socket) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.isClosed.Store(true)
	s.q.drain()
	s.mu.Unlock()
	close(s.done)
	s.h.unbindUDP(s)
}

// UDPConn is a UDP socket on a Host; it implements net.PacketConn.
type UDPConn struct {
	s      *socket
	rd, wd deadline
	rmu    sync.Mutex // serialises reads: rbuf is theirs
	rbuf   [1]*packet
}

// ListenUDP binds a UDP socket to port on the host (an ephemeral port if
// 0).
func (h *Host) ListenUDP(port uint16) (*UDPConn, error) {
	s, err := h.bindUDP(port)
	if err != nil {
		return nil, err
	}
	return &UDPConn{s: s}, nil
}

// ReadFromUDPAddrPort reads one datagram; what does not fit in b is lost,
// as with a real UDP socket.
func (c *UDPConn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if _, err := c.s.recv(c.rbuf[:], c.rd.wait()); err != nil {
		return 0, netip.AddrPort{}, c.opError("read", netip.AddrPort{}, err)
	}
	p := c.rbuf[0]
	c.rbuf[0] = nil
	n, from := copy(b, p.payload()), p.src
	p.release()
	return n, from, nil
}

// ReadFrom implements net.PacketConn.
func (c *UDPConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.ReadFromUDPAddrPort(b)
	if err != nil {
		return 0, nil, err
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

// WriteToUDPAddrPort sends b to dst.
func (c *UDPConn) WriteToUDPAddrPort(b []byte, dst netip.AddrPort) (int, error) {
	if c.wd.expired() {
		return 0, c.opError("write", dst, os.ErrDeadlineExceeded)
	}
	if err := c.s.send(dst, b); err != nil {
		return 0, c.opError("write", dst, err)
	}
	return len(b), nil
}

// WriteTo implements net.PacketConn.
func (c *UDPConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, c.opError("write", netip.AddrPort{}, syscall.EINVAL)
	}
	return c.WriteToUDPAddrPort(b, ua.AddrPort())
}

// Close implements net.PacketConn.
func (c *UDPConn) Close() error {
	c.s.close()
	c.rd.stop()
	c.wd.stop()
	return nil
}

// LocalAddr implements net.PacketConn.
func (c *UDPConn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(c.s.addr()) }

// LocalAddrPort returns the socket's address.
func (c *UDPConn) LocalAddrPort() netip.AddrPort { return c.s.addr() }

// SetDeadline implements net.PacketConn.
func (c *UDPConn) SetDeadline(t time.Time) error {
	c.rd.set(t)
	c.wd.set(t)
	return nil
}

// SetReadDeadline implements net.PacketConn.
func (c *UDPConn) SetReadDeadline(t time.Time) error { c.rd.set(t); return nil }

// SetWriteDeadline implements net.PacketConn. Writes never block, so it
// only makes writes after t fail.
func (c *UDPConn) SetWriteDeadline(t time.Time) error { c.wd.set(t); return nil }

func (c *UDPConn) opError(op string, addr netip.AddrPort, err error) error {
	oe := &net.OpError{Op: op, Net: "udp", Source: c.LocalAddr(), Err: err}
	if addr.IsValid() {
		oe.Addr = net.UDPAddrFromAddrPort(addr)
	}
	return oe
}

// deadline is a net.Conn-style deadline: a channel closed when it passes,
// kept in real time. The zero value has no deadline; it costs nothing
// until set.
type deadline struct {
	mu    sync.Mutex // guards the fields below
	timer *time.Timer
	c     chan struct{} // closed once the deadline has passed
}

// set moves the deadline to t (none if t is zero).
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	if d.c == nil || isClosed(d.c) {
		d.c = make(chan struct{})
	}
	if t.IsZero() {
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		close(d.c)
		return
	}
	c := d.c
	d.timer = time.AfterFunc(wait, func() {
		d.mu.Lock()
		if d.c == c && !isClosed(c) {
			close(c)
		}
		d.mu.Unlock()
	})
}

// wait returns a channel closed when the deadline passes (nil, which
// blocks forever, if none was ever set).
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.c
}

func (d *deadline) expired() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.c != nil && isClosed(d.c)
}

func (d *deadline) stop() {
	d.mu.Lock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	d.mu.Unlock()
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
