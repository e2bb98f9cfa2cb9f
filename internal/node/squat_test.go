package node

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// Two private keys whose public keys derive the same IPv4 address in
// 100.64.0.0/10, 100.113.98.92 (found by trying 2,535 random keys; checked
// with Python's hashlib).
const (
	collidingKey1 = "2GD54zFkBnE1K7qIqqweuZToyL1VoKNmY3GlmdKQR1k="
	collidingKey2 = "aDcrfkYtlGsB06SdugShKENRVfEKLCtMEhuEI75Of0w="
	collidingIPv4 = "100.113.98.92"
)

// prepareKey is prepare with a given private key.
func prepareKey(t *testing.T, name, priv string) *testNode {
	t.Helper()
	tn := prepare(t, name)
	k, err := identity.ParsePrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tn.dir, "node.key"), []byte(k.Base64()), 0o600); err != nil {
		t.Fatal(err)
	}
	tn.key = k
	return tn
}

// derived is the IPv4 address tn's key derives in the default prefix.
func (tn *testNode) derived(t *testing.T) string {
	t.Helper()
	a, err := tn.key.Public().IPv4Address(identity.DefaultIPv4Prefix)
	if err != nil {
		t.Fatal(err)
	}
	return a.String()
}

// learned returns the state of prefix as offered by from, as tomoe routes
// shows it on tn ("" if tn has not learnt it).
func (tn *testNode) learned(from *testNode, prefix string) adminapi.LearnedRoute {
	r, _ := tn.RoutesArea().Routes(context.Background())
	for _, l := range r.Learned {
		if l.Peer == from.key.Public().String() && l.Prefix == prefix {
			return l
		}
	}
	return adminapi.LearnedRoute{}
}

func (tn *testNode) waitLearned(t *testing.T, from *testNode, prefix, state string) {
	t.Helper()
	testnet.WaitFor(t, 10*time.Second, tn.name+" shows "+prefix+" from "+from.name+" "+state, func() bool {
		return tn.learned(from, prefix).State == state
	})
}

// A "*" accept rule takes an offered /32 only if it is the offering key's
// derived address: a client cannot squat another's address, whichever
// offer came first; an explicit address needs a rule naming the key.
func TestWildcardAcceptTakesOnlyDerivedIPv4(t *testing.T) {
	g, x, y := prepare(t, "g"), prepare(t, "x"), prepare(t, "y")
	x.ipv4 = x.derived(t)
	y.ipv4 = x.derived(t) // y claims x's address
	free := "100.64.0.7"
	if free == x.derived(t) || free == y.derived(t) {
		t.Skip("a key derived 100.64.0.7")
	}
	g.start(t, acceptDoc("*", "100.64.0.0/10")+allowDoc(x.key.Public().String(), "icmp", "")+allowDoc(y.key.Public().String(), "icmp", ""))
	// y first: under arrival order it would keep the address.
	y.start(t, peerDoc(g)+acceptDoc(g.Address().String(), "100.64.0.0/10"))
	g.waitLearned(t, y, x.ipv4+"/32", "not_accepted")
	x.start(t, peerDoc(g)+acceptDoc(g.Address().String(), "100.64.0.0/10"))
	g.waitLearned(t, x, x.ipv4+"/32", "installed")
	if l := g.learned(y, x.ipv4+"/32"); l.State != "not_accepted" || l.Reason != "not_own_address" {
		t.Errorf("y's claim of x's address: %+v", l)
	}

	// An explicit address: not through "*", through a rule naming y.
	y.Close()
	y.ipv4 = free
	y.start(t, peerDoc(g)+acceptDoc(g.Address().String(), "100.64.0.0/10"))
	g.waitLearned(t, y, free+"/32", "not_accepted")
	if _, err := g.RoutesArea().ChangeRoutes(context.Background(), adminapi.RouteChange{Op: adminapi.RouteAccept, From: y.key.Public().String(), Prefix: free + "/32"}); err != nil {
		t.Fatal(err)
	}
	g.waitLearned(t, y, free+"/32", "installed")
	if s := g.learned(x, x.ipv4+"/32").State; s != "installed" {
		t.Errorf("x's own address after y's change: %s", s)
	}
}

