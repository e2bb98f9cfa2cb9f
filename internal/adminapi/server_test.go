package adminapi

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeBackend is a unit-test stand-in for the node.
type fakeBackend struct {
	events chan Event
}

func (f *fakeBackend) Status(context.Context) (Status, error) { return Status{Address: "fc00::1"}, nil }
func (f *fakeBackend) Peers(context.Context) ([]Peer, error)  { return []Peer{}, nil }
func (f *fakeBackend) BridgeNodes(context.Context) ([]BridgeNode, error) {
	return nil, &RequestError{Code: http.StatusConflict, Err: errors.New("not a bridge")}
}
func (f *fakeBackend) CreateToken(context.Context, TokenRequest) (TokenResponse, error) {
	return TokenResponse{}, &RequestError{Code: http.StatusConflict, Err: errors.New("not a bridge")}
}
func (f *fakeBackend) BridgeRevoke(context.Context, BridgeRevokeRequest) (BridgeRevokeResponse, error) {
	return BridgeRevokeResponse{}, &RequestError{Code: http.StatusConflict, Err: errors.New("not a bridge")}
}
func (f *fakeBackend) Routes(context.Context) (Routes, error) { return Routes{}, nil }
func (f *fakeBackend) ChangeRoutes(context.Context, RouteChange) (Routes, error) {
	return Routes{}, BadRequest(errors.New("no"))
}
func (f *fakeBackend) Services(context.Context) (Services, error) { return Services{}, nil }
func (f *fakeBackend) ChangeExpose(context.Context, ExposeChange) (Services, error) {
	return Services{}, BadRequest(errors.New("no"))
}
func (f *fakeBackend) Policy(context.Context) ([]Rule, error) {
	return nil, errors.New("disk on fire")
}
func (f *fakeBackend) Allow(_ context.Context, r AllowRequest) (AllowResponse, error) {
	if r.From == "bad" {
		return AllowResponse{}, BadRequest(errors.New("bad identity"))
	}
	return AllowResponse{Added: true, Rule: Rule{From: r.From}}, nil
}
func (f *fakeBackend) Revoke(context.Context, RevokeRequest) (RevokeResponse, error) {
	return RevokeResponse{}, NotFound(errors.New("no rule allows this identity"))
}
func (f *fakeBackend) Ping(context.Context, PingRequest) (PingResponse, error) {
	return PingResponse{RTTMs: 1.5}, nil
}
func (f *fakeBackend) Subscribe() (<-chan Event, func()) { return f.events, func() {} }
func (f *fakeBackend) Metrics() prometheus.Gatherer      { return prometheus.NewRegistry() }

// RegisterAPI registers every area's endpoints, as the node's areas do.
func (f *fakeBackend) RegisterAPI(m *Mux) {
	m.Get("/v1/status", func(ctx context.Context) (any, error) { return f.Status(ctx) })
	m.Get("/v1/peers", func(ctx context.Context) (any, error) { return f.Peers(ctx) })
	m.Get("/v1/policy", func(ctx context.Context) (any, error) { return f.Policy(ctx) })
	Post(m, "/v1/policy/allow", func(ctx context.Context, r AllowRequest) (any, error) { return f.Allow(ctx, r) })
	Post(m, "/v1/policy/revoke", func(ctx context.Context, r RevokeRequest) (any, error) { return f.Revoke(ctx, r) })
	Post(m, "/v1/ping", func(ctx context.Context, r PingRequest) (any, error) { return f.Ping(ctx, r) })
	m.Get("/v1/bridge/nodes", func(ctx context.Context) (any, error) { return f.BridgeNodes(ctx) })
	Post(m, "/v1/bridge/tokens", func(ctx context.Context, r TokenRequest) (any, error) { return f.CreateToken(ctx, r) })
	Post(m, "/v1/bridge/revoke", func(ctx context.Context, r BridgeRevokeRequest) (any, error) { return f.BridgeRevoke(ctx, r) })
	m.Get("/v1/routes", func(ctx context.Context) (any, error) { return f.Routes(ctx) })
	Post(m, "/v1/routes/change", func(ctx context.Context, r RouteChange) (any, error) { return f.ChangeRoutes(ctx, r) })
	m.Get("/v1/services", func(ctx context.Context) (any, error) { return f.Services(ctx) })
	Post(m, "/v1/services/expose", func(ctx context.Context, r ExposeChange) (any, error) { return f.ChangeExpose(ctx, r) })
}

