package webui

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tomoe-net/tomoe/internal/adminapi"
)

// richNode is an admin API with something in every field the pages
// show: a relayed peer with a certificate, a bridge role with a node,
// learned routes in every state, services and an organisation.
type richNode struct{}

func (richNode) RegisterAPI(m *adminapi.Mux) {
	relay, ep, hs, site := "192.0.2.1:4610/udp", "198.51.100.7:51820", "2026-01-01T00:00:00Z", "300:1::/64"
	peers := []adminapi.Peer{
		{PublicKey: "PEERKEY1", Address: "fc00::a", Name: "web1", Path: "relay", Bridge: &relay, Endpoint: &ep, LastHandshake: &hs,
			RxBytes: 2048, TxBytes: 1 << 20, Up: true, Active: true, AllowedInbound: true, CertName: "web1.acme", Groups: []string{"acme/servers"}, SitePrefix: &site},
		{PublicKey: "PEERKEY2", Address: "fc00::b", Path: "direct", Static: true},
	}
	last := "2026-01-01T00:00:00Z"
	m.Get("/v1/status", func(context.Context) (any, error) {
		return adminapi.Status{PublicKey: "NODEKEY", Address: "fc00::1", SitePrefix: "300::/64", IPv4: "100.64.0.1", Mode: "kernel", Interface: "tomoe0",
			MTU: 1400, ListenPort: 51820, Version: "v9", StartedAt: "2026-01-01T00:00:00Z", PeerCount: 2, Peers: peers,
			Orgs:       []adminapi.OrgStatus{{Name: "acme", Cert: &adminapi.OrgCert{Name: "me.acme", State: "valid"}, Members: 3, CRLStale: true}},
			Bridges:    []adminapi.Bridge{{Endpoint: "bridge.example:4610", PublicKey: "BRIDGEKEY-LONG-ENOUGH", State: "registered", Transport: "tcp", Observed: "203.0.113.9:4000", LastRegistered: &last}},
			BridgeRole: &adminapi.BridgeRole{Nodes: 1, TCP: "0.0.0.0:4610", RelayedBytes: 5000},
		}, nil
	})
	m.Get("/v1/peers", func(context.Context) (any, error) { return peers, nil })
	m.Get("/v1/policy", func(context.Context) (any, error) {
		until := "2030-01-01T00:00:00Z"
		return []adminapi.Rule{
			{Action: "allow", From: "fc00::a", Proto: "tcp", Ports: "22", Source: "config", Origin: "config"},
			{Action: "deny", From: "*", Proto: "any", Source: "api", Origin: "api", Until: &until},
			{Action: "allow", From: "group:acme/servers", Proto: "tcp", Ports: "443", Source: "org", Origin: "org acme v3"},
		}, nil
	})
	adminapi.Post(m, "/v1/policy/explain", func(_ context.Context, r adminapi.ExplainRequest) (any, error) {
		if r.From == "bad" {
			return nil, adminapi.BadRequest(errorString("from \"bad\": not an identity"))
		}
		return adminapi.ExplainResponse{Decision: "deny", Reason: "default deny"}, nil
	})
	m.Get("/v1/routes", func(context.Context) (any, error) {
		return adminapi.Routes{
			Offered: []adminapi.OfferedRoute{{Prefix: "192.168.10.0/24", Masquerade: true, AcceptedBy: []string{"fc00::a"}}, {Prefix: "100.64.0.1/32", Self: true}},
			Accept:  []adminapi.AcceptRule{{From: "fc00::a", Prefix: "0.0.0.0/0"}},
			Learned: []adminapi.LearnedRoute{{Prefix: "10.1.0.0/16", Address: "fc00::a", State: "installed"}, {Prefix: "10.2.0.0/16", Address: "fc00::b", State: "conflict", Reason: "other_peer"}},
		}, nil
	})
	m.Get("/v1/services", func(context.Context) (any, error) {
		return adminapi.Services{
			Expose:  []adminapi.ExposedService{{Proto: "tcp", Port: 80, Target: "127.0.0.1:8080", Address: "[fc00::1]:80", Active: 2, Total: 9, BytesIn: 100, BytesOut: 3000}},
			Connect: []adminapi.LocalListener{{Kind: "connect", Listen: "127.0.0.1:18080", Remote: "web1:80"}},
			Proxies: []adminapi.LocalListener{{Kind: "socks5", Listen: "127.0.0.1:1080"}},
		}, nil
	})
	m.Get("/v1/bridge/nodes", func(context.Context) (any, error) {
		return []adminapi.BridgeNode{{PublicKey: "REGKEY", Address: "fc00::c", Endpoint: "203.0.113.5:999", Transport: "udp", LastSeen: last, RelayedBytes: 77}}, nil
	})
}

type errorString string

func (e errorString) Error() string { return string(e) }

// Every page renders what the admin API says, escaped.
func TestPagesRender(t *testing.T) {
	f := newFixture(t)
	f.api = adminapi.Handler(nil, richNode{}, Area{f.s})
	f.s.api = f.api
	c, _ := f.login(t)
	for path, wants := range map[string][]string{
		"/":                                      {"NODEKEY", "100.64.0.1", "kernel (tomoe0)", "v9", "2 known, 1 up", "me.acme (valid)", "revocation list stale", `src="/qr.png"`},
		"/peers":                                 {"relay via 192.0.2.1:4610/udp", "web1.acme", "acme/servers", "1.0 MiB", "no inbound rule", "static"},
		"/peers/rows":                            {`data-peer="fc00::a"`, `data-peer="fc00::b"`},
		"/policy":                                {"group:acme/servers", "org acme v3", "organisation policy", "Undeny", "2030-01-01T00:00:00Z"},
		"/policy?from=fc00::a&port=22&proto=udp": {"default deny", "<option selected>udp</option>"},
		"/policy?from=bad":                       {"not an identity"},
		"/policy?from=x&port=99999":              {"a number 1..65535"},
		"/routes":                                {"192.168.10.0/24", "this node's IPv4", "0.0.0.0/0", "conflict (other_peer)", "installed", "Unaccept"},
		"/services":                              {"[fc00::1]:80", "2 / 9", "2.9 KiB", "web1:80", "socks5 proxy"},
		"/bridges":                               {"bridge.example:4610", "registered", "203.0.113.9:4000", "1 nodes registered", "fc00::c", "Create token"},
		"/events":                                {"event-log", "event-filter"},
	} {
		resp, err := c.Get(f.s.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %s\n%s", path, resp.Status, body)
			continue
		}
		for _, w := range wants {
			if !strings.Contains(string(body), w) {
				t.Errorf("%s: no %q in\n%s", path, w, body)
			}
		}
	}
	resp, err := c.Get(f.s.URL() + "/qr.png")
	if err != nil {
		t.Fatal(err)
	}
	png, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Content-Type") != "image/png" || !strings.HasPrefix(string(png), "\x89PNG") {
		t.Fatalf("qr.png: %s %q", resp.Header.Get("Content-Type"), png[:min(8, len(png))])
	}
}
