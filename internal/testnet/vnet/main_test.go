package vnet

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// must returns v, panicking on err: for building worlds in tests, where
// an error is a bug in the test.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

var (
	internetPrefix = netip.MustParsePrefix("203.0.113.0/24")
	lanPrefix      = netip.MustParsePrefix("10.0.0.0/24")
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// newWorld returns a world closed when the test ends.
func newWorld(t testing.TB, cfg Config) *World {
	t.Helper()
	w := New(cfg)
	t.Cleanup(func() { w.Close() })
	return w
}

// site is a LAN behind a NAT with two hosts, a and b, and an internet
// with three public hosts.
type site struct {
	w          *World
	internet   *Network
	lan        *Network
	nat        *NAT
	a, b       *Host
	s1, s2, s3 *Host
}

// newSite builds a site whose NAT has cfg, public at 203.0.113.100.
func newSite(t testing.TB, w *World, cfg NATConfig) *site {
	t.Helper()
	s := &site{w: w}
	s.internet = must(w.NewNetwork("internet", internetPrefix))
	s.s1 = must(s.internet.AddHost("s1")) // 203.0.113.1
	s.s2 = must(s.internet.AddHost("s2"))
	s.s3 = must(s.internet.AddHost("s3"))
	s.lan = must(w.NewNetwork("lan", lanPrefix))
	if !cfg.Public.IsValid() {
		cfg.Public = netip.MustParseAddr("203.0.113.100")
	}
	s.nat = must(w.NewNAT("nat", s.lan, s.internet, cfg)) // gateway 10.0.0.1
	s.a = must(s.lan.AddHost("a"))                        // 10.0.0.2
	s.b = must(s.lan.AddHost("b"))                        // 10.0.0.3
	return s
}

// udp opens a UDP socket on h, closed when the test ends.
func udp(t testing.TB, h *Host, port uint16) *UDPConn {
	t.Helper()
	c := must(h.ListenUDP(port))
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t testing.TB, c *UDPConn, to netip.AddrPort, msg string) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort([]byte(msg), to); err != nil {
		t.Fatal(err)
	}
}

// poll returns the datagram waiting on c, if there is one. On ideal links
// delivery happens within the sender's call, so no waiting is needed.
func poll(c *UDPConn) (netip.AddrPort, string, bool) {
	c.SetReadDeadline(time.Now())
	defer c.SetReadDeadline(time.Time{})
	var buf [2048]byte
	n, from, err := c.ReadFromUDPAddrPort(buf[:])
	if err != nil {
		return netip.AddrPort{}, "", false
	}
	return from, string(buf[:n]), true
}

// recvWithin waits up to d for a datagram on c.
func recvWithin(c *UDPConn, d time.Duration) (netip.AddrPort, []byte, bool) {
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 2048)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	if err != nil {
		return netip.AddrPort{}, nil, false
	}
	return from, buf[:n], true
}

// observed sends from c to dst's socket and returns the source dst saw.
func observed(t testing.TB, c *UDPConn, dst *UDPConn) netip.AddrPort {
	t.Helper()
	send(t, c, dst.LocalAddrPort(), "hello")
	from, msg, ok := poll(dst)
	if !ok || msg != "hello" {
		t.Fatalf("%v -> %v: nothing arrived", c.LocalAddrPort(), dst.LocalAddrPort())
	}
	return from
}

// reaches reports whether a datagram from c to dst arrives at want.
func reaches(t testing.TB, c *UDPConn, dst netip.AddrPort, want *UDPConn) bool {
	t.Helper()
	send(t, c, dst, "probe")
	_, msg, ok := poll(want)
	return ok && msg == "probe"
}

func equalBytes(a, b []byte) bool { return bytes.Equal(a, b) }
