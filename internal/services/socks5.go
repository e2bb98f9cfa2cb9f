package services

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"
)

// SOCKS5 (RFC 1928) wire constants this server speaks.
const (
	socksVersion      = 0x05
	socksNoAuth       = 0x00
	socksNoAcceptable = 0xFF

	socksConnect      = 0x01
	socksBind         = 0x02
	socksUDPAssociate = 0x03

	socksATYPIPv4   = 0x01
	socksATYPDomain = 0x03
	socksATYPIPv6   = 0x04

	// maxGreetingLen and maxRequestLen bound what the parsers read.
	maxGreetingLen = 2 + 255
	maxRequestLen  = 4 + 1 + 255 + 2
)

// socksRequest is a parsed SOCKS5 request. Exactly one of addr (ATYP 1 and
// 4) and host (ATYP 3, as the client wrote it) is set.
type socksRequest struct {
	cmd  byte
	addr netip.Addr
	host string
	port uint16
}

// target is the request's destination as "host:port", for logs.
func (r socksRequest) target() string {
	if r.addr.IsValid() {
		return netip.AddrPortFrom(r.addr, r.port).String()
	}
	return net.JoinHostPort(stripBrackets(r.host), fmt.Sprint(r.port))
}

// socksError is a malformed greeting or request. If send is set the server
// answers with reply before closing; otherwise (not SOCKS5 at all) it just
// closes.
type socksError struct {
	reply byte
	send  bool
	msg   string
}

func (e *socksError) Error() string { return "socks5: " + e.msg }

// parseGreeting reads a client greeting (VER NMETHODS METHODS) and returns
// the offered methods. It reads at most maxGreetingLen bytes.
func parseGreeting(r io.Reader) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("socks5 greeting: %w", err)
	}
	if hdr[0] != socksVersion {
		return nil, &socksError{msg: fmt.Sprintf("greeting version %d, want 5", hdr[0])}
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return nil, fmt.Errorf("socks5 greeting methods: %w", err)
	}
	return methods, nil
}

// parseRequest reads a request (VER CMD RSV ATYP DST.ADDR DST.PORT). It reads
// at most maxRequestLen bytes and never more than the request, so that bytes
// a client sends early stay in the connection. A domain name must be
// 1..255 printable ASCII characters without spaces.
func parseRequest(r io.Reader) (socksRequest, error) {
	var req socksRequest
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return req, fmt.Errorf("socks5 request: %w", err)
	}
	if hdr[0] != socksVersion {
		return req, &socksError{msg: fmt.Sprintf("request version %d, want 5", hdr[0])}
	}
	req.cmd = hdr[1]
	var buf [255]byte
	switch hdr[3] {
	case socksATYPIPv4:
		if _, err := io.ReadFull(r, buf[:4]); err != nil {
			return req, fmt.Errorf("socks5 request IPv4 address: %w", err)
		}
		req.addr = netip.AddrFrom4([4]byte(buf[:4]))
	case socksATYPIPv6:
		if _, err := io.ReadFull(r, buf[:16]); err != nil {
			return req, fmt.Errorf("socks5 request IPv6 address: %w", err)
		}
		req.addr = netip.AddrFrom16([16]byte(buf[:16]))
	case socksATYPDomain:
		if _, err := io.ReadFull(r, buf[:1]); err != nil {
			return req, fmt.Errorf("socks5 request name length: %w", err)
		}
		n := int(buf[0])
		if n == 0 {
			return req, &socksError{reply: SOCKSHostUnreachable, send: true, msg: "empty host name"}
		}
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return req, fmt.Errorf("socks5 request name: %w", err)
		}
		for _, c := range buf[:n] {
			if c <= ' ' || c >= 0x7f {
				return req, &socksError{reply: SOCKSHostUnreachable, send: true, msg: fmt.Sprintf("host name %q has a byte that is not printable ASCII", buf[:n])}
			}
		}
		req.host = string(buf[:n])
	default:
		return req, &socksError{reply: SOCKSAddressNotSupported, send: true, msg: fmt.Sprintf("address type %d", hdr[3])}
	}
	if _, err := io.ReadFull(r, buf[:2]); err != nil {
		return req, fmt.Errorf("socks5 request port: %w", err)
	}
	req.port = uint16(buf[0])<<8 | uint16(buf[1])
	return req, nil
}

