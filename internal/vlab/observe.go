package vlab

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// PathKind is how a node's packets to a peer travel.
type PathKind string

// Path kinds. The admin API says "direct" or "relay" and names the relay
// "ip:port/udp" or "ip:port/tcp"; vlab tells the two relays apart.
const (
	NoPath   PathKind = ""          // no such peer, or it is not active
	Direct   PathKind = "direct"    // straight to the peer's address
	RelayUDP PathKind = "relay/udp" // through a bridge, over UDP
	RelayTCP PathKind = "relay/tcp" // through a bridge, over the node's TCP connection to it
)

// Path is a node's path to a peer.
type Path struct {
	Kind PathKind
	// Via is the bridge of a relay path as the admin API names it
	// ("203.0.113.1:4610/udp"), else "".
	Via string
}

func (p Path) String() string {
	if p.Via == "" {
		return string(p.Kind)
	}
	return string(p.Kind) + " via " + p.Via
}

// PathTo reads n's path to peer from its admin API (GET /v1/peers, what
// `tomoe peers --json` shows).
func (n *Node) PathTo(t testing.TB, peer *Node) Path {
	t.Helper()
	peers, err := n.StatusArea().Peers(context.Background())
	if err != nil {
		t.Fatalf("%s peers: %v", n.Name, err)
	}
	want := peer.Addr().String()
	for _, p := range peers {
		if p.Address != want {
			continue
		}
		switch {
		case p.Path == "direct":
			return Path{Kind: Direct}
		case p.Path == "relay" && p.Bridge != nil:
			via := *p.Bridge
			switch {
			case strings.HasSuffix(via, "/tcp"):
				return Path{Kind: RelayTCP, Via: via}
			case strings.HasSuffix(via, "/udp"):
				return Path{Kind: RelayUDP, Via: via}
			}
			t.Fatalf("%s's relay to %s is %q: neither /udp nor /tcp", n.Name, peer.Name, via)
		}
		t.Fatalf("%s's path to %s is %q (bridge %v)", n.Name, peer.Name, p.Path, p.Bridge)
	}
	return Path{}
}

// WaitPath waits up to d for n's path to peer to be of kind.
func (n *Node) WaitPath(t testing.TB, peer *Node, kind PathKind, d time.Duration) Path {
	t.Helper()
	var p Path
	testnet.WaitFor(t, d, fmt.Sprintf("%s's path to %s %s", n.Name, peer.Name, kind), func() bool {
		p = n.PathTo(t, peer)
		return p.Kind == kind
	})
	return p
}

// Bridge is n's registration with its (first) bridge, from its status.
func (n *Node) Bridge(t testing.TB) adminapi.Bridge {
	t.Helper()
	st, err := n.StatusArea().Status(context.Background())
	if err != nil {
		t.Fatalf("%s status: %v", n.Name, err)
	}
	if len(st.Bridges) == 0 {
		t.Fatalf("%s: no bridges in status", n.Name)
	}
	return st.Bridges[0]
}

// WaitBridge waits up to d for n's registration to be in state, over
// transport ("udp", "tcp"; "" for any).
func (n *Node) WaitBridge(t testing.TB, state, transport string, d time.Duration) {
	t.Helper()
	testnet.WaitFor(t, d, fmt.Sprintf("%s %s with its bridge over %q", n.Name, state, transport), func() bool {
		b := n.Bridge(t)
		return b.State == state && (transport == "" || b.Transport == transport)
	})
}

// BridgeNode is what bridge n knows of member m (GET /v1/bridge/nodes,
// what `tomoe bridge nodes --json` shows); false if m is not registered.
func (n *Node) BridgeNode(t testing.TB, m *Node) (adminapi.BridgeNode, bool) {
	t.Helper()
	list, err := n.BridgeArea().BridgeNodes(context.Background())
	if err != nil {
		t.Fatalf("%s bridge nodes: %v", n.Name, err)
	}
	for _, b := range list {
		if b.PublicKey == m.Public().String() {
			return b, true
		}
	}
	return adminapi.BridgeNode{}, false
}

// Relayed is how many bytes bridge n has relayed for member m (0 if m is
// not registered).
func (n *Node) Relayed(t testing.TB, m *Node) uint64 {
	t.Helper()
	b, _ := n.BridgeNode(t, m)
	return b.RelayedBytes
}
