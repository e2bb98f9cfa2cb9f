// Package webui is the node's web UI: server-rendered pages (overview,
// peers, policy, routes, services, bridges, events) on a loopback address,
// for administrators who logged in with the single-use URL `tomoe ui`
// prints. It only renders and calls the admin API: every read and every
// change goes through the admin API's http.Handler in-process, the same
// code the CLI reaches over the socket, never into the node's internals.
//
// Security: a login token is minted only over the admin socket (POST
// /v1/ui/token), so only users allowed there can log in; it works once,
// for 60 s. The session cookie is random, HttpOnly and SameSite=Strict.
// Every request must name this server in its Host header (against DNS
// rebinding); every change must carry the session's CSRF token and come
// from this origin (Origin, Sec-Fetch-Site). Pages carry a strict
// Content-Security-Policy (no inline script, no framing) and no CORS
// headers. Lifecycle: Serve starts it, Close ends it and its event
// streams; nothing outlives Close.
package webui

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/webui/session"
)

// csp allows only this origin's script, style and images; no inline
// script or style, no plugins, no framing, forms post only here.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Server is the web UI on one loopback listener.
type Server struct {
	log      *slog.Logger
	sessions *session.Table
	api      http.Handler // the admin API, in-process
	started  time.Time

	ln     net.Listener
	srv    *http.Server
	ctx    context.Context // ends with Close: event streams and pings
	cancel context.CancelFunc
	wg     sync.WaitGroup
	hosts  map[string]bool // Host header values this server answers
	origin string          // "http://host:port"
	// cookie is the session cookie's name, "tomoe_session_PORT": browsers
	// keep cookies by host name, not port, so two nodes' UIs on one host
	// would otherwise log each other out.
	cookie string

	peers *peerHistory
	// remote is set for the UI served over the overlay (NewRemote).
	remote *remoteState
}

// Listen opens the UI's listener on addr (a loopback address; port 0
// picks a free port).
func Listen(addr netip.AddrPort) (net.Listener, error) {
	if !addr.Addr().Unmap().IsLoopback() {
		return nil, fmt.Errorf("web UI address %s is not a loopback address", addr)
	}
	return net.Listen("tcp", addr.String())
}

// New returns a web UI that will serve on ln once Serve is called; log
// may be nil.
func New(ln net.Listener, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{log: log, sessions: session.New(nil), ln: ln, ctx: ctx, cancel: cancel, started: time.Now(), hosts: map[string]bool{}}
	s.peers = newPeerHistory(s)
	ap, _ := netip.ParseAddrPort(ln.Addr().String())
	port := strconv.Itoa(int(ap.Port()))
	host := net.JoinHostPort(ap.Addr().Unmap().String(), port)
	s.origin = "http://" + host
	s.cookie = "tomoe_session_" + port
	s.hosts[host] = true
	s.hosts["localhost:"+port] = true
	return s
}

// URL is the address of the UI, "http://127.0.0.1:4680".
func (s *Server) URL() string { return s.origin }

// Serve starts serving, calling api (the admin API's handler) for every
// read and change.
func (s *Server) Serve(api http.Handler) {
	s.api = api
	s.srv = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("web UI stopped", "err", err)
		}
	}()
}

