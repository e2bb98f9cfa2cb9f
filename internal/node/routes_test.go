package node

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/offers"

	"github.com/tomoe-net/tomoe/internal/routeplan"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

func acceptDoc(from, prefix string) string {
	return fmt.Sprintf("[[routes.accept]]\nfrom = %q\nprefix = %q\n", from, prefix)
}

// echo4 serves an echo on the node's tun.ipv4.
func (tn *testNode) echo4(t *testing.T, addr string, port uint16) {
	t.Helper()
	ln, err := tn.Stack().ListenTCP(netip.AddrPortFrom(netip.MustParseAddr(addr), port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go testnet.Echo(ln)
}

func echoOnce(tn *testNode, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := tn.DialContext(ctx, "tcp4", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	fmt.Fprintln(c, "hello")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "hello\n" {
		return fmt.Errorf("echo %q", line)
	}
	return nil
}

// Two userspace nodes with IPv4 addresses: each offers its /32, each
// accepts the other's, and IPv4 flows between them follow the policy. A
// node that does not accept the route has no IPv4 way to the peer, and a
// node that stops withdraws its route live.
func TestIPv4RouteOfferAndAccept(t *testing.T) {
	g, r, m := prepare(t, "g"), prepare(t, "r"), prepare(t, "m")
	g.ipv4, r.ipv4, m.ipv4 = "auto", "auto", "auto"
	gv4, rv4 := g.derived(t), r.derived(t)
	g.start(t, acceptDoc("*", "100.64.0.0/10")+allowDoc(r.key.Public().String(), "tcp", "7")+allowDoc(m.key.Public().String(), "tcp", "7"))
	r.start(t, acceptDoc(g.Address().String(), "100.64.0.0/10")+allowDoc(g.key.Public().String(), "tcp", "7")+peerDoc(g))
	m.start(t, peerDoc(g)) // accepts nothing
	g.echo4(t, gv4, 7)
	r.echo4(t, rv4, 7)

	// r asks g for its offer at start; g learns r's /32 when they greet.
	testnet.WaitFor(t, 10*time.Second, "r reaches g over IPv4", func() bool { return echoOnce(r, gv4+":7", 2*time.Second) == nil })
	testnet.WaitFor(t, 10*time.Second, "g reaches r over IPv4", func() bool { return echoOnce(g, rv4+":7", 2*time.Second) == nil })

	// m accepts nothing: no IPv4 route to g, refused at once.
	start := time.Now()
	if err := echoOnce(m, gv4+":7", 3*time.Second); err == nil {
		t.Fatal("m reached g's IPv4 address without accepting its route")
	} else if time.Since(start) > 2*time.Second {
		t.Errorf("refusal took %v: %v", time.Since(start), err)
	}
	// Even with a session up (m pings g over IPv6), g does not install m's
	// /32 unless... it does: g accepts * within 100.64.0.0/10. Then m's
	// IPv4 source is accepted at g, but m still has no route to g.
	if _, err := m.dial(g.Address(), 7, 3*time.Second); err == nil {
		t.Fatal("m is not allowed to tcp/7 on g over IPv6")
	}

	// r stops: g removes r's route live.
	r.Close()
	testnet.WaitFor(t, 5*time.Second, "g drops r's route", func() bool {
		_, ok := g.routes.Installed(netip.MustParsePrefix(rv4 + "/32"))
		return !ok
	})
	if err := echoOnce(g, rv4+":7", 2*time.Second); err == nil {
		t.Fatal("g still reaches r's withdrawn route")
	}
}

// A service that listens only on loopback, exposed on g's overlay address,
// reached from r through a local port forward and through r's SOCKS5 proxy
// by g's name; a node the policy does not allow is refused.
func TestExposeAndLocalAccess(t *testing.T) {
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	go testnet.Echo(target)
	fwd, socks := freePort(t), freePort(t)

	g, r, m := prepare(t, "g"), prepare(t, "r"), prepare(t, "m")
	g.start(t, fmt.Sprintf("[[expose]]\nport = 80\ntarget = %q\n", target.Addr().String())+allowDoc(r.key.Public().String(), "tcp", "80"))
	r.start(t, peerDoc(g)+fmt.Sprintf("[[connect]]\nlocal = \"127.0.0.1:%d\"\nremote = \"[%s]:80\"\n[proxy]\nsocks5 = \"127.0.0.1:%d\"\n", fwd, g.Address(), socks))
	m.start(t, peerDoc(g))

	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", fwd), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := testnet.RoundTrip(c, "through the port forward", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	c.Close()

	d, err := proxy.SOCKS5("tcp", fmt.Sprintf("127.0.0.1:%d", socks), nil, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	c, err = d.Dial("tcp", "g.tomoe:80")
	if err != nil {
		t.Fatalf("SOCKS5 to g.tomoe:80: %v", err)
	}
	if err := testnet.RoundTrip(c, "through SOCKS5 by name", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	c.Close()

	if _, err := m.dial(g.Address(), 80, 3*time.Second); err == nil {
		t.Fatal("m reached the exposed service; g's policy does not allow it")
	}
	st, err := g.ServicesArea().Services(context.Background())
	if err != nil || len(st.Expose) != 1 || st.Expose[0].Total < 2 {
		t.Errorf("services status: %+v %v", st, err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Route and expose changes made through the API survive a restart, over
// the config file's entries.
func TestAPIChangesPersist(t *testing.T) {
	g := prepare(t, "g")
	g.ipv4 = "10.99.0.1"
	doc := "[[expose]]\nport = 80\ntarget = \"127.0.0.1:8080\"\n" + acceptDoc("*", "10.99.0.0/24")
	g.start(t, doc)
	ctx := context.Background()
	mustNil := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	mustNil(g.ServicesArea().ChangeExpose(ctx, adminapi.ExposeChange{Proto: "udp", Port: 53, Target: "127.0.0.1:5353"}))
	mustNil(g.ServicesArea().ChangeExpose(ctx, adminapi.ExposeChange{Remove: true, Proto: "tcp", Port: 80}))
	mustNil(g.RoutesArea().ChangeRoutes(ctx, adminapi.RouteChange{Op: adminapi.RouteAccept, From: "*", Prefix: "192.168.0.0/16"}))
	mustNil(g.RoutesArea().ChangeRoutes(ctx, adminapi.RouteChange{Op: adminapi.RouteUnaccept, From: "*", Prefix: "10.99.0.0/24"}))
	if _, err := g.RoutesArea().ChangeRoutes(ctx, adminapi.RouteChange{Op: adminapi.RouteOffer, Prefix: "10.0.0.0/8"}); err == nil {
		t.Error("a userspace node accepted an offer")
	}
	st, err := os.Stat(filepath.Join(g.dir, "services.json"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("services.json: %v %v", st, err)
	}
	g.Close()

	g.start(t, doc)
	sv, _ := g.ServicesArea().Services(ctx)
	if len(sv.Expose) != 1 || sv.Expose[0].Proto != "udp" || sv.Expose[0].Port != 53 {
		t.Errorf("after restart, exposed: %+v", sv.Expose)
	}
	r, _ := g.RoutesArea().Routes(ctx)
	if len(r.Accept) != 1 || r.Accept[0].Prefix != "192.168.0.0/16" {
		t.Errorf("after restart, accept rules: %+v", r.Accept)
	}
	// The API brings back what the file has and the state removed.
	mustNil(g.ServicesArea().ChangeExpose(ctx, adminapi.ExposeChange{Proto: "tcp", Port: 80, Target: "127.0.0.1:8080"}))
	g.Close()
	g.start(t, doc)
	if sv, _ := g.ServicesArea().Services(ctx); len(sv.Expose) != 2 {
		t.Errorf("after a second restart, exposed: %+v", sv.Expose)
	}
}

func TestOfferLimitsAgree(t *testing.T) {
	if offers.MaxRoutes != config.MaxOffers {
		t.Fatalf("offers.MaxRoutes %d != config.MaxOffers %d", offers.MaxRoutes, config.MaxOffers)
	}
}

// A "*" accept rule accepts routes only from peers the policy lets in: a
// peer this node merely talked to (here one it pinged) cannot claim an
// address in the accepted range.
func TestWildcardAcceptNeedsPolicy(t *testing.T) {
	g, x := prepare(t, "g"), prepare(t, "x")
	x.ipv4 = "auto"
	x.start(t, allowDoc(g.key.Public().String(), "icmp", ""))
	g.start(t, acceptDoc("*", "100.64.0.0/10")+peerDoc(x))
	if _, err := g.StatusArea().Ping(context.Background(), adminapi.PingRequest{Address: x.Address().String()}); err != nil {
		t.Fatalf("g pings x: %v", err)
	}
	testnet.WaitFor(t, 10*time.Second, "g hears x's offer", func() bool {
		r, _ := g.RoutesArea().Routes(context.Background())
		return len(r.Learned) == 1
	})
	r, _ := g.RoutesArea().Routes(context.Background())
	if l := r.Learned[0]; l.Prefix != x.derived(t)+"/32" || l.State != "not_accepted" || l.Reason != "policy" {
		t.Fatalf("g installed the /32 of a peer its policy does not let in: %+v", r.Learned)
	}
	// Once the policy lets x in, the "*" rule applies.
	if _, err := g.PolicyArea().Allow(context.Background(), adminapi.AllowRequest{From: x.Address().String(), Proto: "icmp"}); err != nil {
		t.Fatal(err)
	}
	r, _ = g.RoutesArea().Routes(context.Background())
	if r.Learned[0].State != "installed" {
		t.Fatalf("after allow: %+v", r.Learned)
	}
}

// A peer whose offer changes too often is ignored for a while.
func TestOfferChurnIsLimited(t *testing.T) {
	g, x := prepare(t, "g"), prepare(t, "x")
	x.start(t, allowDoc(g.key.Public().String(), "icmp", ""))
	g.start(t, acceptDoc("*", "10.0.0.0/8")+peerDoc(x)+allowDoc(x.key.Public().String(), "icmp", ""))
	if _, err := g.StatusArea().Ping(context.Background(), adminapi.PingRequest{Address: x.Address().String()}); err != nil {
		t.Fatal(err)
	}
	for i := range routeplan.MaxChanges + 5 {
		pr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i + 1), 0, 0}), 16)
		g.routes.HandleControl(x.Address(), offers.Message{Type: offers.TypeOffer, Boot: 1, Seq: uint32(i), Routes: []netip.Prefix{pr}})
	}
	r, _ := g.RoutesArea().Routes(context.Background())
	if len(r.Learned) != 1 || r.Learned[0].Prefix != fmt.Sprintf("10.%d.0.0/16", routeplan.MaxChanges) {
		t.Fatalf("after %d changes: %+v", routeplan.MaxChanges+5, r.Learned)
	}
}
