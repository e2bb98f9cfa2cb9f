package node

import (
	"context"
	"net"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/node/console"
)

// ConsoleArea is the admin API's GET /v1/console: the network as this
// node sees it over the overlay (package console).
type ConsoleArea struct{ *Node }

// RegisterAPI implements adminapi.Area.
func (a ConsoleArea) RegisterAPI(m *adminapi.Mux) {
	m.Get("/v1/console", func(ctx context.Context) (any, error) { return a.View(ctx) })
}

// View is GET /v1/console.
func (a ConsoleArea) View(ctx context.Context) (adminapi.ConsoleView, error) {
	return a.console().View(ctx)
}

// console returns the node's console, made on first use.
func (n *Node) console() *console.Console {
	n.consoleOnce.Do(func() {
		c := &console.Console{Now: n.clock.Now, Local: n.consoleSnapshot}
		if n.stack != nil {
			c.Dial = n.DialContext // through this node's own stack
		} else {
			c.Dial = (&net.Dialer{}).DialContext
		}
		n.consoleView = c
	})
	return n.consoleView
}

// consoleSnapshot is this node's own part of the view, read in-process.
func (n *Node) consoleSnapshot(ctx context.Context) (console.Snapshot, error) {
	var s console.Snapshot
	var err error
	if s.Status, err = n.StatusArea().Status(ctx); err != nil {
		return s, err
	}
	if s.Rules, err = n.PolicyArea().Policy(ctx); err != nil {
		return s, err
	}
	if r, err := n.RoutesArea().Routes(ctx); err == nil {
		s.Routes = &r
	}
	if n.svc != nil {
		if sv, err := n.ServicesArea().Services(ctx); err == nil {
			s.Services = &sv
		}
	}
	if s.Status.BridgeRole != nil {
		s.BridgeNodes, _ = n.BridgeArea().BridgeNodes(ctx)
	}
	return s, nil
}
