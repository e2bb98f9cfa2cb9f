package webui

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/tomoe-net/tomoe/internal/adminapi"
)

// recordingPolicy is an admin API area that records the rules added, so
// a test can tell that a refused change changed nothing.
type recordingPolicy struct {
	mu     sync.Mutex
	allows []adminapi.AllowRequest
}

func (p *recordingPolicy) RegisterAPI(m *adminapi.Mux) {
	m.Get("/v1/status", func(context.Context) (any, error) {
		return adminapi.Status{PublicKey: "k", Address: "fc00::1", StartedAt: "2026-01-01T00:00:00Z"}, nil
	})
	m.Get("/v1/policy", func(context.Context) (any, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		rules := []adminapi.Rule{}
		for _, a := range p.allows {
			rules = append(rules, adminapi.Rule{Action: "allow", From: a.From, Proto: a.Proto, Ports: a.Ports, Source: "api", Origin: "api"})
		}
		return rules, nil
	})
	adminapi.Post(m, "/v1/policy/allow", func(_ context.Context, r adminapi.AllowRequest) (any, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.allows = append(p.allows, r)
		return adminapi.AllowResponse{Added: true, Rule: adminapi.Rule{From: r.From, Proto: r.Proto}}, nil
	})
}

func (p *recordingPolicy) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.allows)
}

// uiFixture is a web UI on a real loopback listener over a recording
// admin API.
type uiFixture struct {
	s      *Server
	api    http.Handler
	policy *recordingPolicy
}

func newFixture(t *testing.T) *uiFixture {
	t.Helper()
	ln, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	f := &uiFixture{s: New(ln, nil), policy: &recordingPolicy{}}
	f.api = adminapi.Handler(nil, f.policy, Area{f.s})
	f.s.Serve(f.api)
	t.Cleanup(func() { f.s.Close() })
	return f
}

// loginURL mints a token as `tomoe ui` does, through the admin API.
func (f *uiFixture) loginURL(t *testing.T) string {
	t.Helper()
	var tok adminapi.UITokenResponse
	if err := f.s.post(context.Background(), "/v1/ui/token", adminapi.UITokenRequest{}, &tok); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok.URL, f.s.URL()+"/login?token=") || tok.Expires == "" {
		t.Fatalf("token response %+v", tok)
	}
	return tok.URL
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// login logs a client in and returns it with its session's CSRF token.
func (f *uiFixture) login(t *testing.T) (*http.Client, string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: noRedirect}
	resp, err := c.Get(f.loginURL(t))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %s", resp.Status)
	}
	var csrf string
	for _, ck := range jar.Cookies(mustURL(f.s.URL())) {
		if ck.Name == f.s.cookie {
			csrf = f.s.sessions.Lookup(ck.Value).CSRF
		}
	}
	if csrf == "" {
		t.Fatal("no session after login")
	}
	return c, csrf
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func TestLoginTokenSingleUseAndCookieFlags(t *testing.T) {
	f := newFixture(t)
	u := f.loginURL(t)
	c := &http.Client{CheckRedirect: noRedirect}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("login: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	cookies := resp.Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookies: %v", cookies)
	}
	ck := cookies[0]
	if ck.Name != f.s.cookie || !strings.HasPrefix(ck.Name, "tomoe_session_") || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || len(ck.Value) < 43 || strings.Contains(u, ck.Value) {
		t.Fatalf("session cookie: %+v", ck)
	}
	// The same URL again: refused.
	resp, err = c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Fatalf("second use of the login URL: %s %v", resp.Status, resp.Cookies())
	}
	// Without a session, pages say how to log in.
	resp, err = http.Get(f.s.URL() + "/policy")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), "tomoe ui") {
		t.Fatalf("page without a session: %s %s", resp.Status, body)
	}
}

func TestUIOffTokenRefused(t *testing.T) {
	h := adminapi.Handler(nil, Area{})
	w := &bufferWriter{header: http.Header{}}
	req, _ := http.NewRequest(http.MethodPost, "http://tomoe/v1/ui/token", strings.NewReader("{}"))
	h.ServeHTTP(w, req)
	if w.code != http.StatusConflict || !strings.Contains(w.body.String(), `web = \"127.0.0.1:4680\"`) {
		t.Fatalf("token with the UI off: %d %s", w.code, w.body.String())
	}
}

