package services

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"
)

// startSOCKS5 serves SOCKS5 on a loopback port with the OS dialer and
// testResolve, returning its address.
func startSOCKS5(t *testing.T, dial Dialer) string {
	t.Helper()
	ln := listenLoopback(t)
	startServe(t, ln, func(ctx context.Context, ln net.Listener) error {
		return ServeSOCKS5(ctx, ln, dial, testResolve, testLog(t))
	})
	return ln.Addr().String()
}

func TestSOCKS5ConnectWithXNetProxy(t *testing.T) {
	echo4 := echoServer(t, "tcp", "127.0.0.1:0")
	_, port4, _ := net.SplitHostPort(echo4.Addr().String())
	srv := startSOCKS5(t, osDial)

	targets := map[string]string{
		"ipv4":   echo4.Addr().String(),
		"domain": net.JoinHostPort("echo.test", port4),
	}
	if ln6, err := net.Listen("tcp", "[::1]:0"); err == nil {
		ln6.Close()
		targets["ipv6"] = echoServer(t, "tcp", "[::1]:0").Addr().String()
	} else {
		t.Logf("no IPv6 loopback (%v): skipping the IPv6 case", err)
	}
	for name, target := range targets {
		t.Run(name, func(t *testing.T) {
			d, err := proxy.SOCKS5("tcp", srv, nil, proxy.Direct)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := d.(proxy.ContextDialer).DialContext(ctx, "tcp", target)
			if err != nil {
				t.Fatalf("dial %s through SOCKS5: %v", target, err)
			}
			defer c.Close()
			roundTrip(t, c, "hello "+name)
		})
	}
}

// socksClient is a minimal SOCKS5 client that sends raw requests.
type socksClient struct {
	t *testing.T
	c net.Conn
}

// dialSOCKS connects to srv and completes the no-auth greeting.
func dialSOCKS(t *testing.T, srv string) *socksClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", srv, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := c.Write([]byte{5, 1, 0}); err != nil {
		t.Fatal(err)
	}
	var sel [2]byte
	if _, err := io.ReadFull(c, sel[:]); err != nil {
		t.Fatalf("read method selection: %v", err)
	}
	if sel != [2]byte{5, 0} {
		t.Fatalf("method selection = %x, want 0500", sel)
	}
	return &socksClient{t: t, c: c}
}

// domainRequest is a request with ATYP 3.
func domainRequest(cmd byte, host string, port uint16) []byte {
	b := []byte{5, cmd, 0, socksATYPDomain, byte(len(host))}
	b = append(b, host...)
	return append(b, byte(port>>8), byte(port))
}

// addrRequest is a request with ATYP 1 or 4.
func addrRequest(cmd byte, ap netip.AddrPort) []byte {
	b := []byte{5, cmd, 0, socksATYPIPv4}
	if ap.Addr().Is6() {
		b[3] = socksATYPIPv6
	}
	b = append(b, ap.Addr().AsSlice()...)
	return append(b, byte(ap.Port()>>8), byte(ap.Port()))
}

// request sends req and returns the reply code and bound address.
func (s *socksClient) request(req []byte) (byte, netip.AddrPort) {
	s.t.Helper()
	if _, err := s.c.Write(req); err != nil {
		s.t.Fatal(err)
	}
	var hdr [4]byte
	if _, err := io.ReadFull(s.c, hdr[:]); err != nil {
		s.t.Fatalf("read reply: %v", err)
	}
	if hdr[0] != 5 || hdr[2] != 0 {
		s.t.Fatalf("reply header = %x", hdr)
	}
	var addr []byte
	switch hdr[3] {
	case socksATYPIPv4:
		addr = make([]byte, 4)
	case socksATYPIPv6:
		addr = make([]byte, 16)
	default:
		s.t.Fatalf("reply address type %d", hdr[3])
	}
	var port [2]byte
	if _, err := io.ReadFull(s.c, addr); err != nil {
		s.t.Fatal(err)
	}
	if _, err := io.ReadFull(s.c, port[:]); err != nil {
		s.t.Fatal(err)
	}
	a, _ := netip.AddrFromSlice(addr)
	return hdr[1], netip.AddrPortFrom(a, uint16(port[0])<<8|uint16(port[1]))
}

