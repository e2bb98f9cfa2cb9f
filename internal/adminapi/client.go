package adminapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Client talks to a node's admin API over its Unix socket, or over the
// overlay (NewRemoteClient).
type Client struct {
	path string // the socket, or the remote address
	base string // the URL's scheme and host
	hint string // what to check when the node cannot be reached
	http *http.Client
}

// AdminPort is the TCP port of a node address on which the node serves its
// admin API over the overlay to the identities [[admin.allow]] names.
const AdminPort = 4680

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableCompression: true,
	}
	return &Client{path: path, base: "http://tomoe", hint: "is `tomoe up` running, and is this the right socket? (--socket or TOMOE_SOCKET)", http: &http.Client{Transport: tr}}
}

// NewRemoteClient returns a client for the admin API of the node at addr
// (its node address, or a name the system resolves), port AdminPort,
// reached over the overlay through this host's routes: this host must run
// a kernel-mode node, and the remote node must list this node in
// [[admin.allow]].
func NewRemoteClient(addr string) *Client {
	return NewRemoteClientDial(addr, nil)
}

// NewRemoteClientDial is NewRemoteClient connecting with dial (nil: the
// system's sockets), e.g. through a userspace node's own stack.
func NewRemoteClientDial(addr string, dial func(ctx context.Context, network, address string) (net.Conn, error)) *Client {
	hostport := net.JoinHostPort(strings.TrimSuffix(strings.TrimPrefix(addr, "["), "]"), fmt.Sprint(AdminPort))
	tr := &http.Transport{DisableCompression: true, Proxy: nil, DialContext: dial, MaxIdleConnsPerHost: 1, IdleConnTimeout: 30 * time.Second}
	return &Client{path: hostport, base: "http://" + hostport, hint: "is the overlay up here (kernel mode), and does that node list this one in [[admin.allow]]?", http: &http.Client{Transport: tr}}
}

// CloseIdle closes the client's idle connections.
func (c *Client) CloseIdle() { c.http.CloseIdleConnections() }

// Path returns the socket path.
func (c *Client) Path() string { return c.path }

// APIError is an error the node answered with.
type APIError struct {
	Code    int
	Message string
}

func (e *APIError) Error() string { return e.Message }

// ErrUnreachable wraps failures to reach the node at all.
var ErrUnreachable = errors.New("cannot reach the tomoe node")

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w at %s (%v): %s", ErrUnreachable, c.path, unwrapNet(err), c.hint)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return &APIError{Code: resp.StatusCode, Message: e.Error}
		}
		return &APIError{Code: resp.StatusCode, Message: strings.TrimSpace(string(data))}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}

func unwrapNet(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// Status is GET /v1/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
	return s, err
}

// Peers is GET /v1/peers.
func (c *Client) Peers(ctx context.Context) ([]Peer, error) {
	var p []Peer
	err := c.do(ctx, http.MethodGet, "/v1/peers", nil, &p)
	return p, err
}

// Policy is GET /v1/policy.
func (c *Client) Policy(ctx context.Context) ([]Rule, error) {
	var r []Rule
	err := c.do(ctx, http.MethodGet, "/v1/policy", nil, &r)
	return r, err
}

// Allow is POST /v1/policy/allow.
func (c *Client) Allow(ctx context.Context, req AllowRequest) (AllowResponse, error) {
	var r AllowResponse
	err := c.do(ctx, http.MethodPost, "/v1/policy/allow", req, &r)
	return r, err
}

// Revoke is POST /v1/policy/revoke.
func (c *Client) Revoke(ctx context.Context, req RevokeRequest) (RevokeResponse, error) {
	var r RevokeResponse
	err := c.do(ctx, http.MethodPost, "/v1/policy/revoke", req, &r)
	return r, err
}

// Deny is POST /v1/policy/deny.
func (c *Client) Deny(ctx context.Context, req DenyRequest) (DenyResponse, error) {
	var r DenyResponse
	err := c.do(ctx, http.MethodPost, "/v1/policy/deny", req, &r)
	return r, err
}

// Undeny is POST /v1/policy/undeny.
func (c *Client) Undeny(ctx context.Context, req UndenyRequest) (UndenyResponse, error) {
	var r UndenyResponse
	err := c.do(ctx, http.MethodPost, "/v1/policy/undeny", req, &r)
	return r, err
}

// Explain is POST /v1/policy/explain.
func (c *Client) Explain(ctx context.Context, req ExplainRequest) (ExplainResponse, error) {
	var r ExplainResponse
	err := c.do(ctx, http.MethodPost, "/v1/policy/explain", req, &r)
	return r, err
}

