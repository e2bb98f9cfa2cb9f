package webui

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/webui/session"
)

// Remote is how the UI is served over the overlay, beside the admin API on
// the node address (port 4680), to the identities [[admin.allow]] lists.
// There is no login: the caller is the connection's source address, which
// WireGuard authenticated, and Role says what it may do (a read identity's
// change is refused with 403). Each caller gets a session of its own (its
// CSRF token, its messages), kept by address.
type Remote struct {
	Role func(caller netip.Addr) adminapi.Role
	// HostOK reports whether a Host header (without port or brackets)
	// names this node: its address or a .tomoe name.
	HostOK func(host string) bool
}

// remoteState is the sessions of callers over the overlay.
type remoteState struct {
	Remote
	mu      sync.Mutex // guards cookies
	cookies map[netip.Addr]string
}

// NewRemote returns the UI for callers over the overlay. It has no
// listener of its own: Handler gives what the node serves on its overlay
// listener. Close ends its event streams.
func NewRemote(r Remote, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{log: log, sessions: session.New(nil), ctx: ctx, cancel: cancel, started: time.Now(), hosts: map[string]bool{},
		remote: &remoteState{Remote: r, cookies: map[netip.Addr]string{}}}
	s.peers = newPeerHistory(s)
	return s
}

// Handler returns the UI's handler calling api (the admin API's handler,
// in-process) for every read and change.
func (s *Server) Handler(api http.Handler) http.Handler {
	s.api = api
	return s.routes()
}

// caller is the source address of a request over the overlay.
func caller(r *http.Request) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return ap.Addr().Unmap(), err == nil
}

// remoteHostOK checks a request's Host over the overlay.
func (s *Server) remoteHostOK(r *http.Request) bool {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	return s.remote.HostOK(host)
}

// remoteSession returns the session of the caller of r, starting one,
// and its role; nil if it has none.
func (s *Server) remoteSession(r *http.Request) (*session.Session, adminapi.Role, error) {
	a, ok := caller(r)
	if !ok {
		return nil, adminapi.RoleNone, errors.New("unknown caller")
	}
	role := s.remote.Role(a)
	if role == adminapi.RoleNone {
		return nil, role, errors.New(a.String() + " is not allowed to use this node's admin API ([[admin.allow]])")
	}
	rs := s.remote
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if sess := s.sessions.Lookup(rs.cookies[a]); sess != nil {
		return sess, role, nil
	}
	tok, _ := s.sessions.MintToken()
	cookie, _ := s.sessions.Login(tok)
	if len(rs.cookies) >= session.MaxSessions {
		for k := range rs.cookies { // the table evicted some: forget one
			if s.sessions.Lookup(rs.cookies[k]) == nil {
				delete(rs.cookies, k)
			}
		}
	}
	rs.cookies[a] = cookie
	return s.sessions.Lookup(cookie), role, nil
}
