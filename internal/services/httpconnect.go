package services

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// notConnectBody answers any method but CONNECT.
const notConnectBody = "this is an HTTP CONNECT proxy (tomoe); use https_proxy / CONNECT\n"

// ServeHTTPConnect serves an HTTP CONNECT proxy on ln until ctx is done:
// "CONNECT host:port" is resolved with resolve, dialled through dial and
// answered "200 Connection established", after which the connection carries
// raw bytes both ways. Failures are answered 502 (or 504 on a timeout) with
// a one-line text body naming the cause; other methods get 405. The proxy
// has no authentication, so ln must admit only trusted local users
// (ListenLocal). It returns nil once ctx is done, or the listener's error;
// ln is closed either way.
func ServeHTTPConnect(ctx context.Context, ln net.Listener, dial Dialer, resolve Resolver, log *slog.Logger) error {
	if dial == nil {
		ln.Close()
		return errors.New("http connect: nil Dialer")
	}
	log = orDiscard(log).With("listener", ln.Addr().String())
	sctx, cancel := context.WithCancel(ctx)
	p := &connectProxy{dial: dial, resolve: resolve, log: log, limit: newRateLimiter(10 * time.Second), t: newTracker()}
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: handshakeTimeout,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return sctx },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	err := srv.Serve(ln)
	stop()
	cancel()
	srv.Close()
	ln.Close()
	p.t.shutdown()
	// Close does not wait for the server's connection goroutines; Shutdown
	// does, and everything it would wait for is closed already.
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	srv.Shutdown(wctx)
	wcancel()
	if errors.Is(err, http.ErrServerClosed) || (ctx.Err() != nil && errors.Is(err, net.ErrClosed)) {
		return nil
	}
	return fmt.Errorf("http connect: %w", err)
}

type connectProxy struct {
	dial    Dialer
	resolve Resolver
	log     *slog.Logger
	limit   *rateLimiter
	t       *tracker // hijacked connections and running handlers
}

func (p *connectProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodConnect {
		w.Header().Set("Allow", http.MethodConnect)
		textError(w, notConnectBody, http.StatusMethodNotAllowed)
		return
	}
	if !p.t.enter() {
		textError(w, "tomoe: proxy is shutting down\n", http.StatusServiceUnavailable)
		return
	}
	defer p.t.exit()

	target := r.Host
	host, port, err := splitHostPort(target)
	if err != nil {
		textError(w, fmt.Sprintf("tomoe: bad CONNECT target %q: %s\n", target, oneLine(err.Error())), http.StatusBadRequest)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		textError(w, "tomoe: CONNECT needs HTTP/1.1\n", http.StatusHTTPVersionNotSupported)
		return
	}
	dctx, cancel := context.WithTimeout(r.Context(), dialTimeout)
	up, err := connect(dctx, p.dial, p.resolve, host, port)
	cancel()
	if err != nil {
		f := classifyDialError(err)
		if p.limit.allow(target) {
			p.log.Info("http connect failed", "client", r.RemoteAddr, "target", target, "status", f.status, "err", err)
		}
		textError(w, fmt.Sprintf("tomoe: CONNECT %s: %s: %s\n", target, f.cause, oneLine(err.Error())), f.status)
		return
	}
	if !p.t.add(up) {
		textError(w, "tomoe: proxy is shutting down\n", http.StatusServiceUnavailable)
		return
	}
	defer p.t.remove(up)
	c, brw, err := hj.Hijack()
	if err != nil {
		up.Close()
		p.log.Debug("http connect hijack failed", "client", r.RemoteAddr, "err", err)
		return
	}
	if !p.t.add(c) {
		up.Close()
		return
	}
	defer p.t.remove(c)
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	_, err = c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
	// Bytes the client sent right after the header (a TLS ClientHello, say)
	// may already sit in the server's buffer.
	if n := brw.Reader.Buffered(); err == nil && n > 0 {
		b, _ := brw.Reader.Peek(n)
		up.SetWriteDeadline(time.Now().Add(handshakeTimeout))
		_, err = up.Write(b)
		up.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		c.Close()
		up.Close()
		return
	}
	c.SetDeadline(time.Time{})
	Splice(c, up)
}

// textError writes a plain-text error response.
func textError(w http.ResponseWriter, body string, status int) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Connection", "close")
	w.WriteHeader(status)
	fmt.Fprint(w, body)
}
