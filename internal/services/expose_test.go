package services

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/testnet"
)

// loopbackListens is a ListenFunc that opens every "overlay" listener on
// 127.0.0.1:0 and remembers where.
type loopbackListens struct {
	mu      sync.Mutex // guards addrs and closers
	addrs   map[serviceKey]string
	closers map[serviceKey]io.Closer
}

func (l *loopbackListens) listen(proto string, port uint16) (io.Closer, error) {
	var c io.Closer
	var addr net.Addr
	switch proto {
	case "tcp":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		c, addr = ln, ln.Addr()
	case "udp":
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		c, addr = pc, pc.LocalAddr()
	default:
		return nil, fmt.Errorf("test listen: proto %q", proto)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.addrs == nil {
		l.addrs = make(map[serviceKey]string)
		l.closers = make(map[serviceKey]io.Closer)
	}
	l.addrs[serviceKey{proto, port}] = addr.String()
	l.closers[serviceKey{proto, port}] = c
	return c, nil
}

func (l *loopbackListens) addr(proto string, port uint16) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addrs[serviceKey{proto, port}]
}

func newTestExposer(t *testing.T) (*Exposer, *loopbackListens) {
	t.Helper()
	var ll loopbackListens
	e := NewExposer(ll.listen, testLog(t))
	t.Cleanup(e.Close)
	return e, &ll
}

// stats returns the listed counters of proto/port.
func stats(t *testing.T, e *Exposer, proto string, port uint16) ServiceStats {
	t.Helper()
	for _, s := range e.List() {
		if s.Proto == proto && s.Port == port {
			return s.Stats
		}
	}
	t.Fatalf("%s/%d not listed", proto, port)
	return ServiceStats{}
}

func TestExposeTCP(t *testing.T) {
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	e, ll := newTestExposer(t)
	if err := e.Add(Service{Proto: "tcp", Port: 80, Target: echo.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", ll.addr("tcp", 80))
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, "hello")
	// The echo can come back before the copy towards the target counts
	// its bytes: wait for the counters, not for the reply.
	testnet.WaitFor(t, 5*time.Second, "1 connection, 5 bytes each way", func() bool {
		st := stats(t, e, "tcp", 80)
		return st.Total == 1 && st.Active == 1 && st.BytesIn == 5 && st.BytesOut == 5
	})

	// Remove cuts the live connection and stops listening.
	if err := e.Remove("tcp", 80); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read after Remove = %v, want EOF or reset", err)
	}
	c.Close()
	ll.mu.Lock()
	ln := ll.closers[serviceKey{"tcp", 80}].(net.Listener)
	ll.mu.Unlock()
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("overlay listener Accept after Remove = %v, want net.ErrClosed", err)
	}
	if len(e.List()) != 0 {
		t.Errorf("List after Remove = %v", e.List())
	}
}

func TestExposeTCPHalfCloseAndActive(t *testing.T) {
	srv := drainServer(t)
	e, ll := newTestExposer(t)
	if err := e.Add(Service{Proto: "tcp", Port: 8080, Target: srv.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", ll.addr("tcp", 8080))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "abc")
	c.(*net.TCPConn).CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != "got 3 bytes" {
		t.Fatalf("reply %q, %v", got, err)
	}
	waitFor(t, 5*time.Second, "the connection to end", func() bool { return stats(t, e, "tcp", 8080).Active == 0 })
}

func TestExposeTargetDown(t *testing.T) {
	target := refusingAddr(t).String()
	e, ll := newTestExposer(t)
	if err := e.Add(Service{Proto: "tcp", Port: 1, Target: target}); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", ll.addr("tcp", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read = %v, want the connection closed", err)
	}
}