// appendReply appends a SOCKS5 reply with code and bound address bound; an
// invalid bound is sent as 0.0.0.0:0.
func appendReply(b []byte, code byte, bound netip.AddrPort) []byte {
	b = append(b, socksVersion, code, 0x00)
	a := bound.Addr().Unmap()
	switch {
	case a.Is4():
		b = append(b, socksATYPIPv4)
		b = append(b, a.AsSlice()...)
	case a.Is6():
		b = append(b, socksATYPIPv6)
		b = append(b, a.AsSlice()...)
	default:
		b = append(b, socksATYPIPv4, 0, 0, 0, 0)
	}
	return append(b, byte(bound.Port()>>8), byte(bound.Port()))
}

// addrPortOf returns a net.Addr as an AddrPort, or the zero AddrPort.
func addrPortOf(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case nil:
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// ServeSOCKS5 serves SOCKS5 (RFC 1928) on ln until ctx is done, carrying each
// CONNECT to the overlay through dial. It offers only the no-authentication
// method, so ln must admit only trusted local users (ListenLocal). Domain
// names (ATYP 3) are resolved with resolve, IPv6 literals sent as names with
// their brackets stripped. BIND and UDP ASSOCIATE are answered with
// "command not supported". Dial errors become reply codes as described at
// SOCKSReplier. It returns nil once ctx is done, or the listener's error;
// ln is closed either way.
func ServeSOCKS5(ctx context.Context, ln net.Listener, dial Dialer, resolve Resolver, log *slog.Logger) error {
	if dial == nil {
		ln.Close()
		return errors.New("socks5: nil Dialer")
	}
	log = orDiscard(log).With("listener", ln.Addr().String())
	s := &socksServer{dial: dial, resolve: resolve, log: log, limit: newRateLimiter(10 * time.Second)}
	return serve(ctx, ln, log, s.handle)
}

type socksServer struct {
	dial    Dialer
	resolve Resolver
	log     *slog.Logger
	limit   *rateLimiter
}

// handle runs one client's handshake and, on success, its splice.
func (s *socksServer) handle(ctx context.Context, c net.Conn, t *tracker) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	methods, err := parseGreeting(c)
	if err != nil {
		s.log.Debug("socks5 greeting failed", "client", c.RemoteAddr().String(), "err", err)
		return
	}
	if !slices.Contains(methods, socksNoAuth) {
		c.Write([]byte{socksVersion, socksNoAcceptable})
		s.log.Debug("socks5 client offers no acceptable method", "client", c.RemoteAddr().String(), "methods", methods)
		return
	}
	if _, err := c.Write([]byte{socksVersion, socksNoAuth}); err != nil {
		return
	}
	req, err := parseRequest(c)
	if err != nil {
		if se, ok := errors.AsType[*socksError](err); ok && se.send {
			c.Write(appendReply(nil, se.reply, netip.AddrPort{}))
		}
		s.log.Debug("socks5 request failed", "client", c.RemoteAddr().String(), "err", err)
		return
	}
	if req.cmd != socksConnect {
		c.Write(appendReply(nil, SOCKSCommandNotSupported, netip.AddrPort{}))
		s.log.Debug("socks5 command not supported", "client", c.RemoteAddr().String(), "command", req.cmd)
		return
	}
	c.SetDeadline(time.Time{})

	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	var up net.Conn
	if req.addr.IsValid() {
		up, err = connect(dctx, s.dial, nil, req.addr.String(), req.port)
	} else {
		up, err = connect(dctx, s.dial, s.resolve, req.host, req.port)
	}
	cancel()
	if err != nil {
		f := classifyDialError(err)
		c.SetWriteDeadline(time.Now().Add(handshakeTimeout))
		c.Write(appendReply(nil, f.reply, netip.AddrPort{}))
		if s.limit.allow(req.target()) {
			s.log.Info("socks5 connect failed", "client", c.RemoteAddr().String(), "target", req.target(), "reply", f.reply, "err", err)
		}
		return
	}
	if !t.add(up) {
		return
	}
	defer t.remove(up)
	c.SetWriteDeadline(time.Now().Add(handshakeTimeout))
	if _, err := c.Write(appendReply(nil, SOCKSSucceeded, addrPortOf(up.LocalAddr()))); err != nil {
		up.Close()
		return
	}
	c.SetWriteDeadline(time.Time{})
	Splice(c, up)
}
