package node

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/packet"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// udpEcho answers every datagram to port on the node's address with the
// same payload, and counts what it received.
type udpEcho struct {
	received atomic.Uint64
	answered atomic.Uint64

	mu  sync.Mutex // guards got
	got []string
}

func (tn *testNode) udpEcho(t *testing.T, port uint16) *udpEcho {
	t.Helper()
	pc, err := tn.Stack().ListenUDP(netip.AddrPortFrom(tn.Address(), port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	e := &udpEcho{}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			e.received.Add(1)
			e.mu.Lock()
			e.got = append(e.got, string(buf[:n]))
			e.mu.Unlock()
			if _, err := pc.WriteTo(buf[:n], from); err == nil {
				e.answered.Add(1)
			}
		}
	}()
	return e
}

// seen returns how many received datagrams contained s.
func (e *udpEcho) seen(s string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := 0
	for _, g := range e.got {
		if strings.Contains(g, s) {
			c++
		}
	}
	return c
}

// After `policy revoke bob`, with a "*" rule for something else still
// admitting bob, bob's UDP flow that alice had been answering no longer
// passes: alice cut bob's session, bob came straight back through a new
// handshake (the "*" rule admits him), and his datagrams on the old flow
// are denied. The remaining rule applies to his new traffic.
func TestRevokeStopsUDPFlowWhileAnotherRuleAdmits(t *testing.T) {
	alice, bob := prepare(t, "alice"), prepare(t, "bob")
	alice.start(t, allowDoc(bob.key.Public().String(), "udp", "9")+allowDoc("*", "tcp", "443"))
	bob.start(t, peerDoc(alice))
	echo := alice.udpEcho(t, 9)
	alice.echoServer(t, 443)
	ctx := context.Background()

	c, err := bob.DialContext(ctx, "udp6", netip.AddrPortFrom(alice.Address(), 9).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := testnet.RoundTrip(c, "before", 5*time.Second); err != nil {
		t.Fatalf("bob's UDP flow under his rule: %v", err)
	}

	resp, err := alice.Revoke(ctx, adminapi.RevokeRequest{From: bob.key.Public().String()})
	if err != nil {
		t.Fatal(err)
	}
	// A peer that wants back in does not wait for WireGuard's 15 s retry:
	// bob drops his old session, so his next datagram starts a handshake.
	bob.mu.Lock()
	bob.deactivateLocked(bob.peers[alice.key.Public()], "test: new session at once")
	bob.mu.Unlock()
	answers := make(chan string, 64)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			answers <- string(buf[:n])
		}
	}()
	denied := alice.filter.Denied(bob.Address())
	testnet.WaitFor(t, 10*time.Second, "alice denying bob's datagrams on his old flow", func() bool {
		c.Write([]byte("after\n"))
		return alice.filter.Denied(bob.Address()) > denied
	})
	// The remaining rule admits bob's new traffic.
	tc, err := bob.dial(alice.Address(), 443, 5*time.Second)
	if err != nil {
		t.Fatalf("bob -> alice:443 under the remaining rule: %v", err)
	}
	defer tc.Close()
	if err := testnet.RoundTrip(tc, "still allowed", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	denied = alice.filter.Denied(bob.Address())
	testnet.WaitFor(t, 5*time.Second, "alice denying bob's old flow again", func() bool {
		c.Write([]byte("after\n"))
		return alice.filter.Denied(bob.Address()) > denied
	})
	if len(resp.PeersCut) != 1 || resp.PeersCut[0] != bob.key.Public().String() {
		t.Fatalf("revoke cut %v, want bob's session although \"*\" still admits him", resp.PeersCut)
	}
	bobEnd := c.LocalAddr().(*net.UDPAddr).AddrPort()
	answer := packet.Flow{Proto: packet.ProtoUDP, Src: alice.Address(), Dst: bob.Address(), SrcPort: 9, DstPort: bobEnd.Port()}
	if alice.filter.Conntrack().Related(answer, time.Now().UnixNano()) {
		t.Fatal("alice tracks bob's UDP flow as one she opened: her answers opened it")
	}
	if n := echo.seen("after"); n != 0 {
		t.Fatalf("alice's UDP service received %d datagrams of bob's after the revoke", n)
	}
	select {
	case a := <-answers:
		t.Fatalf("bob got an answer after the revoke: %q", a)
	default:
	}
}
