package services

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"
)

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
