package adminapi

import (
	"context"
	"net/http"
)

// UITokenRequest is POST /v1/ui/token (an empty object).
type UITokenRequest struct{}

// UITokenResponse is a login URL for the node's web UI: it carries a
// token that works once, until Expires.
type UITokenResponse struct {
	URL     string `json:"url"`
	Expires string `json:"expires"` // RFC 3339
}

// UIToken is POST /v1/ui/token: a single-use login URL for the web UI
// (409 when [admin] web is not set).
func (c *Client) UIToken(ctx context.Context) (UITokenResponse, error) {
	var out UITokenResponse
	err := c.do(ctx, http.MethodPost, "/v1/ui/token", UITokenRequest{}, &out)
	return out, err
}
