package services

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Forward describes one local port forward: connections to Listen are
// carried to Remote in the overlay. The node turns it into ListenLocal(Listen)
// plus ServeForward(Remote).
type Forward struct {
	// Listen is a ListenLocal spec: a loopback "IP:port" or an absolute Unix
	// socket path.
	Listen string
	// Remote is the overlay "host:port" to connect to: an IP literal
	// ("[fc11::1]:80") or a name the node's Resolver knows ("db:5432").
	Remote string
}

// Validate checks both sides' syntax without touching the system.
func (f Forward) Validate() error {
	if _, err := parseListenSpec(f.Listen); err != nil {
		return fmt.Errorf("forward %s: %w", f, err)
	}
	if _, _, err := splitHostPort(f.Remote); err != nil {
		return fmt.Errorf("forward %s: remote %q: %w; want host:port, e.g. [fc11::1]:80 or db:5432", f, f.Remote, err)
	}
	return nil
}

func (f Forward) String() string { return f.Listen + " -> " + f.Remote }

// ServeForward carries every connection accepted on ln to remote through
// dial until ctx is done. remote is "host:port"; host is resolved with
// resolve for each connection, so a name follows its peer. A connection whose
// dial fails (10 s timeout) is closed; the failure is logged at most every
// 10 s. It returns an error at once if remote is malformed; otherwise nil
// once ctx is done, or the listener's error. ln is closed either way.
func ServeForward(ctx context.Context, ln net.Listener, dial Dialer, resolve Resolver, remote string, log *slog.Logger) error {
	host, port, err := splitHostPort(remote)
	if err != nil {
		ln.Close()
		return fmt.Errorf("forward to %q: %w", remote, err)
	}
	if dial == nil {
		ln.Close()
		return fmt.Errorf("forward to %q: nil Dialer", remote)
	}
	log = orDiscard(log).With("listener", ln.Addr().String(), "target", remote)
	limit := newRateLimiter(10 * time.Second)
	return serve(ctx, ln, log, func(ctx context.Context, c net.Conn, t *tracker) {
		dctx, cancel := context.WithTimeout(ctx, dialTimeout)
		up, err := connect(dctx, dial, resolve, host, port)
		cancel()
		if err != nil {
			c.Close()
			if ctx.Err() == nil && limit.allow(remote) {
				log.Info("forward connect failed", "client", c.RemoteAddr().String(), "err", err)
			}
			return
		}
		if !t.add(up) {
			c.Close()
			return
		}
		defer t.remove(up)
		Splice(c, up)
	})
}
