package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/user"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Area is one part of the API (status and peers, policy, routes,
// services, the bridge role, events, metrics): it registers its endpoints
// on the Mux the server builds. Each area implements only its own
// endpoints; nothing implements the whole API.
type Area interface {
	RegisterAPI(m *Mux)
}

// Mux is where areas register endpoints. Every endpoint answers other
// methods with a JSON 405, and unknown paths get a JSON 404, so scripts
// always get {"error": ...}.
type Mux struct {
	mux *http.ServeMux
	log *slog.Logger
}

// Handle registers h for method and path.
func (m *Mux) Handle(method, path string, h http.HandlerFunc) {
	m.mux.HandleFunc(method+" "+path, h)
	m.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", method)
		writeError(w, http.StatusMethodNotAllowed, fmt.Errorf("%s %s: use %s", r.Method, r.URL.Path, method))
	})
}

// Get registers a read endpoint answering f's result as JSON (or its error,
// with the status a RequestError carries).
func (m *Mux) Get(path string, f func(ctx context.Context) (any, error)) {
	m.Handle(http.MethodGet, path, func(w http.ResponseWriter, r *http.Request) {
		reply(w, m.log, func() (any, error) { return f(r.Context()) })
	})
}

// Post registers a change endpoint whose JSON body (at most 64 KiB, no
// unknown fields) decodes into a Req for f.
func Post[Req any](m *Mux, path string, f func(ctx context.Context, req Req) (any, error)) {
	m.Handle(http.MethodPost, path, func(w http.ResponseWriter, r *http.Request) {
		var req Req
		if !decode(w, r, &req) {
			return
		}
		reply(w, m.log, func() (any, error) { return f(r.Context(), req) })
	})
}

// Events is the area of GET /v1/events: Subscribe returns a channel of
// events and a function that ends the subscription. A slow subscriber
// misses events (it gets an EventOverflow) rather than slowing the node.
type Events func() (<-chan Event, func())

// RegisterAPI implements Area.
func (e Events) RegisterAPI(m *Mux) {
	m.Handle(http.MethodGet, "/v1/events", func(w http.ResponseWriter, r *http.Request) { serveEvents(w, r, e) })
}

// Metrics is the area of GET /metrics (Prometheus).
type Metrics struct{ prometheus.Gatherer }

// RegisterAPI implements Area.
func (g Metrics) RegisterAPI(m *Mux) {
	m.Handle(http.MethodGet, "/metrics", promhttp.HandlerFor(g.Gatherer, promhttp.HandlerOpts{}).ServeHTTP)
}

// RequestError is an error caused by the request; the server answers with
// its status code (400 if zero) instead of 500.
type RequestError struct {
	Code int
	Err  error
}

func (e *RequestError) Error() string { return e.Err.Error() }
func (e *RequestError) Unwrap() error { return e.Err }

// BadRequest wraps err as a 400 error.
func BadRequest(err error) error { return &RequestError{Code: http.StatusBadRequest, Err: err} }

// NotFound wraps err as a 404 error.
func NotFound(err error) error { return &RequestError{Code: http.StatusNotFound, Err: err} }

// Conflict is a 409: the request contradicts the node's state.
func Conflict(err error) error { return &RequestError{Code: http.StatusConflict, Err: err} }

// Server serves a Backend on a Unix socket.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	path string
	log  *slog.Logger
	wg   sync.WaitGroup
}

// Listen creates the admin socket at path, for this process's user, the
// administrators and the members of group (if set) only. Its directory is
// created if missing. A stale socket left by a crash is replaced; a live
// one is an error. How the socket is restricted depends on the system
// (secureSocket): on Unix by the socket's mode and owner and a check of
// every connection's peer credentials; on Windows by the socket file's ACL.
func Listen(path, group string) (net.Listener, error) {
	var grp *user.Group
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("admin group %q: %w", group, err)
		}
		grp = g
	}
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := makeSocketDir(dir, grp); err != nil {
			return nil, fmt.Errorf("admin socket directory: %w", err)
		}
	}
	if info, err := os.Lstat(path); err == nil {
		if info.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("admin socket %s: a file that is not a socket is in the way", path)
		}
		if c, err := net.DialTimeout("unix", path, 500*time.Millisecond); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin socket %s is in use: is another tomoe running?", path)
		}
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	sl, err := secureSocket(ln, path, grp)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return sl, nil
}

// Serve starts serving the areas' API on ln. Close stops it.
func Serve(ln net.Listener, log *slog.Logger, areas ...Area) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{ln: ln, log: log}
	if ul, ok := ln.Addr().(*net.UnixAddr); ok {
		s.path = ul.String()
	}
	s.srv = &http.Server{Handler: Handler(log, areas...), ReadHeaderTimeout: 10 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin API stopped", "err", err)
		}
	}()
	return s
}

// Close stops the server (ending event streams) and removes the socket.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	s.wg.Wait()
	return nil
}

// Handler returns the API's HTTP handler: the areas' endpoints, Go
// profiles, and a JSON 404 for the rest.
func Handler(log *slog.Logger, areas ...Area) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Mux{mux: http.NewServeMux(), log: log}
	for _, a := range areas {
		a.RegisterAPI(m)
	}
	// Go profiles, for finding where the time goes (e.g. bench/). The
	// socket admits only root, the node's user and the admin group.
	m.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	m.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	m.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	m.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return m.mux
}

// decode reads a JSON request body of at most 64 KiB with no unknown fields.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("bad request body: %v", err))
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, errors.New("bad request body: trailing data"))
		return false
	}
	return true
}

// reply runs f and writes its result as JSON, or its error with the status
// code a RequestError carries (500 for other errors).
func reply(w http.ResponseWriter, log *slog.Logger, f func() (any, error)) {
	v, err := f()
	if err != nil {
		var re *RequestError
		if errors.As(err, &re) {
			code := re.Code
			if code == 0 {
				code = http.StatusBadRequest
			}
			writeError(w, code, err)
			return
		}
		log.Warn("admin API request failed", "err", err)
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(Error{Error: err.Error()})
}

// serveEvents streams events as server-sent events: "event: TYPE" and
// "data: JSON" lines, and a comment every 15 s to keep proxies awake.
func serveEvents(w http.ResponseWriter, r *http.Request, subscribe Events) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, errors.New("streaming unsupported"))
		return
	}
	events, cancel := subscribe()
	defer cancel()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	io.WriteString(w, ": tomoe events\n\n")
	flusher.Flush()
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-keepalive.C:
			io.WriteString(w, ": keepalive\n\n")
			flusher.Flush()
		case ev, ok := <-events:
			if !ok {
				return
			}
			data, _ := json.Marshal(ev)
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.Type, data)
			flusher.Flush()
		}
	}
}
