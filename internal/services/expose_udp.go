package services

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// UDP exposure: one goroutine reads the overlay PacketConn and hands each
// datagram to its client's session; each session is a connected UDP socket
// to the target with one goroutine reading the target's replies and writing
// them back with WriteTo. No goroutine is started per datagram. A session
// ends after udpIdle without traffic either way; beyond maxSessions, new
// clients' datagrams are dropped.

var datagramBufs = sync.Pool{New: func() any {
	b := make([]byte, maxDatagram)
	return &b
}}

// udpSession is one overlay client of a UDP service.
type udpSession struct {
	client net.Addr     // as ReadFrom returned it, for WriteTo
	conn   *net.UDPConn // connected to the target
	last   atomic.Int64 // UnixNano of the last datagram either way
}

func (s *udpSession) touch() { s.last.Store(time.Now().UnixNano()) }

// serveUDP runs the service until ctx is done, then closes pc and every
// session and waits for their goroutines.
func (x *exposed) serveUDP(ctx context.Context, pc net.PacketConn) {
	t := newTracker()
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer func() {
		stop()
		pc.Close()
		t.shutdown()
	}()
	bp := datagramBufs.Get().(*[]byte)
	defer datagramBufs.Put(bp)
	buf := *bp
	var backoff time.Duration
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errIsClosed(err) {
				x.log.Warn("exposed service stopped: overlay socket closed", "err", err)
				return
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			if x.limit.allow("read") {
				x.log.Warn("exposed service: read failed; retrying", "err", err)
			}
			select {
			case <-time.After(backoff):
				continue
			case <-ctx.Done():
				return
			}
		}
		backoff = 0
		x.fromClient(t, pc, buf[:n], addr)
	}
}

// fromClient passes one datagram from addr to the target through addr's
// session, starting the session if needed.
func (x *exposed) fromClient(t *tracker, pc net.PacketConn, p []byte, addr net.Addr) {
	key, ok := clientKey(addr)
	if !ok {
		x.stats.dropped.Add(1)
		return
	}
	x.mu.Lock()
	s := x.sessions[key]
	if s == nil {
		if len(x.sessions) >= x.maxSessions {
			x.mu.Unlock()
			x.stats.dropped.Add(1)
			if x.limit.allow("full") {
				x.log.Info("exposed service: session limit reached; dropping new client", "client", key.String(), "limit", x.maxSessions)
			}
			return
		}
		conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(x.target))
		if err != nil {
			x.mu.Unlock()
			x.stats.dropped.Add(1)
			if x.limit.allow("dial") {
				x.log.Info("exposed service: cannot reach target", "client", key.String(), "err", err)
			}
			return
		}
		if !t.add(conn) {
			x.mu.Unlock()
			return
		}
		s = &udpSession{client: addr, conn: conn}
		s.touch()
		if !t.spawn(func() { x.sessionLoop(t, pc, key, s) }) {
			x.mu.Unlock()
			t.remove(conn)
			conn.Close()
			return
		}
		x.sessions[key] = s
		x.stats.total.Add(1)
		x.stats.active.Add(1)
	} else {
		// Under mu, so that an idle check in sessionLoop sees it.
		s.touch()
	}
	x.mu.Unlock()
	if n, err := s.conn.Write(p); err == nil {
		x.stats.in.Add(uint64(n))
	}
}

// sessionLoop carries the target's replies back to the session's client
// until the session idles out or its socket fails or is closed.
func (x *exposed) sessionLoop(t *tracker, pc net.PacketConn, key netip.AddrPort, s *udpSession) {
	defer func() {
		x.mu.Lock()
		if x.sessions[key] == s {
			delete(x.sessions, key)
		}
		x.mu.Unlock()
		t.remove(s.conn)
		s.conn.Close()
		x.stats.active.Add(^uint64(0))
	}()
	bp := datagramBufs.Get().(*[]byte)
	defer datagramBufs.Put(bp)
	buf := *bp
	for {
		deadline := time.Unix(0, s.last.Load()).Add(x.idle)
		if !time.Now().Before(deadline) {
			x.mu.Lock()
			idle := !time.Now().Before(time.Unix(0, s.last.Load()).Add(x.idle))
			if idle {
				delete(x.sessions, key)
			}
			x.mu.Unlock()
			if idle {
				return
			}
			continue
		}
		s.conn.SetReadDeadline(deadline)
		n, err := s.conn.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// An ICMP port unreachable from the target: it is not
			// listening now, but may be on the next datagram.
			if errors.Is(err, syscall.ECONNREFUSED) {
				continue
			}
			return
		}
		s.touch()
		if _, err := pc.WriteTo(buf[:n], s.client); err != nil {
			if errIsClosed(err) {
				return
			}
			continue
		}
		x.stats.out.Add(uint64(n))
	}
}

// clientKey is a UDP client's address as a map key.
func clientKey(addr net.Addr) (netip.AddrPort, bool) {
	if ua, ok := addr.(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ap.IsValid()
	}
	if addr == nil {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(addr.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), err == nil
}
