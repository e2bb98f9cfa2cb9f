package adminapi

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestOverlayGuard(t *testing.T) {
	reader, writer, stranger := "[fc00::1]:5000", "[fc00::2]:5000", "[fc00::3]:5000"
	roles := map[netip.Addr]Role{netip.MustParseAddr("fc00::1"): RoleRead, netip.MustParseAddr("fc00::2"): RoleWrite}
	served := 0
	h := OverlayGuard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served++ }),
		func(host string) bool { return host == "fc00::9" || strings.HasSuffix(host, ".tomoe") },
		func(a netip.Addr) Role { return roles[a] })
	const host = "[fc00::9]:4680"
	for _, tc := range []struct {
		name, from, method, path, host string
		headers                        map[string]string
		want                           int
	}{
		{"reader GET", reader, "GET", "/v1/status", host, nil, 200},
		{"reader by name", reader, "GET", "/v1/status", "web1.tomoe:4680", nil, 200},
		{"reader change", reader, "POST", "/v1/policy/allow", host, map[string]string{"Content-Type": "application/json"}, 403},
		{"reader explain", reader, "POST", "/v1/policy/explain", host, map[string]string{"Content-Type": "application/json"}, 200},
		{"writer change", writer, "POST", "/v1/policy/allow", host, map[string]string{"Content-Type": "application/json; charset=utf-8"}, 200},
		{"writer form", writer, "POST", "/v1/policy/allow", host, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415},
		{"writer same origin", writer, "POST", "/v1/policy/allow", host, map[string]string{"Content-Type": "application/json", "Origin": "http://" + host}, 200},
		{"writer cross origin", writer, "POST", "/v1/policy/allow", host, map[string]string{"Content-Type": "application/json", "Origin": "http://evil.example"}, 403},
		{"writer cross site", writer, "POST", "/v1/policy/allow", host, map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, 403},
		{"rebinding", writer, "GET", "/v1/status", "evil.example:4680", nil, 421},
		{"profiles", writer, "GET", "/debug/pprof/", host, nil, 404},
		{"console", writer, "GET", "/v1/console", host, nil, 404},
		{"console revoke", writer, "POST", "/v1/console/revoke", host, map[string]string{"Content-Type": "application/json"}, 404},
		{"web UI login token", writer, "POST", "/v1/ui/token", host, map[string]string{"Content-Type": "application/json"}, 404},
		{"stranger", stranger, "GET", "/v1/status", host, nil, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := served
			r := httptest.NewRequest(tc.method, "http://x"+tc.path, strings.NewReader("{}"))
			r.RemoteAddr, r.Host = tc.from, tc.host
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.want, w.Body)
			}
			if (served > before) != (tc.want == 200) {
				t.Fatalf("served %v with status %d", served > before, w.Code)
			}
		})
	}
}
