// Package services owns the node's local service plumbing: loopback and
// Unix-socket listeners that admit only allowed local users, the SOCKS5 and
// HTTP CONNECT proxies and port forwards that carry local programs into the
// overlay, and the exposer that carries overlay clients to local services.
//
// It works the same in kernel and userspace mode because it never touches the
// overlay itself: it only sees the net.Listeners, PacketConns and the Dialer
// and Resolver the node hands it (backed by the gVisor netstack in userspace
// mode and by the OS in kernel mode). The bytes in between are moved by
// Splice.
//
// Every Serve function runs until its context is done or its listener fails,
// and before it returns it closes the listener and every connection it
// accepted or dialled and waits for its goroutines: nothing outlives it.
package services

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Dialer connects through the overlay (the node supplies it: netstack in
// userspace mode, the OS in kernel mode). network is "tcp"; address is a
// literal "IP:port" ("[fc11::1]:80", "10.0.0.1:80"): names are resolved with
// the Resolver first. Errors may implement SOCKSReplier to choose the SOCKS5
// reply (and so the HTTP CONNECT cause) themselves.
type Dialer func(ctx context.Context, network, address string) (net.Conn, error)

// Resolver turns a host as a client wrote it (an IP literal with or without
// brackets, or a name) into an address. The node supplies it. This package
// strips one pair of surrounding brackets before calling it. A nil Resolver
// accepts IP literals only.
type Resolver func(ctx context.Context, host string) (netip.Addr, error)

// Timeouts shared by the proxies and forwards.
const (
	// handshakeTimeout bounds reading a SOCKS5 greeting and request and an
	// HTTP request header.
	handshakeTimeout = 10 * time.Second
	// dialTimeout bounds resolving and dialling one overlay target.
	dialTimeout = 10 * time.Second
)

// resolveError is a Resolver failure; it maps to "unknown host".
type resolveError struct {
	host string
	err  error
}

func (e *resolveError) Error() string { return fmt.Sprintf("resolve %q: %v", e.host, e.err) }
func (e *resolveError) Unwrap() error { return e.err }

// stripBrackets removes one pair of brackets around an IPv6 literal as some
// clients write it ("[fc11::1]").
func stripBrackets(host string) string {
	if len(host) >= 2 && host[0] == '[' && host[len(host)-1] == ']' {
		return host[1 : len(host)-1]
	}
	return host
}

// connect resolves host with resolve (or parses it as a literal when resolve
// is nil) and dials host:port through dial. Resolver failures are returned as
// *resolveError.
func connect(ctx context.Context, dial Dialer, resolve Resolver, host string, port uint16) (net.Conn, error) {
	host = stripBrackets(host)
	var addr netip.Addr
	if resolve != nil {
		a, err := resolve(ctx, host)
		if err != nil {
			return nil, &resolveError{host: host, err: err}
		}
		addr = a
	} else {
		a, err := netip.ParseAddr(host)
		if err != nil {
			return nil, &resolveError{host: host, err: errors.New("not an IP address and no resolver is configured")}
		}
		addr = a
	}
	if !addr.IsValid() {
		return nil, &resolveError{host: host, err: errors.New("resolver returned no address")}
	}
	return dial(ctx, "tcp", netip.AddrPortFrom(addr, port).String())
}

// splitHostPort splits "host:port" ("[fc11::1]:80", "name:80") and checks
// that the port is a number 1..65535.
func splitHostPort(s string) (host string, port uint16, err error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	if h == "" {
		return "", 0, errors.New("missing host")
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("port %q is not a number 1..65535", p)
	}
	return h, uint16(n), nil
}

// serve accepts connections from ln and runs handle for each in its own
// goroutine until ctx is done (then it returns nil) or Accept fails for good
// (then it returns that error). handle owns c and must close it; it registers
// any further connection it opens with t so shutdown can cut it. Before
// returning, serve closes ln and every tracked connection and waits for the
// handlers.
func serve(ctx context.Context, ln net.Listener, log *slog.Logger, handle func(ctx context.Context, c net.Conn, t *tracker)) error {
	ctx, cancel := context.WithCancel(ctx)
	t := newTracker()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer func() {
		stop()
		ln.Close()
		cancel()
		t.shutdown()
	}()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if temporaryAcceptError(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				log.Warn("accept failed; retrying", "listener", ln.Addr().String(), "err", err, "delay", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-ctx.Done():
					return nil
				}
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		backoff = 0
		if !t.add(c) {
			continue
		}
		if !t.spawn(func() {
			defer t.remove(c)
			handle(ctx, c, t)
		}) {
			t.remove(c)
			c.Close()
		}
	}
}

// temporaryAcceptError reports whether an Accept error is worth retrying:
// running out of descriptors or memory, or a connection aborted before it
// was accepted.
func temporaryAcceptError(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// oneLine makes an error message safe for a one-line HTTP body or log value.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}

// orDiscard returns log, or a logger that discards everything if log is nil.
func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}
