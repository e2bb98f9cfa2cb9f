package node

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/packet"
	"github.com/tomoe-net/tomoe/internal/policy"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// stockPeer is a plain wireguard-go device with key k and to as its only
// peer (for all of fc00::/8): it sends whatever packets a test writes to
// Outbound, with no tomoe filter on its side. What to sends back is read
// and discarded.
func stockPeer(t *testing.T, k identity.PrivateKey, to *testNode) *tuntest.ChannelTUN {
	t.Helper()
	ch := tuntest.NewChannelTUN()
	dev := device.NewDevice(ch.TUN(), conn.NewStdNetBind(), device.NewLogger(device.LogLevelSilent, ""))
	done := make(chan struct{})
	t.Cleanup(func() {
		close(done)
		dev.Close() // unblocks a Write to Inbound
	})
	raw, pub := k.Raw(), to.key.Public()
	cfg := fmt.Sprintf("private_key=%x\nlisten_port=0\npublic_key=%x\nendpoint=%s\nallowed_ip=fc00::/8\n", raw[:], pub[:], to.endpoint())
	if err := dev.IpcSet(cfg); err != nil {
		t.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			select {
			case <-ch.Inbound:
			case <-done:
				return
			}
		}
	}()
	return ch
}

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

	resp, err := alice.PolicyArea().Revoke(ctx, adminapi.RevokeRequest{From: bob.key.Public().String()})
	if err != nil {
		t.Fatal(err)
	}
	// A peer that wants back in does not wait for WireGuard's 15 s retry:
	// bob drops his old session, so his next datagram starts a handshake.
	bob.peers.Lock()
	bob.deactivateLocked(bob.peers.Get(alice.key.Public()), "test: new session at once")
	bob.peers.Unlock()
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

// One allowed peer opening far more UDP flows than the table holds, each
// one answered by a service on alice, cannot stop alice from opening her
// own flows. The table is shrunk to 256 so that the flood is short.
func TestUDPFloodCannotFillFlowTable(t *testing.T) {
	alice, bob := prepare(t, "alice"), prepare(t, "bob")
	evilKey := newKey(t)
	const tableMax = 256
	alice.ctMax = tableMax
	bob.start(t, allowDoc(alice.key.Public().String(), "tcp", "7"))
	bob.echoServer(t, 7)
	alice.start(t, allowDoc("*", "udp", "9")+peerDoc(bob))
	echo := alice.udpEcho(t, 9)
	evil := stockPeer(t, evilKey, alice)
	evilAddr := evilKey.Public().Address()

	judged := func() uint64 { // flood datagrams delivered or dropped
		return echo.received.Load() + alice.filter.Denied(evilAddr)
	}
	// Bursts of 32 new flows, each waited for, so that no queue on the
	// way overflows; 4 tables' worth in all.
	const flows, burst = 4 * tableMax, 32
	for sent := 0; sent < flows; {
		for range burst {
			evil.Outbound <- packet.UDP(evilAddr, alice.Address(), uint16(10000+sent), 9, []byte("flood"))
			sent++
		}
		testnet.WaitFor(t, 5*time.Second, fmt.Sprintf("alice judging %d flood datagrams", sent), func() bool {
			return judged() >= uint64(sent)
		})
	}
	ws := alice.Wrapper().Stats()
	testnet.WaitFor(t, 5*time.Second, "alice's answers through her filter", func() bool {
		return ws.OutPackets.Load()+ws.Dropped[policy.DropTableFull].Load() >= echo.answered.Load()
	})
	t.Logf("alice's service received %d flood datagrams; %d flows tracked", echo.received.Load(), alice.filter.Conntrack().Len())
	_, _, perOwner := alice.filter.Conntrack().Limits()
	if n := alice.filter.Conntrack().OpenedBy(evilAddr); n == 0 || n > perOwner {
		t.Fatalf("%d flows charged to the flooding peer, want 1..%d", n, perOwner)
	}
	st, err := alice.StatusArea().Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Counters.FlowQuota == 0 || st.Counters.RemoteFlows > perOwner || st.Counters.TableFull != 0 {
		t.Fatalf("counters after the flood: %+v", st.Counters)
	}

	c, err := alice.dial(bob.Address(), 7, 5*time.Second)
	if err != nil {
		t.Fatalf("alice -> bob:7 after the flood: %v", err)
	}
	defer c.Close()
	if err := testnet.RoundTrip(c, "mine", 3*time.Second); err != nil {
		t.Fatal(err)
	}
}