// Two keys that derive the same address: each reports the other (state
// conflict and a log line naming the other key), and a third node that
// hears the address from both installs neither, whatever the order; when
// one goes, the other's is installed.
func TestDerivedIPv4Collision(t *testing.T) {
	a, b, z := prepareKey(t, "a", collidingKey1), prepareKey(t, "b", collidingKey2), prepare(t, "z")
	if a.derived(t) != collidingIPv4 || b.derived(t) != collidingIPv4 {
		t.Fatalf("the keys derive %s and %s, want %s", a.derived(t), b.derived(t), collidingIPv4)
	}
	a.ipv4, b.ipv4 = collidingIPv4, collidingIPv4
	self := collidingIPv4 + "/32"
	z.start(t, acceptDoc("*", "100.64.0.0/10")+allowDoc(a.key.Public().String(), "icmp", "")+allowDoc(b.key.Public().String(), "icmp", ""))
	a.start(t, peerDoc(z)+acceptDoc(z.Address().String(), "100.64.0.0/10")+acceptDoc("*", "100.64.0.0/10")+allowDoc(b.key.Public().String(), "icmp", ""))
	z.waitLearned(t, a, self, "installed")
	b.start(t, peerDoc(z)+peerDoc(a)+acceptDoc(z.Address().String(), "100.64.0.0/10")+acceptDoc("*", "100.64.0.0/10")+allowDoc(a.key.Public().String(), "icmp", ""))

	z.waitLearned(t, b, self, "conflict")
	if s := z.learned(a, self).State; s != "conflict" {
		t.Errorf("z keeps the first offer of a colliding address: %s", s)
	}
	// b asks a for its offer (a rule names "*", and a greets b once a
	// session is up): each sees the other offer its own address.
	if _, err := b.StatusArea().Ping(context.Background(), adminapi.PingRequest{Address: a.Address().String()}); err != nil {
		t.Fatalf("b pings a: %v", err)
	}
	a.waitLearned(t, b, self, "conflict")
	b.waitLearned(t, a, self, "conflict")
	for _, c := range []struct{ at, other *testNode }{{a, b}, {b, a}, {z, a}, {z, b}} {
		l, reason := c.at.learned(c.other, self), "address_collision"
		if c.at != z {
			reason = "own_address" // the other offers this node's own address
		}
		if l.Reason != reason || (c.at == z && (len(l.ConflictsWith) != 1 || l.ConflictsWith[0] == c.other.key.Public().String())) {
			t.Errorf("%s shows %s's offer as %+v, want reason %s", c.at.name, c.other.name, l, reason)
		}
		if _, ok := c.at.logs.find(c.other.key.Public().String(), self); !ok {
			t.Errorf("%s logged no line naming %s's key and %s", c.at.name, c.other.name, self)
		}
	}

	b.Close()
	z.waitLearned(t, a, self, "installed")
}

// A tun.ipv4 = "auto" node has its derived address, offers it, and a "*"
// rule accepts it.
func TestIPv4AutoOffered(t *testing.T) {
	g, x := prepare(t, "g"), prepare(t, "x")
	g.ipv4, x.ipv4 = "auto", "auto"
	g.start(t, acceptDoc("*", "100.64.0.0/10")+allowDoc(x.key.Public().String(), "icmp", ""))
	x.start(t, peerDoc(g)+acceptDoc(g.Address().String(), "100.64.0.0/10")+allowDoc(g.key.Public().String(), "tcp", "7"))
	want := netip.MustParseAddr(x.derived(t))
	if st, err := x.StatusArea().Status(context.Background()); err != nil || st.IPv4 != want.String() {
		t.Errorf("status shows ipv4 %q (%v), want %s", st.IPv4, err, want)
	}
	x.echo4(t, want.String(), 7)
	g.waitLearned(t, x, want.String()+"/32", "installed")
	testnet.WaitFor(t, 10*time.Second, "g reaches x at its derived address", func() bool {
		return echoOnce(g, want.String()+":7", 2*time.Second) == nil
	})
}

// The proxies and port forwards refuse destinations that are no overlay
// destination: loopback, link-local (169.254.169.254 among them), the IPv6
// metadata service, multicast.
func TestProxiesRefuseLocalDestinations(t *testing.T) {
	g := prepare(t, "g")
	g.start(t, "")
	for _, dst := range []string{"127.0.0.1:80", "169.254.169.254:80", "[fd00:ec2::254]:80", "[::1]:80", "[ff02::1]:80", "[::ffff:127.0.0.1]:80"} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := g.dialOverlay(ctx, "tcp", dst)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "not an overlay destination") {
			t.Errorf("dial %s through the proxies: %v", dst, err)
		}
	}
}
