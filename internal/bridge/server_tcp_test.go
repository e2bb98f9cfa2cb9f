package bridge

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// pipeConn is the bridge's end of an in-memory connection that claims to
// come from remote.
type pipeConn struct {
	net.Conn
	remote net.Addr
}

func (c pipeConn) RemoteAddr() net.Addr { return c.remote }

// Connections that have not registered yet count per IPv6 /64: a host
// with a /64 cannot take every slot by using a new address for each.
func TestTCPPendingPerSlash64(t *testing.T) {
	h := newSrvHarness(t, ServerConfig{})
	h.s.firstTimeout = time.Minute // they stay pending for the test
	var clients []net.Conn
	t.Cleanup(func() {
		for _, c := range clients {
			c.Close()
		}
	})
	dial := func(from string) net.Conn {
		client, server := net.Pipe()
		clients = append(clients, client)
		h.s.addConn(pipeConn{Conn: server, remote: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(from))})
		return client
	}
	closed := func(c net.Conn) bool {
		c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		return errors.Is(err, io.EOF)
	}
	a := netip.MustParseAddr("2001:db8:1:2::")
	for range maxPendingPerSource {
		a = a.Next() // a new address for each
		dial(netip.AddrPortFrom(a, 4610).String())
	}
	// Other addresses of the same /64.
	for _, from := range []string{"[2001:db8:1:2::99]:1", "[2001:db8:1:2:ffff:ffff:ffff:ffff]:2"} {
		if c := dial(from); !closed(c) {
			t.Fatalf("a connection from %s, in a /64 with %d pending, was kept", from, maxPendingPerSource)
		}
	}
	// Another /64, and IPv4 addresses each on their own.
	for _, from := range []string{"[2001:db8:1:3::1]:1", "192.0.2.1:1", "192.0.2.2:1"} {
		if c := dial(from); closed(c) {
			t.Fatalf("a connection from %s was closed", from)
		}
	}
	if open := h.s.Stats().TCPConnsOpen; open != maxPendingPerSource+3 {
		t.Fatalf("%d connections open, want %d", open, maxPendingPerSource+3)
	}
}

// A node that registers again, over a new TCP connection or over UDP,
// leaves its old connection: the bridge closes it at once, and the node
// stays registered where it went.
func TestReRegisterClosesOldTCP(t *testing.T) {
	a := testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public()}, TCP: "127.0.0.1:0"})
	expectClosed := func(n *srvNode, what string) {
		t.Helper()
		if f, err := n.recvErr(5 * time.Second); !errors.Is(err, io.EOF) {
			t.Fatalf("%s: old connection not closed: %x %v", what, f, err)
		}
	}
	t1 := h.tcpNode(a)
	id := t1.mustRegister()
	t2 := h.tcpNode(a)
	if got := t2.mustRegister(); got != id {
		t.Fatalf("relay id %d, then %d", id, got)
	}
	expectClosed(t1, "registered over a new connection")
	na := h.udpNode(a)
	na.mustRegister()
	expectClosed(t2, "registered over UDP")
	waitCond(t, "old connections gone", func() bool { return h.s.Stats().TCPConnsOpen == 0 })
	if nodes := h.s.Nodes(); len(nodes) != 1 || nodes[0].Transport != "udp" || nodes[0].Endpoint != na.addr() {
		t.Fatalf("nodes %+v", nodes)
	}
}

func TestTCPFirstFrameMustRegister(t *testing.T) {
	a := testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public()}, TCP: "127.0.0.1:0"})
	expectClosed := func(n *srvNode) {
		t.Helper()
		if f, err := n.recvErr(5 * time.Second); !errors.Is(err, io.EOF) {
			t.Fatalf("connection not closed: %x %v", f, err)
		}
	}
	silent := h.tcpNode(a) // sends nothing
	expectClosed(silent)
	relay := h.tcpNode(a)
	relay.sendRaw(relayFrame(1, "x"))
	expectClosed(relay)
	stranger := h.tcpNode(testKey(t))
	if m := stranger.register(""); m.Kind != wire.KindRefused {
		t.Fatalf("got %s", m.Kind)
	}
	expectClosed(stranger)
	waitCond(t, "connections gone", func() bool { return h.s.Stats().TCPConnsOpen == 0 })
}

// Connections that have not registered yet are limited per address, and
// an over-long first frame is refused.
func TestTCPStrangersAreCheap(t *testing.T) {
	a := testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public()}, TCP: "127.0.0.1:0"})
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range maxPendingPerSource {
		c, err := net.Dial("tcp", h.s.TCPAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	waitCond(t, "pending connections accepted", func() bool { return h.s.Stats().TCPConnsOpen == maxPendingPerSource })
	extra, err := net.Dial("tcp", h.s.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("connection over the per-address limit not closed: %v", err)
	}
	// A first frame longer than any Register: closed without a reply.
	big := conns[0]
	hdr := []byte{0x10, 0x00} // 4096 bytes announced
	big.Write(append(hdr, make([]byte, 4096)...))
	big.SetReadDeadline(time.Now().Add(5 * time.Second))
	// Closed with our bytes unread: EOF or a reset.
	if _, err := big.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("over-long first frame: connection not closed: %v", err)
	}
}

// The bridge listens for TCP with the function it is given
// (ServerConfig.ListenTCP: an in-memory network's, in tests), not with the
// host's sockets, and serves nodes on what it returns.
func TestListenTCPUsesGivenListen(t *testing.T) {
	a := testKey(t)
	var calls []string
	listen := func(network, addr string) (net.Listener, error) {
		calls = append(calls, network+" "+addr)
		return net.Listen("tcp4", "127.0.0.1:0")
	}
	// An address of no interface here (TEST-NET-3): only the given
	// function can listen "there".
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public()}, TCP: "203.0.113.1:4610", ListenTCP: listen})
	if len(calls) != 1 || calls[0] != "tcp 203.0.113.1:4610" {
		t.Fatalf("listen calls %q, want one for tcp 203.0.113.1:4610", calls)
	}
	n := h.tcpNode(a)
	n.mustRegister()
	if st := h.s.Stats(); st.Registered != 1 {
		t.Fatalf("registered over the given listener: %+v", st)
	}
}
