package adminapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
)

// ReloadRequest is the body of POST /v1/reload: the node reads the
// config file it started with again and applies the difference.
type ReloadRequest struct{}

// ReloadCount counts a section's changes.
type ReloadCount struct {
	Added   int `json:"added"`
	Removed int `json:"removed"`
	Changed int `json:"changed"`
}

func (c ReloadCount) empty() bool { return c == ReloadCount{} }

// ReloadResult is what a reload changed (POST /v1/reload, SIGHUP).
type ReloadResult struct {
	File   string      `json:"file"`
	Peers  ReloadCount `json:"peers"`
	Policy ReloadCount `json:"policy"`
	Routes ReloadCount `json:"routes"`
	Expose ReloadCount `json:"expose"`
	Access ReloadCount `json:"access"` // port forwards and proxies
	Admin  bool        `json:"admin_allow_changed"`
	// L2 counts the virtual Ethernet tunnels added and removed, and the
	// segments otherwise changed (Changed: made anew, or gone).
	L2 ReloadCount `json:"l2"`
	// NeedsRestart names the changed keys a reload does not apply.
	NeedsRestart []string `json:"needs_restart"`
	// PeersCut are the keys whose sessions ended because the policy no
	// longer admits them, or a removed rule named them.
	PeersCut []string `json:"peers_cut"`
	// Warnings are about rules or entries that were applied but do not
	// take effect (a rule a revocation suppresses).
	Warnings []string `json:"warnings"`
	// Errors are the changes that could not be made (a port already in
	// use); everything else was applied.
	Errors []string `json:"errors"`
}

// Summary is the result on one line: "peers: +1 -0 ~0, policy: +2 -1,
// routes: +0 -0, services: +0 -0 ~0, needs restart: tun.mtu".
func (r ReloadResult) Summary() string {
	svc := ReloadCount{Added: r.Expose.Added + r.Access.Added, Removed: r.Expose.Removed + r.Access.Removed, Changed: r.Expose.Changed + r.Access.Changed}
	s := fmt.Sprintf("peers: +%d -%d ~%d, policy: +%d -%d, routes: +%d -%d, services: +%d -%d ~%d",
		r.Peers.Added, r.Peers.Removed, r.Peers.Changed, r.Policy.Added, r.Policy.Removed,
		r.Routes.Added, r.Routes.Removed, svc.Added, svc.Removed, svc.Changed)
	if r.Admin {
		s += ", admin.allow changed"
	}
	if r.L2 != (ReloadCount{}) {
		s += fmt.Sprintf(", l2 tunnels: +%d -%d ~%d", r.L2.Added, r.L2.Removed, r.L2.Changed)
	}
	if len(r.NeedsRestart) > 0 {
		s += ", needs restart: " + strings.Join(r.NeedsRestart, ", ")
	}
	return s
}

// Unchanged reports whether the reload found nothing to do.
func (r ReloadResult) Unchanged() bool {
	return r.Peers.empty() && r.Policy.empty() && r.Routes.empty() && r.Expose.empty() && r.Access.empty() && !r.Admin && r.L2.empty() && len(r.NeedsRestart) == 0
}

// Reload is POST /v1/reload. An invalid file is an *APIError with Code
// 422 whose message lists the problems (FILE:LINE: KEY: ...).
func (c *Client) Reload(ctx context.Context) (ReloadResult, error) {
	var r ReloadResult
	err := c.do(ctx, http.MethodPost, "/v1/reload", ReloadRequest{}, &r)
	return r, err
}