func serve(t *testing.T, b *fakeBackend) (*Client, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "adm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "run", "admin.sock")
	ln, err := Listen(path, "")
	if err != nil {
		t.Fatal(err)
	}
	s := Serve(ln, nil, b, Events(b.Subscribe), Metrics{b.Metrics()})
	t.Cleanup(func() { s.Close() })
	return NewClient(path), path
}

func TestErrorsAndStatusCodes(t *testing.T) {
	cl, path := serve(t, &fakeBackend{events: make(chan Event)})
	ctx := context.Background()
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v %v", info.Mode(), err)
	}
	if info, _ := os.Stat(filepath.Dir(path)); info.Mode().Perm() != 0o700 {
		t.Fatalf("socket dir mode %v", info.Mode())
	}
	if st, err := cl.Status(ctx); err != nil || st.Address != "fc00::1" {
		t.Fatal(st, err)
	}
	var apiErr *APIError
	if _, err := cl.Allow(ctx, AllowRequest{From: "bad"}); !errors.As(err, &apiErr) || apiErr.Code != 400 || apiErr.Message != "bad identity" {
		t.Fatalf("400: %v", err)
	}
	if _, err := cl.Revoke(ctx, RevokeRequest{From: "x"}); !errors.As(err, &apiErr) || apiErr.Code != 404 {
		t.Fatalf("404: %v", err)
	}
	if _, err := cl.Policy(ctx); !errors.As(err, &apiErr) || apiErr.Code != 500 || !strings.Contains(apiErr.Message, "disk on fire") {
		t.Fatalf("500: %v", err)
	}
	// Unknown fields, wrong methods and unknown paths are refused clearly.
	for _, c := range []struct {
		method, path, body string
		code               int
	}{
		{"POST", "/v1/policy/allow", `{"from":"*","prot":"tcp"}`, 400},
		{"POST", "/v1/policy/allow", `{"from":"*"} {"from":"x"}`, 400},
		{"POST", "/v1/policy/allow", `not json`, 400},
		{"GET", "/v1/policy/allow", ``, 405},
		{"GET", "/v2/nothing", ``, 404},
	} {
		req, _ := http.NewRequest(c.method, "http://tomoe"+c.path, strings.NewReader(c.body))
		resp, err := cl.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s %s %q: %d, want %d", c.method, c.path, c.body, resp.StatusCode, c.code)
		}
	}
}

func TestEventsStream(t *testing.T) {
	events := make(chan Event, 4)
	cl, _ := serve(t, &fakeBackend{events: events})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got := make(chan Event, 4)
	connected := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- cl.Events(ctx, func() { close(connected) }, func(e Event) { got <- e }) }()
	<-connected
	events <- Event{Type: EventPeerUp, Address: "fc00::2"}
	events <- Event{Type: EventDenied, Count: 3, Detail: "a\nb"}
	for _, want := range []string{EventPeerUp, EventDenied} {
		select {
		case e := <-got:
			if e.Type != want {
				t.Fatalf("got %+v, want %s", e, want)
			}
		case <-ctx.Done():
			t.Fatal("event not delivered")
		}
	}
	close(events)
	if err := <-done; err == nil || !strings.Contains(err.Error(), "closed the event stream") {
		t.Fatalf("end of stream: %v", err)
	}
}

func TestListenRefusesLiveSocketAndReplacesStale(t *testing.T) {
	_, path := serve(t, &fakeBackend{events: make(chan Event)})
	if _, err := Listen(path, ""); err == nil || !strings.Contains(err.Error(), "another tomoe") {
		t.Fatalf("second listener on a live socket: %v", err)
	}
	// A regular file in the way is not deleted.
	other := filepath.Join(filepath.Dir(path), "file")
	os.WriteFile(other, []byte("keep"), 0o600)
	if _, err := Listen(other, ""); err == nil {
		t.Fatal("listened over a regular file")
	}
	if b, _ := os.ReadFile(other); string(b) != "keep" {
		t.Fatal("regular file clobbered")
	}
}