func TestExposeAddRemoveErrors(t *testing.T) {
	e, _ := newTestExposer(t)
	ok := Service{Proto: "tcp", Port: 22, Target: "127.0.0.1:22"}
	if err := e.Add(ok); err != nil {
		t.Fatal(err)
	}
	if err := e.Add(ok); err == nil || !strings.Contains(err.Error(), "already exposed") {
		t.Errorf("duplicate Add = %v, want already exposed", err)
	}
	// Same port, other protocol, is a different service.
	if err := e.Add(Service{Proto: "udp", Port: 22, Target: "127.0.0.1:22"}); err != nil {
		t.Errorf("udp/22 next to tcp/22: %v", err)
	}
	for _, s := range []Service{
		{Proto: "sctp", Port: 1, Target: "127.0.0.1:1"},
		{Proto: "tcp", Port: 0, Target: "127.0.0.1:1"},
		{Proto: "tcp", Port: 2, Target: "localhost:1"},
		{Proto: "tcp", Port: 3, Target: "192.0.2.1:1"},
	} {
		if err := e.Add(s); err == nil {
			t.Errorf("Add(%+v) = nil, want an error", s)
		}
	}
	if err := e.Remove("tcp", 23); err == nil {
		t.Error("Remove of an unexposed port = nil, want an error")
	}
	got := e.List()
	if len(got) != 2 || got[0].Proto != "tcp" || got[1].Proto != "udp" || got[0].Target != "127.0.0.1:22" {
		t.Errorf("List = %+v", got)
	}

	failing := NewExposer(func(string, uint16) (io.Closer, error) { return nil, errors.New("port in use") }, nil)
	if err := failing.Add(ok); err == nil || !strings.Contains(err.Error(), "port in use") {
		t.Errorf("Add with a failing ListenFunc = %v", err)
	}
	wrong := NewExposer(func(string, uint16) (io.Closer, error) { return net.ListenPacket("udp", "127.0.0.1:0") }, nil)
	if err := wrong.Add(ok); err == nil {
		t.Error("Add with a PacketConn for tcp = nil, want an error")
	}

	e.Close()
	if err := e.Add(Service{Proto: "tcp", Port: 24, Target: "127.0.0.1:24"}); err == nil {
		t.Error("Add after Close = nil, want an error")
	}
	if len(e.List()) != 0 {
		t.Errorf("List after Close = %v", e.List())
	}
}

// udpEcho is a UDP target that answers each datagram with the sender's
// address and the payload.
func udpEcho(t *testing.T) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(fmt.Appendf(nil, "%s|%s", addr, buf[:n]), addr)
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return pc
}

// udpAsk sends msg from c and returns the reply.
func udpAsk(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("udp reply: %v", err)
	}
	return string(buf[:n])
}

func TestExposeUDPSessions(t *testing.T) {
	target := udpEcho(t)
	e, ll := newTestExposer(t)
	if err := e.Add(Service{Proto: "udp", Port: 53, Target: target.LocalAddr().String()}); err != nil {
		t.Fatal(err)
	}
	overlay := ll.addr("udp", 53)
	c1, err := net.Dial("udp", overlay)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	c2, err := net.Dial("udp", overlay)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()

	// Each client gets its own replies, and the target sees one source
	// address per client that stays put across datagrams.
	src := func(reply, msg string) string {
		t.Helper()
		from, payload, _ := strings.Cut(reply, "|")
		if payload != msg {
			t.Fatalf("reply %q, want payload %q", reply, msg)
		}
		return from
	}
	s1 := src(udpAsk(t, c1, "one"), "one")
	s2 := src(udpAsk(t, c2, "two"), "two")
	if s1 == s2 {
		t.Fatalf("both clients reached the target from %s; want separate sessions", s1)
	}
	if again := src(udpAsk(t, c1, "one again"), "one again"); again != s1 {
		t.Fatalf("client 1's session moved from %s to %s", s1, again)
	}
	big := strings.Repeat("b", 60000)
	src(udpAsk(t, c2, big), big)

	st := stats(t, e, "udp", 53)
	if st.Total != 2 || st.Active != 2 || st.BytesIn != uint64(3+3+9+60000) {
		t.Errorf("stats %+v, want 2 sessions and %d bytes in", st, 3+3+9+60000)
	}
	if err := e.Remove("udp", 53); err != nil {
		t.Fatal(err)
	}
}

func TestExposeUDPIdleAndLimit(t *testing.T) {
	target := udpEcho(t)
	e, ll := newTestExposer(t)
	e.udpIdle = 200 * time.Millisecond
	e.maxSessions = 1
	if err := e.Add(Service{Proto: "udp", Port: 5353, Target: target.LocalAddr().String()}); err != nil {
		t.Fatal(err)
	}
	overlay := ll.addr("udp", 5353)
	c1, _ := net.Dial("udp", overlay)
	defer c1.Close()
	c2, _ := net.Dial("udp", overlay)
	defer c2.Close()

	udpAsk(t, c1, "first")
	// The limit is one session: c2 is dropped while c1's session lives.
	c2.Write([]byte("dropped"))
	waitFor(t, 5*time.Second, "a dropped datagram", func() bool { return stats(t, e, "udp", 5353).Dropped == 1 })
	// c1's session idles out, after which c2 gets one.
	waitFor(t, 5*time.Second, "the session to idle out", func() bool { return stats(t, e, "udp", 5353).Active == 0 })
	udpAsk(t, c2, "second")
	if st := stats(t, e, "udp", 5353); st.Total != 2 || st.Active != 1 {
		t.Errorf("stats %+v, want 2 sessions, 1 active", st)
	}
}

