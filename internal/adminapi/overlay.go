package adminapi

import (
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Role is what a caller of the admin API over the overlay may do.
type Role uint8

// Roles over the overlay.
const (
	RoleNone  Role = iota // not listed: nothing
	RoleRead              // every GET, and the questions asked by POST (explain, test)
	RoleWrite             // every endpoint
)

// localOnly are the endpoints served on the socket only: the console
// reads other nodes with this node's own rights, which a caller over the
// overlay must not borrow.
var localOnly = map[string]bool{
	"/v1/console": true, "/v1/console/revoke": true, "/v1/console/policy": true, "/v1/console/rule": true,
	"/v1/console/requests": true, "/v1/console/approve": true,
	"/v1/ui/token": true, // web UI logins are for the socket's users
	"/v1/reload":   true, // reads a file of this host, as the node's own user
}

// readPosts are the POST endpoints that change nothing: a read role may
// ask them.
var readPosts = map[string]bool{"/v1/policy/explain": true, "/v1/policy/test": true}

// OverlayGuard serves h to callers over the overlay. The caller is the
// source address of the connection, which WireGuard authenticated: role
// says what it may do. The guard also shuts the doors a browser on an
// administrator's machine would open to any web page it visits: requests
// for another host name (DNS rebinding) or from another origin (CSRF) are
// refused, and changes must be JSON (a cross-site form cannot send it
// without a preflight, which is never answered). Go profiles are not
// served over the overlay, nor the console.
func OverlayGuard(h http.Handler, hostOK func(host string) bool, role func(caller netip.Addr) Role) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ap, err := netip.ParseAddrPort(r.RemoteAddr)
		if err != nil {
			writeError(w, http.StatusForbidden, errors.New("unknown caller"))
			return
		}
		caller := ap.Addr().Unmap()
		rl := role(caller)
		if rl == RoleNone {
			writeError(w, http.StatusForbidden, fmt.Errorf("%s is not allowed to use this node's admin API ([[admin.allow]])", caller))
			return
		}
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if !hostOK(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")) {
			writeError(w, http.StatusMisdirectedRequest, fmt.Errorf("host %q is not this node: use its address or its .tomoe name", r.Host))
			return
		}
		if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host {
			writeError(w, http.StatusForbidden, fmt.Errorf("cross-origin request from %q refused", o))
			return
		}
		if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" && s != "none" {
			writeError(w, http.StatusForbidden, fmt.Errorf("cross-site request (%s) refused", s))
			return
		}
		if strings.HasPrefix(r.URL.Path, "/debug/") || localOnly[r.URL.Path] {
			writeError(w, http.StatusNotFound, fmt.Errorf("no such endpoint over the overlay: %s", r.URL.Path))
			return
		}
		change := r.Method != http.MethodGet && r.Method != http.MethodHead
		if change {
			if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
				writeError(w, http.StatusUnsupportedMediaType, errors.New("send changes as application/json"))
				return
			}
			if rl < RoleWrite && !(r.Method == http.MethodPost && readPosts[r.URL.Path]) {
				writeError(w, http.StatusForbidden, fmt.Errorf("%s has the read role here: %s %s changes this node", caller, r.Method, r.URL.Path))
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}