// Close stops the server: its event streams end, then its connections.
func (s *Server) Close() error {
	s.cancel()
	if s.ln == nil {
		return nil // served by the node's overlay listener
	}
	if s.srv == nil {
		return s.ln.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	s.wg.Wait()
	return nil
}

// Area is the admin API's POST /v1/ui/token: a login URL for the UI, for
// users of the admin socket. With a nil server (the UI is off) it
// answers 409 saying how to turn it on.
type Area struct{ *Server }

// RegisterAPI implements adminapi.Area.
func (a Area) RegisterAPI(m *adminapi.Mux) {
	adminapi.Post(m, "/v1/ui/token", func(ctx context.Context, _ adminapi.UITokenRequest) (any, error) {
		if a.Server == nil {
			return nil, adminapi.Conflict(errors.New(`the web UI is off: set web = "127.0.0.1:4680" in [admin] and restart the node`))
		}
		tok, exp := a.sessions.MintToken()
		return adminapi.UITokenResponse{URL: a.origin + "/login?token=" + url.QueryEscape(tok), Expires: exp.UTC().Format(time.RFC3339)}, nil
	})
}

// routes is the UI's handler: security checks around every page.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", s.login)
	mux.Handle("GET /static/", http.FileServerFS(staticFS))
	s.pageRoutes(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin") // not no-referrer: then forms post with "Origin: null"
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		if s.remote != nil && !s.remoteHostOK(r) || s.remote == nil && !s.hosts[r.Host] {
			// A page on another name that resolves here (DNS rebinding)
			// sends that name.
			http.Error(w, "unknown host: open the web UI at "+s.origin, http.StatusMisdirectedRequest)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// login spends a login token and starts a session.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if s.remote != nil {
		http.Error(w, "no login over the overlay: you are who your node address says", http.StatusNotFound)
		return
	}
	cookie, ok := s.sessions.Login(r.URL.Query().Get("token"))
	if !ok {
		s.log.Info("web UI login refused: unknown, used or expired token", "remote", r.RemoteAddr)
		http.Error(w, "this login link is unknown, used or expired: run `tomoe ui` for a new one", http.StatusForbidden)
		return
	}
	s.log.Info("web UI login", "remote", r.RemoteAddr)
	http.SetCookie(w, &http.Cookie{Name: s.cookie, Value: cookie, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: int(session.MaxLifetime / time.Second)})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// authed wraps a page: it needs a session, and a change (any method but
// GET and HEAD) needs the session's CSRF token and this origin.
func (s *Server) authed(h func(w http.ResponseWriter, r *http.Request, sess *session.Session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var sess *session.Session
		if s.remote != nil {
			var role adminapi.Role
			var err error
			sess, role, err = s.remoteSession(r)
			if err != nil {
				http.Error(w, "forbidden: "+err.Error(), http.StatusForbidden)
				return
			}
			if role < adminapi.RoleWrite && r.Method != http.MethodGet && r.Method != http.MethodHead {
				http.Error(w, "forbidden: this node gives you the read role ([[admin.allow]]): you may look, not change", http.StatusForbidden)
				return
			}
		} else if c, err := r.Cookie(s.cookie); err == nil {
			sess = s.sessions.Lookup(c.Value)
		}
		if sess == nil {
			w.WriteHeader(http.StatusUnauthorized)
			s.render(w, "login", nil, pageData{Title: "Log in"})
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if err := s.checkChange(r, sess); err != nil {
				s.log.Warn("web UI change refused", "path", r.URL.Path, "reason", err)
				http.Error(w, "forbidden: "+err.Error(), http.StatusForbidden)
				return
			}
		}
		h(w, r, sess)
	}
}

// checkChange refuses a change that another site could have sent.
func (s *Server) checkChange(r *http.Request, sess *session.Session) error {
	if o := r.Header.Get("Origin"); o != "" && o != s.origin && !(s.remote != nil && o == "http://"+r.Host) {
		return fmt.Errorf("request from origin %q", o)
	}
	if sf := r.Header.Get("Sec-Fetch-Site"); sf != "" && sf != "same-origin" {
		return fmt.Errorf("request from a %s page", sf)
	}
	r.Body = http.MaxBytesReader(nil, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return fmt.Errorf("bad form: %v", err)
	}
	if !sess.CheckCSRF(r.PostForm.Get("csrf")) {
		return errors.New("missing or wrong CSRF token: reload the page")
	}
	return nil
}

// trimmed returns a form field without surrounding spaces.
func trimmed(r *http.Request, key string) string { return strings.TrimSpace(r.PostForm.Get(key)) }