// Changes need the session's CSRF token and this origin: a forged
// request is refused with 403 and changes nothing.
func TestCSRFRefused(t *testing.T) {
	f := newFixture(t)
	c, csrf := f.login(t)
	post := func(form url.Values, header map[string]string) int {
		req, _ := http.NewRequest(http.MethodPost, f.s.URL()+"/policy/add", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	rule := url.Values{"from": {"*"}, "proto": {"tcp"}, "ports": {"22"}}
	withToken := func(tok string) url.Values {
		v := url.Values{"csrf": {tok}}
		for k, vv := range rule {
			v[k] = vv
		}
		return v
	}
	for _, tc := range []struct {
		name   string
		form   url.Values
		header map[string]string
	}{
		{"no token", rule, nil},
		{"wrong token", withToken(csrf[:len(csrf)-1] + "x"), nil},
		{"token of another session", withToken("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), nil},
		{"cross-site origin", withToken(csrf), map[string]string{"Origin": "http://evil.example"}},
		{"other port on this host", withToken(csrf), map[string]string{"Origin": "http://127.0.0.1:1"}},
		{"null origin", withToken(csrf), map[string]string{"Origin": "null"}},
		{"cross-site fetch", withToken(csrf), map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"same-site fetch", withToken(csrf), map[string]string{"Sec-Fetch-Site": "same-site"}},
	} {
		if code := post(tc.form, tc.header); code != http.StatusForbidden {
			t.Errorf("%s: status %d, want 403", tc.name, code)
		}
	}
	if n := f.policy.count(); n != 0 {
		t.Fatalf("refused requests added %d rules", n)
	}
	// The real form: accepted, once.
	if code := post(withToken(csrf), map[string]string{"Origin": f.s.URL(), "Sec-Fetch-Site": "same-origin"}); code != http.StatusSeeOther {
		t.Fatalf("change with the CSRF token: status %d", code)
	}
	if n := f.policy.count(); n != 1 {
		t.Fatalf("%d rules added, want 1", n)
	}
	// Without a session, the token alone does nothing.
	req, _ := http.NewRequest(http.MethodPost, f.s.URL()+"/policy/add", strings.NewReader(withToken(csrf).Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || f.policy.count() != 1 {
		t.Fatalf("change without a session: %s, %d rules", resp.Status, f.policy.count())
	}
}

// A page reached under another name (DNS rebinding) is refused.
func TestHostCheck(t *testing.T) {
	f := newFixture(t)
	c, _ := f.login(t)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(f.s.URL(), "http://"))
	for host, want := range map[string]int{
		"127.0.0.1:" + port:      http.StatusOK,
		"localhost:" + port:      http.StatusOK,
		"evil.example:" + port:   http.StatusMisdirectedRequest,
		"127.0.0.1":              http.StatusMisdirectedRequest,
		"127.0.0.1:1":            http.StatusMisdirectedRequest,
		"localhost.evil.example": http.StatusMisdirectedRequest,
	} {
		req, _ := http.NewRequest(http.MethodGet, f.s.URL()+"/", nil)
		req.Host = host
		for _, ck := range c.Jar.Cookies(mustURL(f.s.URL())) {
			req.AddCookie(ck)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %q: %s, want %d", host, resp.Status, want)
		}
	}
}

// Every answer carries the security headers, and none a CORS header.
func TestSecurityHeaders(t *testing.T) {
	f := newFixture(t)
	c, _ := f.login(t)
	for _, tc := range []struct{ method, path string }{
		{"GET", "/"}, {"GET", "/policy"}, {"GET", "/static/app.js"}, {"GET", "/nope"}, {"OPTIONS", "/policy/add"}, {"GET", "/login?token=x"},
	} {
		req, _ := http.NewRequest(tc.method, f.s.URL()+tc.path, nil)
		req.Header.Set("Origin", "http://evil.example")
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "form-action 'self'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s %s: CSP %q lacks %q", tc.method, tc.path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") {
			t.Errorf("%s %s: CSP %q allows unsafe sources", tc.method, tc.path, csp)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s %s: no nosniff", tc.method, tc.path)
		}
		for k := range h {
			if strings.HasPrefix(strings.ToLower(k), "access-control-") {
				t.Errorf("%s %s: CORS header %s", tc.method, tc.path, k)
			}
		}
		if tc.method == "OPTIONS" && resp.StatusCode/100 == 2 {
			t.Errorf("OPTIONS preflight answered %s", resp.Status)
		}
	}
}

func TestListenRefusesNonLoopback(t *testing.T) {
	if _, err := Listen(netip.MustParseAddrPort("0.0.0.0:0")); err == nil {
		t.Fatal("web UI listened on 0.0.0.0")
	}
}