func echoPort(t *testing.T, ln net.Listener) uint16 {
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func TestSOCKS5DomainLiterals(t *testing.T) {
	srv := startSOCKS5(t, osDial)
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	port := echoPort(t, echo)
	hosts := []string{"echo.test", "127.0.0.1", "[127.0.0.1]"}
	if ln6, err := net.Listen("tcp", "[::1]:0"); err == nil {
		ln6.Close()
		// Same port on ::1 is not guaranteed free; use a separate echo.
		echo6 := echoServer(t, "tcp", "[::1]:0")
		for _, h := range []string{"::1", "[::1]"} {
			t.Run(h, func(t *testing.T) {
				s := dialSOCKS(t, srv)
				code, bound := s.request(domainRequest(socksConnect, h, echoPort(t, echo6)))
				if code != SOCKSSucceeded {
					t.Fatalf("reply %#x, want success", code)
				}
				if bound.Addr() != netip.IPv6Loopback() || bound.Port() == 0 {
					t.Errorf("bound address %v, want [::1]:<port>", bound)
				}
				roundTrip(t, s.c, "six")
			})
		}
	}
	for _, h := range hosts {
		t.Run(h, func(t *testing.T) {
			s := dialSOCKS(t, srv)
			code, bound := s.request(domainRequest(socksConnect, h, port))
			if code != SOCKSSucceeded {
				t.Fatalf("reply %#x, want success", code)
			}
			if bound.Addr() != netip.MustParseAddr("127.0.0.1") || bound.Port() == 0 {
				t.Errorf("bound address %v, want 127.0.0.1:<port>", bound)
			}
			roundTrip(t, s.c, "four")
		})
	}
}

// TestSOCKS5EarlyData checks that bytes sent right behind the request (no
// wait for the reply) reach the target.
func TestSOCKS5EarlyData(t *testing.T) {
	srv := startSOCKS5(t, osDial)
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	c, err := net.Dial("tcp", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := append([]byte{5, 1, 0}, addrRequest(socksConnect, echo.Addr().(*net.TCPAddr).AddrPort())...)
	msg = append(msg, "early"...)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2+10+5)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if got[1] != 0 || got[3] != SOCKSSucceeded || string(got[12:]) != "early" {
		t.Fatalf("got %q", got)
	}
}

func TestSOCKS5Failures(t *testing.T) {
	closed := refusingAddr(t)

	srv := startSOCKS5(t, osDial)
	tests := []struct {
		name string
		req  []byte
		want byte
	}{
		{"refused", addrRequest(socksConnect, closed), SOCKSConnectionRefused},
		{"refused by name", domainRequest(socksConnect, "echo.test", closed.Port()), SOCKSConnectionRefused},
		{"unknown host", domainRequest(socksConnect, "nowhere.test", 80), SOCKSHostUnreachable},
		{"bind", addrRequest(socksBind, closed), SOCKSCommandNotSupported},
		{"udp associate", addrRequest(socksUDPAssociate, netip.MustParseAddrPort("0.0.0.0:0")), SOCKSCommandNotSupported},
		{"unknown command", addrRequest(9, closed), SOCKSCommandNotSupported},
		{"address type", []byte{5, 1, 0, 2, 1, 2, 3, 4, 0, 80}, SOCKSAddressNotSupported},
		{"empty name", domainRequest(socksConnect, "", 80), SOCKSHostUnreachable},
		{"control byte in name", domainRequest(socksConnect, "a\nb", 80), SOCKSHostUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := dialSOCKS(t, srv)
			code, _ := s.request(tt.req)
			if code != tt.want {
				t.Fatalf("reply %#x, want %#x", code, tt.want)
			}
			// The server closes after a failure reply.
			if _, err := s.c.Read(make([]byte, 1)); err == nil {
				t.Fatal("connection still open after a failure reply")
			}
		})
	}
}

func TestSOCKS5NoAcceptableMethod(t *testing.T) {
	srv := startSOCKS5(t, osDial)
	c, err := net.Dial("tcp", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte{5, 2, 0x02, 0x80}) // username/password and a private method
	got, _ := io.ReadAll(c)
	if string(got) != "\x05\xff" {
		t.Fatalf("got %x, want 05ff then close", got)
	}
}

