package services

import (
	"container/list"
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
// ends after udpIdle without traffic either way, or when it is evicted to
// make room for a new one (udpTable.victimLocked says which).

var datagramBufs = sync.Pool{New: func() any {
	b := make([]byte, maxDatagram)
	return &b
}}

// evictScan bounds how many sessions one new client makes the table look
// at when it is full (see victimLocked).
const evictScan = 8

// udpSession is one overlay client address:port of a UDP service.
type udpSession struct {
	key    netip.AddrPort
	client net.Addr     // as ReadFrom returned it, for WriteTo
	conn   *net.UDPConn // connected to the target
	last   atomic.Int64 // UnixNano of the last datagram either way

	// all and own are the session's places in udpTable.lru and in its
	// client's list; guarded by udpTable.mu, nil once it left the table.
	all, own *list.Element
}

func (s *udpSession) touch() { s.last.Store(time.Now().UnixNano()) }

func (s *udpSession) quietFor(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, s.last.Load()))
}

// udpTable holds one UDP service's sessions, bounded by max in all and
// by perClient for each client (clientOf the overlay source address, which
// WireGuard authenticates: one node, or all the devices behind one site
// prefix or in one IPv6 /64 of an accepted route).
//
// The lists are in order of the clients' datagrams, most recent first;
// replies from the target update only the session's last (they are read on
// the sessions' own goroutines, which do not take mu per datagram), so a
// session at the back may still be busy, and victimLocked checks last
// before evicting it.
type udpTable struct {
	max, perClient  int
	idle, evictIdle time.Duration

	mu       sync.Mutex // guards sessions, lru, clients and the sessions' elements
	sessions map[netip.AddrPort]*udpSession
	lru      *list.List                // of *udpSession
	clients  map[netip.Addr]*list.List // of *udpSession, per client address
}

func newUDPTable(max, perClient int, idle, evictIdle time.Duration) *udpTable {
	return &udpTable{
		max: max, perClient: perClient, idle: idle, evictIdle: evictIdle,
		sessions: make(map[netip.AddrPort]*udpSession),
		lru:      list.New(),
		clients:  make(map[netip.Addr]*list.List),
	}
}

// victimLocked decides whether a new session of client may start, and
// which session, if any, must end to make room for it. It reports false
// when the table is full of sessions active within evictIdle.
//
// A client competes with itself first: once it holds perClient sessions,
// its own least recently used one makes room, busy or not, so a client
// that floods the service from new source ports recycles its own sessions
// and cannot take more than its share from others. Otherwise a full table
// evicts the least recently used session of anyone, but only one quiet for
// evictIdle: a finished exchange waiting for its idle timeout, not a live
// flow.
func (u *udpTable) victimLocked(client netip.Addr, now time.Time) (*udpSession, bool) {
	if own := u.clients[client]; own != nil && own.Len() >= u.perClient {
		return own.Back().Value.(*udpSession), true
	}
	if len(u.sessions) < u.max {
		return nil, true
	}
	e := u.lru.Back()
	for i := 0; e != nil && i < evictScan && i < u.lru.Len(); i++ {
		s := e.Value.(*udpSession)
		prev := e.Prev()
		if s.quietFor(now) >= u.evictIdle {
			return s, true
		}
		// Kept busy by the target's replies: its place was stale.
		u.lru.MoveToFront(e)
		e = prev
	}
	return nil, false
}

func (u *udpTable) insertLocked(s *udpSession) {
	u.sessions[s.key] = s
	s.all = u.lru.PushFront(s)
	own := u.clients[clientOf(s.key.Addr())]
	if own == nil {
		own = list.New()
		u.clients[clientOf(s.key.Addr())] = own
	}
	s.own = own.PushFront(s)
}

// usedLocked moves s to the front: its client just sent a datagram.
func (u *udpTable) usedLocked(s *udpSession) {
	u.lru.MoveToFront(s.all)
	u.clients[clientOf(s.key.Addr())].MoveToFront(s.own)
}

