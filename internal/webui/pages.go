package webui

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"time"

	qrcode "github.com/skip2/go-qrcode"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/units"
	"github.com/tomoe-net/tomoe/internal/webui/session"
)

//go:embed templates/*.html
var templateFS embed.FS

// staticFS holds /static/app.css, app.js and icon.svg.
//
//go:embed static
var staticFS embed.FS

// pageNames are the pages, in the order of the navigation.
var pageNames = []string{"overview", "peers", "policy", "routes", "services", "bridges", "events", "console"}

var templates = func() map[string]*template.Template {
	funcs := template.FuncMap{"short": short, "bytes": units.Bytes, "ago": ago, "deref": deref}
	m := map[string]*template.Template{}
	for _, name := range append(pageNames, "login") {
		m[name] = template.Must(template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html"))
	}
	return m
}()

// pageData is what every page's template gets.
type pageData struct {
	Title string
	Page  string // the nav entry to mark
	Pages []string
	CSRF  string
	Flash session.Flash
	Error string // the page's data could not be read
	Data  any
	// Remote: served over the overlay, where there is no login to end.
	Remote bool
}

// render writes page name with the layout.
func (s *Server) render(w http.ResponseWriter, name string, sess *session.Session, d pageData) {
	d.Pages = pageNames
	d.Remote = s.remote != nil
	if d.Remote {
		d.Pages = pageNames[:len(pageNames)-1] // no console over the overlay
	}
	if d.Page == "" {
		d.Page = name
	}
	if sess != nil {
		d.CSRF = sess.CSRF
		d.Flash = s.sessions.TakeFlash(sess)
	}
	var buf bytes.Buffer
	if err := templates[name].ExecuteTemplate(&buf, "layout", d); err != nil {
		s.log.Error("web UI template", "page", name, "err", err)
		http.Error(w, "template error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(buf.Bytes())
}

// pageRoutes registers the pages and their changes.
func (s *Server) pageRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", s.authed(s.overview))
	mux.HandleFunc("GET /qr.png", s.authed(s.qr))
	mux.HandleFunc("POST /logout", s.authed(s.logout))
	mux.HandleFunc("GET /peers", s.authed(s.peersPage))
	mux.HandleFunc("GET /peers/rows", s.authed(s.peerRows))
	mux.HandleFunc("GET /policy", s.authed(s.policyPage))
	mux.HandleFunc("POST /policy/add", s.authed(s.policyAdd))
	mux.HandleFunc("POST /policy/revoke", s.authed(s.policyRevoke))
	mux.HandleFunc("GET /routes", s.authed(s.routesPage))
	mux.HandleFunc("POST /routes/change", s.authed(s.routesChange))
	mux.HandleFunc("GET /services", s.authed(s.servicesPage))
	mux.HandleFunc("POST /services/expose", s.authed(s.exposeChange))
	mux.HandleFunc("GET /bridges", s.authed(s.bridgesPage))
	mux.HandleFunc("POST /bridges/token", s.authed(s.bridgeToken))
	mux.HandleFunc("POST /bridges/revoke", s.authed(s.bridgeRevoke))
	mux.HandleFunc("GET /events", s.authed(func(w http.ResponseWriter, r *http.Request, sess *session.Session) {
		s.render(w, "events", sess, pageData{Title: "Events"})
	}))
	mux.HandleFunc("GET /console", s.localOnly(s.authed(s.consolePage)))
	mux.HandleFunc("POST /console/revoke", s.localOnly(s.authed(s.consoleRevoke)))
	mux.HandleFunc("POST /console/policy", s.localOnly(s.authed(s.consolePolicy)))
	mux.HandleFunc("POST /console/rule", s.localOnly(s.authed(s.consoleRule)))
	mux.HandleFunc("POST /console/approve", s.localOnly(s.authed(s.consoleApprove)))
	mux.HandleFunc("GET /events/stream", s.authed(func(w http.ResponseWriter, r *http.Request, _ *session.Session) { s.events(w, r) }))
}

// localOnly refuses a page over the overlay: the console reads and changes
// other nodes with this node's rights, which a caller there must not
// borrow.
func (s *Server) localOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.remote != nil {
			http.Error(w, "the console is served on this node's own web UI only (tomoe ui)", http.StatusNotFound)
			return
		}
		h(w, r)
	}
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, _ *session.Session) {
	if c, err := r.Cookie(s.cookie); err == nil {
		s.sessions.Logout(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: s.cookie, Value: "", Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	w.WriteHeader(http.StatusOK)
	s.render(w, "login", nil, pageData{Title: "Logged out"})
}

// overviewData is the overview page.
type overviewData struct {
	adminapi.Status
	Uptime string
	Up     int
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	d := pageData{Title: "Overview"}
	var st adminapi.Status
	if err := s.get(r.Context(), "/v1/status", &st); err != nil {
		d.Error = err.Error()
	} else {
		od := overviewData{Status: st}
		if t, err := time.Parse(time.RFC3339, st.StartedAt); err == nil {
			od.Uptime = time.Since(t).Round(time.Second).String()
		}
		for _, p := range st.Peers {
			if p.Up {
				od.Up++
			}
		}
		d.Data = od
	}
	s.render(w, "overview", sess, d)
}

// enrolmentText is what the overview's QR code holds: the public key and
// the node address, for a peer's [[peers]] entry or a policy rule.
func enrolmentText(st adminapi.Status) string {
	return fmt.Sprintf("tomoe:public_key=%s;address=%s", st.PublicKey, st.Address)
}

func (s *Server) qr(w http.ResponseWriter, r *http.Request, _ *session.Session) {
	var st adminapi.Status
	if err := s.get(r.Context(), "/v1/status", &st); err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	png, err := qrcode.Encode(enrolmentText(st), qrcode.Medium, 256)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Write(png)
}

// changed ends a change: the outcome is kept for the next page, and the
// browser goes back to page (POST, redirect, GET: a reload repeats
// nothing).
func (s *Server) changed(w http.ResponseWriter, r *http.Request, sess *session.Session, page string, msg string, err error) {
	if err != nil {
		s.sessions.SetFlash(sess, session.Flash{Text: err.Error(), Error: true})
	} else {
		s.sessions.SetFlash(sess, session.Flash{Text: msg})
	}
	http.Redirect(w, r, page, http.StatusSeeOther)
}

func short(s string) string {
	if len(s) <= 12 {
		return s
	}
	return s[:10] + "…"
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// ago turns an RFC 3339 time into "12s ago".
func ago(ts *string) string {
	if ts == nil {
		return "never"
	}
	t, err := time.Parse(time.RFC3339, *ts)
	if err != nil {
		return *ts
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}