// udpClient dials the overlay address from the loopback address src
// (127.0.0.0/8 is all loopback on Linux), so that tests can play several
// overlay clients, which the session table tells apart by address.
func udpClient(t *testing.T, src, overlay string) *net.UDPConn {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp", overlay)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, raddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// targetSource asks through c and returns the address the target saw the
// datagram come from: one per session.
func targetSource(t *testing.T, c net.Conn, msg string) string {
	t.Helper()
	reply := udpAsk(t, c, msg)
	from, payload, _ := strings.Cut(reply, "|")
	if payload != msg {
		t.Fatalf("reply %q, want payload %q", reply, msg)
	}
	return from
}

// A full table makes room by evicting its least recently used session
// instead of refusing the new client.
func TestExposeUDPEvictsLeastRecentlyUsed(t *testing.T) {
	target := udpEcho(t)
	e, ll := newTestExposer(t)
	e.maxSessions = 2
	e.udpEvictIdle = 0 // any session counts as idle enough to evict
	if err := e.Add(Service{Proto: "udp", Port: 53, Target: target.LocalAddr().String()}); err != nil {
		t.Fatal(err)
	}
	overlay := ll.addr("udp", 53)
	c1 := udpClient(t, "127.0.0.2", overlay)
	c2 := udpClient(t, "127.0.0.3", overlay)
	c3 := udpClient(t, "127.0.0.4", overlay)

	s1 := targetSource(t, c1, "one")
	targetSource(t, c2, "two")
	if again := targetSource(t, c1, "one again"); again != s1 {
		t.Fatalf("c1's session moved from %s to %s", s1, again)
	}
	// Full; c2 is the least recently used, so c3 takes its place.
	targetSource(t, c3, "three")
	if again := targetSource(t, c1, "one more"); again != s1 {
		t.Fatalf("c1's session was evicted (source %s, was %s); c2's should have been", again, s1)
	}
	st := stats(t, e, "udp", 53)
	if st.Total != 3 || st.Evicted != 1 || st.Dropped != 0 {
		t.Errorf("stats %+v, want 3 sessions, 1 evicted, none dropped", st)
	}
	waitFor(t, 5*time.Second, "the evicted session's goroutine to end", func() bool { return stats(t, e, "udp", 53).Active == 2 })
}

// Sessions that carried traffic within udpEvictIdle are not evicted for a
// newcomer: it is dropped instead.
func TestExposeUDPKeepsActiveSessions(t *testing.T) {
	target := udpEcho(t)
	e, ll := newTestExposer(t)
	e.maxSessions = 2
	e.udpEvictIdle = time.Hour
	if err := e.Add(Service{Proto: "udp", Port: 53, Target: target.LocalAddr().String()}); err != nil {
		t.Fatal(err)
	}
	overlay := ll.addr("udp", 53)
	c1 := udpClient(t, "127.0.0.2", overlay)
	c2 := udpClient(t, "127.0.0.3", overlay)
	c3 := udpClient(t, "127.0.0.4", overlay)
	s1, s2 := targetSource(t, c1, "one"), targetSource(t, c2, "two")
	c3.Write([]byte("no room"))
	waitFor(t, 5*time.Second, "c3's datagram to be dropped", func() bool { return stats(t, e, "udp", 53).Dropped == 1 })
	if targetSource(t, c1, "one") != s1 || targetSource(t, c2, "two") != s2 {
		t.Fatal("an active session was evicted for a newcomer")
	}
	if st := stats(t, e, "udp", 53); st.Evicted != 0 || st.Active != 2 {
		t.Errorf("stats %+v, want nothing evicted, 2 active", st)
	}
}

// One client opening session after session (new source ports) recycles
// its own sessions once it holds its share, and never takes the sessions
// of others.
func TestExposeUDPFloodFromOneClient(t *testing.T) {
	target := udpEcho(t)
	e, ll := newTestExposer(t)
	e.maxSessions = 8
	e.maxPerClient = 4
	e.udpEvictIdle = time.Hour // every session counts as active
	if err := e.Add(Service{Proto: "udp", Port: 53, Target: target.LocalAddr().String()}); err != nil {
		t.Fatal(err)
	}
	overlay := ll.addr("udp", 53)
	var others []*net.UDPConn
	var sources []string
	for i := range 4 {
		c := udpClient(t, fmt.Sprintf("127.0.0.%d", 2+i), overlay)
		others = append(others, c)
		sources = append(sources, targetSource(t, c, "mine"))
	}
	for i := range 40 {
		c := udpClient(t, "127.0.0.99", overlay)
		// Every new port is served: the flood evicts the flooder's own
		// least recently used session once it holds its share.
		targetSource(t, c, fmt.Sprintf("flood %d", i))
		c.Close()
	}
	for i, c := range others {
		if got := targetSource(t, c, "still mine"); got != sources[i] {
			t.Errorf("client %d's session was evicted by another client's flood (source %s, was %s)", i, got, sources[i])
		}
	}
	st := stats(t, e, "udp", 53)
	if st.Total != 44 || st.Evicted != 36 || st.Dropped != 0 {
		t.Errorf("stats %+v, want 44 sessions, 36 evicted (the flooder's own), none dropped", st)
	}
	waitFor(t, 5*time.Second, "the evicted sessions to end", func() bool { return stats(t, e, "udp", 53).Active == 8 })
}

func TestParseTarget(t *testing.T) {
	good := map[string]string{
		"127.0.0.1:8080":          "127.0.0.1:8080",
		"127.1.2.3:1":             "127.1.2.3:1",
		"[::1]:8080":              "[::1]:8080",
		"[::ffff:127.0.0.1]:8080": "127.0.0.1:8080",
	}
	for in, want := range good {
		got, err := ParseTarget(in)
		if err != nil || got.String() != want {
			t.Errorf("ParseTarget(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	bad := map[string]string{
		"localhost:8080":   "host name",
		"db.internal:5432": "host name",
		"127.0.0.1":        "want IP:port",
		"127.0.0.1:0":      "port 0",
		"0.0.0.0:80":       "not a destination",
		"[::]:80":          "not a destination",
		"224.0.0.1:80":     "not a unicast",
		"192.0.2.1:80":     "not an address of this host",
		"[fe80::1%lo]:80":  "zone",
		"":                 "want IP:port",
	}
	for in, want := range bad {
		if _, err := ParseTarget(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseTarget(%q) = %v, want an error containing %q", in, err, want)
		}
	}
	// A non-loopback address of this host is a valid target.
	addrs, _ := net.InterfaceAddrs()
	for _, ia := range addrs {
		n, ok := ia.(*net.IPNet)
		if !ok {
			continue
		}
		a, _ := netip.AddrFromSlice(n.IP)
		a = a.Unmap()
		if a.IsLoopback() || a.IsLinkLocalUnicast() {
			continue
		}
		if _, err := ParseTarget(netip.AddrPortFrom(a, 80).String()); err != nil {
			t.Errorf("local address %s refused: %v", a, err)
		}
		return
	}
	t.Log("no non-loopback local address: local-address case not exercised")
}

// TestUDPTableCountsAClientPerSlash64: the devices behind one site prefix
// (one IPv6 /64) are one client of a UDP service, so a peer with a site
// prefix cannot take more than one client's share by sending from many of
// its 2^64 addresses. (Issue 9 review: the share was per full address.)
func TestUDPTableCountsAClientPerSlash64(t *testing.T) {
	u := newUDPTable(16, 4, time.Minute, time.Hour)
	now := time.Now()
	for i := range 40 {
		key := netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x03, 1, 2, 3, 4, 5, 6, 7, 14: byte(i >> 8), 15: byte(i)}), 53)
		victim, ok := u.victimLocked(clientOf(key.Addr()), now)
		if !ok {
			t.Fatalf("session %d refused", i)
		}
		if victim != nil {
			u.removeLocked(victim)
		}
		s := &udpSession{key: key}
		s.last.Store(now.UnixNano())
		u.insertLocked(s)
	}
	if n := len(u.sessions); n != 4 {
		t.Fatalf("one /64 holds %d sessions, want its share of 4", n)
	}
}
