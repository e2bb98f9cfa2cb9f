package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/policy"
	"github.com/tomoe-net/tomoe/internal/routes"
	"github.com/tomoe-net/tomoe/internal/webui"
)

// Admin over the overlay: with [[admin.allow]], the node serves its admin
// API (under /v1/) and its web UI (the rest) on its node address, TCP port adminapi.AdminPort, to the identities
// listed, each with its role. The caller is the connection's source
// address, which WireGuard authenticated: there are no passwords. The
// listener is inside the overlay only: in kernel mode a socket bound to
// the node address and to the TUN device (a packet to that address
// arriving on another interface, or from this host itself, finds no
// listener); in userspace mode the node's own stack. The policy admits the
// listed identities to that port by itself ([[admin.allow]] implies the
// rules, shown with source "admin"), so others get no answer at all.

// overlayAdmin is the admin API's server over the overlay.
type overlayAdmin struct {
	srv  *http.Server
	ln   net.Listener
	ui   *webui.Server
	done chan struct{}
}

// serveOverlayAdmin starts the admin API over the overlay if the config
// lists identities for it.
func (n *Node) serveOverlayAdmin() error {
	if len(*n.adminAllow.Load()) == 0 || n.overlayAdmin != nil {
		return nil
	}
	ap := netip.AddrPortFrom(n.Address(), adminapi.AdminPort)
	var ln net.Listener
	var err error
	switch {
	case n.stack != nil:
		ln, err = n.stack.ListenTCP(ap)
	case n.configuresHost():
		// The device's own name: on macOS the system picks utunN.
		dev, derr := n.wrapper.Name()
		if derr != nil {
			return fmt.Errorf("admin.allow: %w", derr)
		}
		lc := net.ListenConfig{Control: routes.BindToDevice(dev)}
		ln, err = lc.Listen(context.Background(), "tcp6", ap.String())
	default:
		n.log.Warn("admin.allow: this node has no interface of its own to serve the admin API on (a TUN given by the embedding program); not served over the overlay")
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin.allow: listen on %s inside the overlay: %w", ap, err)
	}
	api := adminapi.Handler(n.log.With("component", "admin-overlay"), n.apiAreas()...)
	ui := webui.NewRemote(webui.Remote{Role: n.adminRole, HostOK: n.isOwnHost}, n.log.With("component", "webui-overlay"))
	mux := http.NewServeMux()
	mux.Handle("/v1/", adminapi.OverlayGuard(api, n.isOwnHost, n.adminRole))
	mux.Handle("/metrics", adminapi.OverlayGuard(api, n.isOwnHost, n.adminRole))
	mux.Handle("/debug/", adminapi.OverlayGuard(api, n.isOwnHost, n.adminRole))
	mux.Handle("/", ui.Handler(api)) // the web UI, with its own checks
	a := &overlayAdmin{ln: ln, ui: ui, done: make(chan struct{}), srv: &http.Server{
		Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10,
	}}
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("admin API over the overlay stopped", "err", err)
		}
	}()
	n.overlayAdmin = a
	n.log.Info("admin API served over the overlay", "address", ap, "identities", len(*n.adminAllow.Load()))
	return nil
}

func (a *overlayAdmin) close() {
	if a == nil {
		return
	}
	a.ui.Close() // its event streams end, so Shutdown need not wait for them
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if a.srv.Shutdown(ctx) != nil {
		a.srv.Close()
	}
	<-a.done
}

// adminRole is the highest role [[admin.allow]] gives the node at addr:
// by its address or key, or by a verified certificate's group, org or name.
func (n *Node) adminRole(addr netip.Addr) adminapi.Role {
	if addr == n.Address() {
		return adminapi.RoleNone // this host's own users have the socket
	}
	var members []policy.Member
	for _, m := range n.orgs.Members(addr) {
		members = append(members, policy.Member{Org: m.Org, Name: m.Name, Groups: m.Groups})
	}
	role := adminapi.RoleNone
	for _, a := range *n.adminAllow.Load() {
		if !a.From.Matches(addr, members) {
			continue
		}
		switch a.Role {
		case config.RoleWrite:
			return adminapi.RoleWrite
		case config.RoleRead:
			role = adminapi.RoleRead
		}
	}
	return role
}

// isOwnHost reports whether host (from a request's Host header, without
// port or brackets) names this node: its node address, or a .tomoe name.
func (n *Node) isOwnHost(host string) bool {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap() == n.Address() || (n.ipv4.IsValid() && a.Unmap() == n.ipv4)
	}
	return strings.HasSuffix(strings.ToLower(strings.TrimSuffix(host, ".")), ".tomoe")
}
