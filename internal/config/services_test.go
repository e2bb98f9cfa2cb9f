package config

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/tomoe-net/tomoe/internal/identity"
)

func TestServicesParse(t *testing.T) {
	doc := `
allowed_local_users = ["0"]
[tun]
ipv4 = "10.99.0.2"
[listen]
stealth = true
[[routes.offer]]
prefix = "192.168.10.0/24"
masquerade = true
[[routes.offer]]
prefix = "::/0"
[[routes.accept]]
from = "*"
prefix = "10.99.0.0/24"
[[expose]]
port = 80
target = "127.0.0.1:8080"
[[expose]]
port = 53
proto = "udp"
target = "127.0.0.1:5353"
[[connect]]
local = "127.0.0.1:18080"
remote = "[fc00::1]:80"
[proxy]
socks5 = "/run/user/1000/tomoe/socks.sock"
http = "127.0.0.1:8118"
users = ["*"]
`
	c, err := Parse([]byte(doc), "c.toml", "/x")
	if err != nil {
		t.Fatal(err)
	}
	if c.IPv4(identity.PublicKey{1}) != netip.MustParseAddr("10.99.0.2") || c.TUN.IPv4Prefix.Prefix != identity.DefaultIPv4Prefix || !c.Listen.Stealth {
		t.Errorf("tun/listen: %+v %+v", c.TUN, c.Listen)
	}
	offers := c.Routes.Offer
	if len(offers) != 2 || !offers[0].Masquerade || offers[1].Prefix.Bits() != 0 {
		t.Errorf("offers %+v", offers)
	}
	if acc := c.Routes.Accept; len(acc) != 1 || !acc[0].From.Any || acc[0].Prefix.String() != "10.99.0.0/24" {
		t.Errorf("accepts %+v", acc)
	}
	if len(c.Expose) != 2 || c.Expose[0].Proto.String() != "tcp" || c.Expose[1].Proto.String() != "udp" {
		t.Errorf("expose %+v", c.Expose)
	}
}

// tun.ipv4 = "auto" derives the address from the key in tun.ipv4_prefix.
func TestIPv4Auto(t *testing.T) {
	k, err := identity.ParsePublicKey("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ doc, want, prefix string }{
		{"[tun]\nipv4 = \"auto\"\n", "100.118.50.184", "100.64.0.0/10"},
		{"[tun]\nipv4 = \"auto\"\nipv4_prefix = \"10.99.0.0/24\"\n", "10.99.0.246", "10.99.0.0/24"},
		{"[tun]\nipv4_prefix = \"10.99.0.0/24\"\n", "invalid IP", "10.99.0.0/24"},
		{"[tun]\nipv4 = \"10.1.2.3\"\nipv4_prefix = \"10.99.0.0/24\"\n", "10.1.2.3", "10.99.0.0/24"},
	} {
		c, err := Parse([]byte(tc.doc), "c.toml", "/x")
		if err != nil {
			t.Fatalf("%s: %v", tc.doc, err)
		}
		if got := c.IPv4(k).String(); got != tc.want || c.TUN.IPv4Prefix.String() != tc.prefix {
			t.Errorf("%s: IPv4 %s in %s, want %s in %s", tc.doc, got, c.TUN.IPv4Prefix, tc.want, tc.prefix)
		}
	}
}

func manyOffers(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "[[routes.offer]]\nprefix = \"10.%d.0.0/16\"\n", i+1)
	}
	return b.String()
}