// removeLocked takes s out of the table; it reports false if s had left
// it already.
func (u *udpTable) removeLocked(s *udpSession) bool {
	if s.all == nil {
		return false
	}
	delete(u.sessions, s.key)
	u.lru.Remove(s.all)
	own := u.clients[clientOf(s.key.Addr())]
	own.Remove(s.own)
	if own.Len() == 0 {
		delete(u.clients, clientOf(s.key.Addr()))
	}
	s.all, s.own = nil, nil
	return true
}

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
	u := x.udp
	u.mu.Lock()
	s := u.sessions[key]
	if s != nil {
		// Under mu, so that an idle check in sessionLoop sees it.
		s.touch()
		u.usedLocked(s)
	} else {
		s = x.startSessionLocked(t, pc, key, addr)
	}
	u.mu.Unlock()
	if s == nil {
		return
	}
	if n, err := s.conn.Write(p); err == nil {
		x.stats.in.Add(uint64(n))
	}
}

// startSessionLocked opens a session for key, evicting another if the
// table says so; it returns nil if the datagram is to be dropped.
func (x *exposed) startSessionLocked(t *tracker, pc net.PacketConn, key netip.AddrPort, addr net.Addr) *udpSession {
	u := x.udp
	victim, ok := u.victimLocked(clientOf(key.Addr()), time.Now())
	if !ok {
		x.stats.dropped.Add(1)
		if x.limit.allow("full") {
			x.log.Info("exposed service: every session is in use; dropping a new client", "client", key.String(), "limit", u.max)
		}
		return nil
	}
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(x.target))
	if err != nil {
		x.stats.dropped.Add(1)
		if x.limit.allow("dial") {
			x.log.Info("exposed service: cannot reach target", "client", key.String(), "err", err)
		}
		return nil
	}
	if !t.add(conn) {
		return nil
	}
	s := &udpSession{key: key, client: addr, conn: conn}
	s.touch()
	// sessionLoop takes mu before it touches the table, so it finds s
	// inserted.
	if !t.spawn(func() { x.sessionLoop(t, pc, s) }) {
		t.remove(conn)
		conn.Close()
		return nil
	}
	if victim != nil {
		u.removeLocked(victim)
		// Its sessionLoop sees the socket closed and ends.
		victim.conn.Close()
		x.stats.evicted.Add(1)
		if x.limit.allow("evict") {
			x.log.Info("exposed service: session table full; evicted the least recently used session", "client", key.String(), "evicted", victim.key.String(), "limit", u.max, "per_client", u.perClient)
		}
	}
	u.insertLocked(s)
	x.stats.total.Add(1)
	x.stats.active.Add(1)
	return s
}

// sessionLoop carries the target's replies back to the session's client
// until the session idles out, is evicted, or its socket fails or is
// closed.
func (x *exposed) sessionLoop(t *tracker, pc net.PacketConn, s *udpSession) {
	u := x.udp
	defer func() {
		u.mu.Lock()
		u.removeLocked(s)
		u.mu.Unlock()
		t.remove(s.conn)
		s.conn.Close()
		x.stats.active.Add(^uint64(0))
	}()
	bp := datagramBufs.Get().(*[]byte)
	defer datagramBufs.Put(bp)
	buf := *bp
	for {
		deadline := time.Unix(0, s.last.Load()).Add(u.idle)
		if !time.Now().Before(deadline) {
			u.mu.Lock()
			idle := s.quietFor(time.Now()) >= u.idle
			if idle {
				u.removeLocked(s)
			}
			u.mu.Unlock()
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

// clientOf is what perClient counts a source address under: an IPv4
// address, or an IPv6 address's /64. A node's own address is one client;
// a peer with a site prefix (a /64 of devices behind it) is one client
// too, not 2^64 of them. (ratelimit.Source does the same; services
// imports no other internal package.)
func clientOf(a netip.Addr) netip.Addr {
	if !a.Is6() {
		return a
	}
	p, _ := a.Prefix(64)
	return p.Addr()
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
