package names

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/dns/dnsmessage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func serve(t *testing.T, cfg ServerConfig) *Server {
	t.Helper()
	if !cfg.Addr.IsValid() {
		cfg.Addr = netip.MustParseAddrPort("[::1]:0")
	}
	if cfg.Names == nil {
		cfg.Names = testNames
	}
	s, err := Serve(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// resolverFor is Go's own stub resolver, pointed at s over tcp or udp.
func resolverFor(s *Server, network string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, s.Addr().String())
	}}
}

// A real stub resolver, over real sockets, both transports.
func TestServerAnswersAStubResolver(t *testing.T) {
	s := serve(t, ServerConfig{})
	for _, network := range []string{"udp", "tcp"} {
		r := resolverFor(s, network)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		addrs, err := r.LookupNetIP(ctx, "ip", "Web1.tomoe")
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", network, err)
		}
		slices.SortFunc(addrs, netip.Addr.Compare)
		if want := []netip.Addr{web1v4, web1v6}; !slices.Equal(addrs, want) {
			t.Errorf("%s: web1.tomoe is %v, want %v", network, addrs, want)
		}
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		_, err = r.LookupNetIP(ctx, "ip", "nope.tomoe")
		cancel()
		var dnsErr *net.DNSError
		if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
			t.Errorf("%s: nope.tomoe: %v, want not found", network, err)
		}
	}
}

// exchangeUDP sends one datagram and waits for the answer.
func exchangeUDP(t *testing.T, s *Server, msg []byte, wait time.Duration) ([]byte, bool) {
	t.Helper()
	c, err := net.Dial("udp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 70000)
	n, err := c.Read(buf)
	if err != nil {
		return nil, false
	}
	return buf[:n], true
}

// Garbage gets no answer and does not stop the server; a refused name is
// refused over the wire.
func TestServerUDP(t *testing.T) {
	s := serve(t, ServerConfig{})
	if resp, ok := exchangeUDP(t, s, []byte("hello"), 300*time.Millisecond); ok {
		t.Fatalf("answered garbage: %x", resp)
	}
	resp, ok := exchangeUDP(t, s, query(t, "example.com.", dnsmessage.TypeA, queryOpts{}), 5*time.Second)
	if !ok {
		t.Fatal("no answer for example.com")
	}
	if m := parse(t, resp); m.Header.RCode != dnsmessage.RCodeRefused {
		t.Fatalf("example.com: %v, want REFUSED", m.Header.RCode)
	}
}

func dialTCP(t *testing.T, s *Server) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func exchangeTCP(c net.Conn, msg []byte) ([]byte, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...)); err != nil {
		return nil, err
	}
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return nil, err
	}
	resp := make([]byte, binary.BigEndian.Uint16(l[:]))
	_, err := io.ReadFull(c, resp)
	return resp, err
}

// closed reports whether the server closed c (within d).
func closed(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	return err == io.EOF
}

// TCP connections are bounded in number, idle time and lifetime.
func TestServerTCPLimits(t *testing.T) {
	s := serve(t, ServerConfig{MaxConns: 2, IdleTimeout: 300 * time.Millisecond, MaxLifetime: time.Second})
	q := query(t, "web1.tomoe.", dnsmessage.TypeAAAA, queryOpts{})

	a, b := dialTCP(t, s), dialTCP(t, s)
	for _, c := range []net.Conn{a, b} {
		if _, err := exchangeTCP(c, q); err != nil {
			t.Fatal(err)
		}
	}
	// A third is closed at once while two are open.
	if c := dialTCP(t, s); !closed(c, 2*time.Second) {
		t.Fatal("a third connection was served while MaxConns = 2 were open")
	}
	// Idle ones are closed after IdleTimeout, freeing their slots.
	start := time.Now()
	if !closed(a, 5*time.Second) || !closed(b, 5*time.Second) {
		t.Fatal("idle connections were not closed")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("idle connections closed after %v", d)
	}
	// A busy one is closed after MaxLifetime.
	c := dialTCP(t, s)
	start = time.Now()
	for {
		if _, err := exchangeTCP(c, q); err != nil {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("a busy connection outlived MaxLifetime = 1s by far")
		}
		time.Sleep(50 * time.Millisecond) // pacing the client, not waiting for a condition
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("a busy connection was closed after %v, before MaxLifetime", d)
	}
	// A message that does not parse as a query ends the connection.
	c = dialTCP(t, s)
	if _, err := exchangeTCP(c, []byte("x")); err == nil {
		t.Fatal("a garbage message got an answer over TCP")
	}
}

// Close ends open connections and the goroutines (goleak checks).
func TestServerCloseEndsConnections(t *testing.T) {
	s, err := Serve(ServerConfig{Addr: netip.MustParseAddrPort("[::1]:0"), Names: testNames})
	if err != nil {
		t.Fatal(err)
	}
	c := dialTCP(t, s)
	if _, err := exchangeTCP(c, query(t, "web1.tomoe.", dnsmessage.TypeAAAA, queryOpts{})); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if !closed(c, 2*time.Second) {
		t.Fatal("connection open after Close")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
