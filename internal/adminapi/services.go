package adminapi

import (
	"context"
	"net/http"
)

// Routes is GET /v1/routes.
type Routes struct {
	// Offered are this node's offers (its tun.ipv4 /32 has Self set).
	Offered []OfferedRoute `json:"offered"`
	// Accept are this node's accept rules.
	Accept []AcceptRule `json:"accept"`
	// Learned are the routes peers offer this node, installed or not.
	Learned []LearnedRoute `json:"learned"`
}

// OfferedRoute is one route this node offers.
type OfferedRoute struct {
	Prefix     string `json:"prefix"`
	Masquerade bool   `json:"masquerade"`
	Self       bool   `json:"self,omitempty"`
	// AcceptedBy lists the peers (addresses) that said they installed it.
	AcceptedBy []string `json:"accepted_by"`
}

// AcceptRule is one routes.accept rule.
type AcceptRule struct {
	From   string `json:"from"`
	Prefix string `json:"prefix"`
}

// LearnedRoute is one prefix a peer offers.
type LearnedRoute struct {
	Prefix  string `json:"prefix"`
	Peer    string `json:"peer"`
	Address string `json:"address"`
	// State is "installed", "not_accepted" (no accept rule covers it) or
	// "conflict" (another peer has it, or nobody may have it).
	State string `json:"state"`
	// Reason says why a route is not installed, when there is more to
	// say than the state: not_accepted "not_own_address" (a "*" rule
	// covers it but it is not the offering key's derived IPv4 address),
	// "policy" (only a "*" rule covers it, and the policy does not let
	// the peer in), "own_route" (it overlaps a route this node offers);
	// conflict "own_address" (it is this node's own IPv4 address),
	// "address_collision" (several peers offer it and it is the derived
	// address of one of them: none has it), "other_peer" (another peer
	// has it), "host_network" (it lies within a network this host is on:
	// installed again once the host leaves it).
	Reason string `json:"reason,omitempty"`
	// ConflictsWith are the keys of the other peers of a conflict.
	ConflictsWith []string `json:"conflicts_with,omitempty"`
}

// Route change operations (RouteChange.Op).
const (
	RouteOffer    = "offer"
	RouteWithdraw = "withdraw"
	RouteAccept   = "accept"
	RouteUnaccept = "unaccept"
)

// RouteChange is POST /v1/routes/change. Changes persist across restarts.
type RouteChange struct {
	Op         string `json:"op"`
	Prefix     string `json:"prefix"`
	Masquerade bool   `json:"masquerade,omitempty"` // offer
	From       string `json:"from,omitempty"`       // accept, unaccept
}

// Services is GET /v1/services: exposed services and the local access
// listeners (port forwards and proxies).
type Services struct {
	Expose  []ExposedService `json:"expose"`
	Connect []LocalListener  `json:"connect"`
	Proxies []LocalListener  `json:"proxies"`
}

// ExposedService is one service reachable at [node address]:Port.
type ExposedService struct {
	Proto  string `json:"proto"`
	Port   uint16 `json:"port"`
	Target string `json:"target"`
	// Address is where peers reach it, e.g. "[fc..]:80".
	Address  string `json:"address"`
	Active   uint64 `json:"active"`
	Total    uint64 `json:"total"`
	BytesIn  uint64 `json:"bytes_in"`
	BytesOut uint64 `json:"bytes_out"`
}

// LocalListener is a local port forward or proxy.
type LocalListener struct {
	Kind   string `json:"kind"` // "connect", "socks5", "http"
	Listen string `json:"listen"`
	Remote string `json:"remote,omitempty"` // connect only
}

// ExposeChange is POST /v1/services/expose: Remove false adds the service.
// Changes persist across restarts.
type ExposeChange struct {
	Remove bool   `json:"remove,omitempty"`
	Proto  string `json:"proto"`
	Port   uint16 `json:"port"`
	Target string `json:"target,omitempty"`
}

// Routes is GET /v1/routes.
func (c *Client) Routes(ctx context.Context) (Routes, error) {
	var out Routes
	err := c.do(ctx, http.MethodGet, "/v1/routes", nil, &out)
	return out, err
}

// ChangeRoutes is POST /v1/routes/change.
func (c *Client) ChangeRoutes(ctx context.Context, req RouteChange) (Routes, error) {
	var out Routes
	err := c.do(ctx, http.MethodPost, "/v1/routes/change", req, &out)
	return out, err
}

// Services is GET /v1/services.
func (c *Client) Services(ctx context.Context) (Services, error) {
	var out Services
	err := c.do(ctx, http.MethodGet, "/v1/services", nil, &out)
	return out, err
}

// ChangeExpose is POST /v1/services/expose.
func (c *Client) ChangeExpose(ctx context.Context, req ExposeChange) (Services, error) {
	var out Services
	err := c.do(ctx, http.MethodPost, "/v1/services/expose", req, &out)
	return out, err
}