// PolicyTest is POST /v1/policy/test.
func (c *Client) PolicyTest(ctx context.Context, req TestRequest) (TestResponse, error) {
	var r TestResponse
	err := c.do(ctx, http.MethodPost, "/v1/policy/test", req, &r)
	return r, err
}

// Ping is POST /v1/ping.
func (c *Client) Ping(ctx context.Context, req PingRequest) (PingResponse, error) {
	var r PingResponse
	err := c.do(ctx, http.MethodPost, "/v1/ping", req, &r)
	return r, err
}

// BridgeNodes lists the nodes registered with this bridge.
func (c *Client) BridgeNodes(ctx context.Context) ([]BridgeNode, error) {
	var out []BridgeNode
	err := c.do(ctx, "GET", "/v1/bridge/nodes", nil, &out)
	return out, err
}

// CreateToken makes a join token on this bridge.
func (c *Client) CreateToken(ctx context.Context, req TokenRequest) (TokenResponse, error) {
	var out TokenResponse
	err := c.do(ctx, "POST", "/v1/bridge/tokens", req, &out)
	return out, err
}

// BridgeRevoke removes a node from this bridge.
func (c *Client) BridgeRevoke(ctx context.Context, req BridgeRevokeRequest) (BridgeRevokeResponse, error) {
	var out BridgeRevokeResponse
	err := c.do(ctx, "POST", "/v1/bridge/revoke", req, &out)
	return out, err
}

// Metrics returns the Prometheus text exposition.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/metrics", nil)
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("%w at %s (%v)", ErrUnreachable, c.path, unwrapNet(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// Events streams events to f until ctx ends or the node closes the stream.
// connected, if not nil, is called once the stream is open.
func (c *Client) Events(ctx context.Context, connected func(), f func(Event)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/events", nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w at %s (%v)", ErrUnreachable, c.path, unwrapNet(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &APIError{Code: resp.StatusCode, Message: resp.Status}
	}
	if connected != nil {
		connected()
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var ev Event
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			return fmt.Errorf("bad event %q: %w", data, err)
		}
		f(ev)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("the node closed the event stream")
}

// WaitReady polls the socket until the node answers or ctx ends.
func (c *Client) WaitReady(ctx context.Context) error {
	for {
		if _, err := c.Status(ctx); err == nil {
			return nil
		} else if ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Orgs is GET /v1/orgs.
func (c *Client) Orgs(ctx context.Context) ([]OrgStatus, error) {
	var r []OrgStatus
	err := c.do(ctx, http.MethodGet, "/v1/orgs", nil, &r)
	return r, err
}

// OrgPush is POST /v1/orgs/push.
func (c *Client) OrgPush(ctx context.Context, req OrgPushRequest) (OrgPushResponse, error) {
	var r OrgPushResponse
	err := c.do(ctx, http.MethodPost, "/v1/orgs/push", req, &r)
	return r, err
}

// Console is GET /v1/console.
func (c *Client) Console(ctx context.Context) (ConsoleView, error) {
	var v ConsoleView
	err := c.do(ctx, http.MethodGet, "/v1/console", nil, &v)
	return v, err
}

// OrgJoin is POST /v1/orgs/join.
func (c *Client) OrgJoin(ctx context.Context, req OrgJoinRequest) (OrgJoinResponse, error) {
	var r OrgJoinResponse
	err := c.do(ctx, http.MethodPost, "/v1/orgs/join", req, &r)
	return r, err
}

// OrgRequests is POST /v1/orgs/requests.
func (c *Client) OrgRequests(ctx context.Context, req OrgQueryRequest) (OrgRequestsResponse, error) {
	var r OrgRequestsResponse
	err := c.do(ctx, http.MethodPost, "/v1/orgs/requests", req, &r)
	return r, err
}

// OrgApprove is POST /v1/orgs/approve.
func (c *Client) OrgApprove(ctx context.Context, req OrgApproveRequest) (OrgDecisionResponse, error) {
	var r OrgDecisionResponse
	err := c.do(ctx, http.MethodPost, "/v1/orgs/approve", req, &r)
	return r, err
}

// OrgReject is POST /v1/orgs/reject.
func (c *Client) OrgReject(ctx context.Context, req OrgQueryRequest) (OrgDecisionResponse, error) {
	var r OrgDecisionResponse
	err := c.do(ctx, http.MethodPost, "/v1/orgs/reject", req, &r)
	return r, err
}

// ConsoleRevoke is POST /v1/console/revoke.
func (c *Client) ConsoleRevoke(ctx context.Context, req ConsoleRevokeRequest) (ConsoleSignedResponse, error) {
	var r ConsoleSignedResponse
	err := c.do(ctx, http.MethodPost, "/v1/console/revoke", req, &r)
	return r, err
}