func TestServicesValidation(t *testing.T) {
	cases := []struct{ doc, key, hint string }{
		{"[tun]\nipv4 = \"10.0.0.1/24\"", "tun.ipv4", "without a prefix length"},
		{"[tun]\nipv4 = \"127.0.0.1\"", "tun.ipv4", "unicast"},
		{"[tun]\nipv4 = \"Auto\"", "tun.ipv4", "\"auto\""},
		{"[tun]\nipv4_prefix = \"\"", "tun.ipv4_prefix", "100.64.0.0/10"},
		{"[tun]\nipv4_prefix = \"fd00::/64\"", "tun.ipv4_prefix", "IPv4 prefix"},
		{"[tun]\nipv4_prefix = \"10.99.0.0/31\"", "tun.ipv4_prefix", "longer than /30"},
		{"[tun]\nipv4_prefix = \"10.99.0.1/24\"", "tun.ipv4_prefix", "10.99.0.0/24"},
		{"[tun]\nipv4_prefix = \"0.0.0.0/0\"", "tun.ipv4_prefix", "overlaps"},
		{"[tun]\nipv4_prefix = \"169.254.0.0/24\"", "tun.ipv4_prefix", "overlaps"},
		{"[tun]\nmode = \"userspace\"\n[listen]\nstealth = true", "listen.stealth", "kernel"},
		{"[[routes.offer]]\nprefix = \"192.168.10.1/24\"", "routes.offer[0].prefix", "192.168.10.0/24"},
		{"[[routes.offer]]\nprefix = \"fc00::/7\"", "routes.offer[0].prefix", "by key"},
		{"[[routes.offer]]\nprefix = \"300::/16\"", "routes.offer[0].prefix", "by key"},
		{"[[routes.offer]]\nprefix = \"lan\"", "routes.offer[0].prefix", "192.168.10.0/24"},
		{"[[routes.offer]]\nprefix = \"10.0.0.0/8\"\n[[routes.offer]]\nprefix = \"10.0.0.0/8\"", "routes.offer[1].prefix", "twice"},
		{"[tun]\nmode = \"userspace\"\n[[routes.offer]]\nprefix = \"10.0.0.0/8\"", "routes.offer[0].prefix", "userspace node cannot forward"},
		{"[tun]\nipv4 = \"10.9.0.1\"\n[[routes.offer]]\nprefix = \"10.9.0.1/32\"", "routes.offer[0].prefix", "offered by itself"},
		{"[[routes.accept]]\nfrom = \"bob\"\nprefix = \"::/0\"", "routes.accept[0].from", "public key"},
		{"[[routes.accept]]\nfrom = \"*\"\nprefix = \"10.0.0.1/8\"", "routes.accept[0].prefix", "10.0.0.0/8"},
		{"[[expose]]\nport = 0\ntarget = \"127.0.0.1:1\"", "expose[0].port", "1..65535"},
		{"[[expose]]\nport = 80\nproto = \"sctp\"\ntarget = \"127.0.0.1:1\"", "expose[0].proto", "udp"},
		{"[[expose]]\nport = 80\ntarget = \"localhost:8080\"", "expose[0].target", "not a host name"},
		{"[[expose]]\nport = 80\ntarget = \"127.0.0.1:1\"\n[[expose]]\nport = 80\ntarget = \"127.0.0.1:2\"", "expose[1].port", "twice"},
		{"[[connect]]\nlocal = \"0.0.0.0:80\"\nremote = \"[fc00::1]:80\"", "connect[0].local", "only loopback"},
		{"[[connect]]\nlocal = \"127.0.0.1:80\"\nremote = \"fc00::1\"", "connect[0].remote", "name:port"},
		{"[[connect]]\nlocal = \"relative.sock\"\nremote = \"[fc00::1]:80\"", "connect[0].local", "absolute"},
		{"[proxy]\nsocks5 = \"127.0.0.1:1080\"\nhttp = \"127.0.0.1:1080\"", "proxy.http", "also used by proxy.socks5"},
		{"[proxy]\nusers = [\"no-such-user-tomoe\"]", "proxy.users", "does not exist"},
		{"allowed_local_users = [\"no-such-user-tomoe\"]", "allowed_local_users", "does not exist"},
		{strings.Repeat("[[routes.offer]]\nprefix = \"10.0.0.0/8\"\n", 1) + manyOffers(48) + "[tun]\nipv4 = \"10.99.0.1\"\n", "routes.offer", "at most 48"},
		{manyOffers(48) + "[tun]\nipv4 = \"auto\"\n", "routes.offer", "at most 48"},
		{"allowed_local_users = [\"0\"]\n[tun]\nmode = \"userspace\"", "allowed_local_users", "proxy.users"},
	}
	for _, tc := range cases {
		_, err := Parse([]byte(tc.doc), "c.toml", "/x")
		if err == nil {
			t.Errorf("accepted:\n%s", tc.doc)
			continue
		}
		if !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("error for %s lacks key or hint %q:\n%v", tc.key, tc.hint, err)
		}
	}
}
