package vlab

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node"
	"github.com/tomoe-net/tomoe/internal/testnet"
	"github.com/tomoe-net/tomoe/internal/testnet/vnet"
)

// Port is the UDP port every lab node listens on, and the TCP port of a
// bridge.
const Port = 4610

// Node is a tomoe node on a lab host. Its key and state live in a
// directory of the test's, so a restart keeps them. The embedded
// *node.Node is the running node: nil before Start and after Stop.
type Node struct {
	*node.Node
	Name string
	Host *vnet.Host
	Key  identity.PrivateKey
	Dir  string

	lab *Lab
	doc string
}

// NewNode prepares a node on h: its directory and key, not started.
func (l *Lab) NewNode(name string, h *vnet.Host) *Node {
	l.t.Helper()
	dir := filepath.Join(l.t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		l.t.Fatal(err)
	}
	k, err := identity.GeneratePrivateKey()
	if err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "node.key"), []byte(k.Base64()), 0o600); err != nil {
		l.t.Fatal(err)
	}
	n := &Node{Name: name, Host: h, Key: k, Dir: dir, lab: l}
	// Stopped before its directory goes (cleanups run last registered
	// first, and the Lab's own runs after every TempDir's): a node still
	// running could write its state there while it is removed.
	l.t.Cleanup(n.Stop)
	return n
}

// Public is the node's public key.
func (n *Node) Public() identity.PublicKey { return n.Key.Public() }

// Addr is the node's overlay address.
func (n *Node) Addr() netip.Addr { return n.Key.Public().Address() }

// Endpoint is where the node listens on its host: UDP, and TCP on a
// bridge.
func (n *Node) Endpoint() netip.AddrPort { return netip.AddrPortFrom(n.Host.Addr(), Port) }

// Start starts the node in userspace mode on its host, with extra
// appended to the base config (key file, userspace mode, listen port,
// admin socket). t fails if the node does not start.
func (n *Node) Start(t testing.TB, extra string) {
	t.Helper()
	n.doc = fmt.Sprintf("key_file = \"node.key\"\n[tun]\nmode = \"userspace\"\n[listen]\nudp = \"0.0.0.0:%d\"\n[admin]\nsocket = \"admin.sock\"\n", Port) + extra
	n.start(t)
}

// Restart stops the node and starts it again with the same config, key
// and state, on the same host and port, as a restarted process would.
func (n *Node) Restart(t testing.TB) {
	t.Helper()
	n.Stop()
	n.start(t)
}

func (n *Node) start(t testing.TB) {
	t.Helper()
	if n.Node != nil {
		t.Fatalf("vlab: %s is running", n.Name)
	}
	cfg, err := config.Parse([]byte(n.doc), n.Name+".toml", n.Dir)
	if err != nil {
		t.Fatalf("vlab: %s config: %v", n.Name, err)
	}
	h := n.Host
	tr := &node.Transport{
		UDP:            h.NewBind(),
		DialTCP:        h.Dial,
		ListenTCP:      h.Listen,
		LocalAddrs:     func() []netip.Addr { return []netip.Addr{h.Addr()} },
		InterfaceAddrs: h.InterfaceAddrs,
	}
	lt := n.lab.t
	log := slog.New(slog.NewTextHandler(logWriter{lt, n.Name}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	nd, err := node.New(cfg, node.Options{Logger: log, Version: "vlab", Transport: tr})
	if err != nil {
		t.Fatalf("vlab: start %s: %v", n.Name, err)
	}
	n.Node = nd
	n.lab.noteStarted(n)
}

// Stop closes the running node, if any.
func (n *Node) Stop() {
	if n.Node == nil {
		return
	}
	n.Node.Close()
	n.Node = nil
}

// logWriter sends a node's log lines to the test's log.
type logWriter struct {
	t    testing.TB
	name string
}

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s: %s", w.name, strings.TrimSpace(string(p)))
	return len(p), nil
}

// Config snippets.

// JoinConfig is the [[bridges]] entry that joins bridge br, with a join
// token or "".
func JoinConfig(br *Node, token string) string {
	return fmt.Sprintf("[[bridges]]\nendpoint = %q\npublic_key = %q\ntoken = %q\n", br.Endpoint(), br.Public(), token)
}

// BridgeConfig makes a node a bridge on UDP and TCP Port, allowing
// members to register without a token.
func BridgeConfig(members ...*Node) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[bridge]\nenable = true\ntcp = \"0.0.0.0:%d\"\n", Port)
	for _, m := range members {
		fmt.Fprintf(&b, "[[bridge.allow]]\npublic_key = %q\n", m.Public())
	}
	return b.String()
}

// AllowConfig is a policy entry letting from in on proto and ports.
func AllowConfig(from *Node, proto, ports string) string {
	return fmt.Sprintf("[[policy.allow]]\nfrom = %q\nproto = %q\nports = %q\n", from.Public(), proto, ports)
}

// Traffic through the overlay.

// Echo serves a line echo on the node's overlay address and port, in its
// userspace stack, until the node stops.
func (n *Node) Echo(t testing.TB, port uint16) {
	t.Helper()
	ln, err := n.Stack().ListenTCP(netip.AddrPortFrom(n.Addr(), port))
	if err != nil {
		t.Fatalf("vlab: %s echo on %d: %v", n.Name, port, err)
	}
	go testnet.Echo(ln)
}

// Dial connects from n to to's overlay address and port, by address
// alone: n finds to through its bridges.
func (n *Node) Dial(to *Node, port uint16, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return n.DialContext(ctx, "tcp6", netip.AddrPortFrom(to.Addr(), port).String())
}

// Talk connects from n to to's echo on port and checks one round trip;
// the connection is closed when t ends.
func (n *Node) Talk(t testing.TB, to *Node, port uint16) net.Conn {
	t.Helper()
	c, err := n.Dial(to, port, 10*time.Second)
	if err != nil {
		t.Fatalf("%s -> %s by address alone: %v", n.Name, to.Name, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := testnet.RoundTrip(c, n.Name+" to "+to.Name, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return c
}