func TestSOCKS5Garbage(t *testing.T) {
	srv := startSOCKS5(t, osDial)
	for _, garbage := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"\x04\x01\x00\x50\x7f\x00\x00\x01\x00", // SOCKS4
		"\x05",                                 // truncated greeting, then close
		"\x05\x01\x00\x05\x01\x00\x03\xff",     // truncated name
	} {
		c, err := net.Dial("tcp", srv)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte(garbage))
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("%q: read: %v (want the server to close)", garbage, err)
		}
		if len(got) > 2 {
			t.Fatalf("%q: server answered %x", garbage, got)
		}
	}
	// Still serving.
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	s := dialSOCKS(t, srv)
	if code, _ := s.request(addrRequest(socksConnect, echo.Addr().(*net.TCPAddr).AddrPort())); code != 0 {
		t.Fatalf("reply %#x after garbage", code)
	}
}

// replyErr is a Dialer error that picks its SOCKS5 reply.
type replyErr byte

func (e replyErr) Error() string    { return "policy says " + strconv.Itoa(int(e)) }
func (e replyErr) SOCKSReply() byte { return byte(e) }

func TestSOCKS5ReplyHook(t *testing.T) {
	srv := startSOCKS5(t, func(ctx context.Context, network, address string) (net.Conn, error) {
		return nil, fmt.Errorf("dial %s: %w", address, replyErr(SOCKSNotAllowed))
	})
	s := dialSOCKS(t, srv)
	if code, _ := s.request(domainRequest(socksConnect, "echo.test", 80)); code != SOCKSNotAllowed {
		t.Fatalf("reply %#x, want %#x", code, SOCKSNotAllowed)
	}
}

// TestSOCKS5ShutdownCutsSplice checks that cancelling the server's context
// ends a live proxied connection.
func TestSOCKS5ShutdownCutsSplice(t *testing.T) {
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	ln := listenLoopback(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- ServeSOCKS5(ctx, ln, osDial, nil, testLog(t)) }()
	s := dialSOCKS(t, ln.Addr().String())
	if code, _ := s.request(addrRequest(socksConnect, echo.Addr().(*net.TCPAddr).AddrPort())); code != 0 {
		t.Fatalf("reply %#x", code)
	}
	roundTrip(t, s.c, "x")
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("ServeSOCKS5 = %v, want nil", err)
	}
	s.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read after shutdown = %v, want EOF or reset", err)
	}
}

func TestClassifyDialError(t *testing.T) {
	op := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	tests := []struct {
		name   string
		err    error
		reply  byte
		status int
	}{
		{"refused", op(&osSyscallError{syscall.ECONNREFUSED}), SOCKSConnectionRefused, 502},
		{"net unreachable", op(syscall.ENETUNREACH), SOCKSNetworkUnreachable, 502},
		{"host unreachable", op(syscall.EHOSTUNREACH), SOCKSHostUnreachable, 502},
		{"timeout", context.DeadlineExceeded, SOCKSHostUnreachable, 504},
		{"etimedout", op(syscall.ETIMEDOUT), SOCKSHostUnreachable, 504},
		{"gvisor refused", fmt.Errorf("netstack dial: %w", op(errors.New("connection was refused"))), SOCKSConnectionRefused, 502},
		{"gvisor no route", fmt.Errorf("netstack dial: %w", op(errors.New("no route to host"))), SOCKSHostUnreachable, 502},
		{"gvisor timeout", fmt.Errorf("netstack dial: %w", op(errors.New("operation timed out"))), SOCKSHostUnreachable, 504},
		{"resolve", &resolveError{host: "x", err: errors.New("nope")}, SOCKSHostUnreachable, 502},
		{"hook", fmt.Errorf("x: %w", replyErr(SOCKSNotAllowed)), SOCKSNotAllowed, 502},
		{"hook in resolver", &resolveError{host: "x", err: replyErr(SOCKSNetworkUnreachable)}, SOCKSNetworkUnreachable, 502},
		{"other", errors.New("boom"), SOCKSGeneralFailure, 502},
	}
	for _, tt := range tests {
		f := classifyDialError(tt.err)
		if f.reply != tt.reply || f.status != tt.status || f.cause == "" {
			t.Errorf("%s: got %+v, want reply %#x status %d", tt.name, f, tt.reply, tt.status)
		}
	}
}

// osSyscallError wraps an errno the way os.SyscallError does.
type osSyscallError struct{ err error }

func (e *osSyscallError) Error() string { return "connect: " + e.err.Error() }
func (e *osSyscallError) Unwrap() error { return e.err }

func netipAddrPort(r socksRequest) netip.AddrPort { return netip.AddrPortFrom(r.addr, r.port) }
