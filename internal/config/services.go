package config

import (
	"fmt"
	"net/netip"
	"os/user"
	"strconv"
	"strings"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// Routes holds the tunnelled routes this node offers and accepts.
type Routes struct {
	// Offer lists prefixes this node forwards into its LAN (or, for
	// 0.0.0.0/0 and ::/0, to the internet: an exit node).
	Offer []RouteOffer `toml:"offer"`
	// Accept lists which offered prefixes this node uses, and from whom.
	Accept []RouteAccept `toml:"accept"`
}

// RouteOffer is one offered prefix.
type RouteOffer struct {
	Prefix RoutePrefix `toml:"prefix"`
	// Masquerade rewrites the source of forwarded traffic to this node's
	// LAN address, so the LAN needs no route back to the overlay.
	Masquerade bool `toml:"masquerade"`
}

// RouteAccept accepts the prefixes a node offers that lie within Prefix.
type RouteAccept struct {
	// From is the offering node: its address, its public key, or "*".
	From   policy.Identity `toml:"from"`
	Prefix RoutePrefix     `toml:"prefix"`
}

// Expose makes a local service reachable at [node address]:Port.
type Expose struct {
	Port   int          `toml:"port"`
	Proto  ServiceProto `toml:"proto"`  // "tcp" (default) or "udp"
	Target Target       `toml:"target"` // "127.0.0.1:8080": where the service listens
}

// Connect is a local port forward into the overlay.
type Connect struct {
	// Local is a loopback "IP:PORT" or an absolute Unix socket path.
	Local LocalAddr `toml:"local"`
	// Remote is "[address]:port" or "name:port" (a peer's name).
	Remote Remote `toml:"remote"`
}

// Proxy configures the local SOCKS5 and HTTP CONNECT proxies into the overlay.
type Proxy struct {
	// SOCKS5 and HTTP are a loopback "IP:PORT" or an absolute Unix socket
	// path; empty: off.
	SOCKS5 LocalAddr `toml:"socks5"`
	HTTP   LocalAddr `toml:"http"`
	// Users may also use loopback listeners (proxies and connects); the user
	// running the node always may. "*" lets every local user in.
	Users []string `toml:"users"`
}

// IPv4 returns the node's overlay IPv4 address: tun.ipv4, or with "auto"
// the address of pub in tun.ipv4_prefix; invalid when unset. (IPv4Address
// cannot fail: an IPv4Prefix is one it accepts.)
func (c *Config) IPv4(pub identity.PublicKey) netip.Addr {
	if c.TUN.IPv4.Auto {
		a, _ := pub.IPv4Address(c.TUN.IPv4Prefix.Prefix)
		return a
	}
	return c.TUN.IPv4.Addr
}

// notIPv4Space are the IPv4 ranges no overlay address may come from.
var notIPv4Space = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"), netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"), netip.MustParsePrefix("240.0.0.0/4"),
}

// ParseIPv4Prefix parses a prefix IPv4 addresses can be derived in: IPv4,
// at most identity.MaxIPv4PrefixBits long, no host bits, and clear of
// this network, loopback, link-local, multicast and reserved space.
func ParseIPv4Prefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%q: want an IPv4 prefix such as %q", s, identity.DefaultIPv4Prefix.String())
	}
	if err := identity.CheckIPv4Prefix(p); err != nil {
		return netip.Prefix{}, err
	}
	for _, bad := range notIPv4Space {
		if p.Overlaps(bad) {
			return netip.Prefix{}, fmt.Errorf("%s overlaps %s, which holds no unicast addresses a node can use", p, bad)
		}
	}
	return p, nil
}

// Offer is an offered route as the node holds it: from routes.offer, or
// made through the admin API.
type Offer struct {
	Prefix     netip.Prefix
	Masquerade bool
}

// ParseRoutePrefix parses a prefix that may be tunnelled: canonical (no host
// bits), and outside the overlay's own spaces, which route by key.
func ParseRoutePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q: want a prefix such as \"192.168.10.0/24\", \"10.99.0.7/32\" or \"0.0.0.0/0\"", s)
	}
	if p.Addr().Zone() != "" || p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q: write IPv4 prefixes in plain IPv4 form, without a zone", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set: did you mean %q?", s, m.String())
	}
	if p.Bits() > 0 {
		for _, own := range []netip.Prefix{identity.OverlayPrefix, identity.SitePrefixSpace} {
			if p.Overlaps(own) {
				return netip.Prefix{}, fmt.Errorf("%q overlaps %s, which tomoe routes by key already (node addresses and site prefixes need no route)", s, own)
			}
		}
		a := p.Addr()
		if a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || (a.Is6() && p.Overlaps(netip.MustParsePrefix("fe80::/10"))) {
			return netip.Prefix{}, fmt.Errorf("%q: loopback, link-local and multicast prefixes cannot be tunnelled", s)
		}
	}
	return p, nil
}

// MaxOffers is how many routes a node may offer (offers.MaxRoutes; the
// offer has to fit one packet).
const MaxOffers = 48

// LookupUsers turns user names or numeric uids into uids.
func LookupUsers(names []string) ([]uint32, error) {
	var out []uint32
	for _, n := range names {
		n = strings.TrimSpace(n)
		if id, err := strconv.ParseUint(n, 10, 32); err == nil {
			out = append(out, uint32(id))
			continue
		}
		u, err := user.Lookup(n)
		if err != nil {
			return nil, fmt.Errorf("user %q does not exist (give a user name or a numeric uid)", n)
		}
		id, err := strconv.ParseUint(u.Uid, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("user %q has uid %q, not a number", n, u.Uid)
		}
		out = append(out, uint32(id))
	}
	return out, nil
}

// validateServices checks the rules between tun.ipv4, tun.mode, routes,
// expose, connect, proxy and allowed_local_users, and the users they name.
func (c *Config) validateServices(bad func(key, format string, args ...any)) {
	kernel := c.TUN.Mode == ModeKernel
	if c.Listen.Stealth && !kernel {
		bad("listen.stealth", "needs tun.mode = \"kernel\" (it installs nftables rules); a userspace node opens no port but listen.udp anyway")
	}

	offered := map[netip.Prefix]int{}
	for i, o := range c.Routes.Offer {
		key := fmt.Sprintf("routes.offer[%d].prefix", i)
		p := o.Prefix.Prefix
		if !p.IsValid() {
			bad(key, "missing: a prefix such as \"192.168.10.0/24\", \"10.99.0.7/32\" or \"0.0.0.0/0\"")
			continue
		}
		if j, dup := offered[p]; dup {
			bad(key, "%s is offered twice (also routes.offer[%d])", p, j)
		}
		offered[p] = i
		if v4 := c.TUN.IPv4.Addr; v4.IsValid() && p == netip.PrefixFrom(v4, 32) {
			bad(key, "%s is tun.ipv4, which is offered by itself: remove this entry", p)
		}
		if !kernel {
			bad(key, "offering a route needs tun.mode = \"kernel\": a userspace node cannot forward into its LAN")
		}
	}
	if n := len(c.Routes.Offer); n > MaxOffers || (n == MaxOffers && c.TUN.IPv4.IsSet()) {
		bad("routes.offer", "%d routes (tun.ipv4 counts as one more): one offer carries at most %d; offer shorter prefixes that cover several", n, MaxOffers)
	}
	for i, a := range c.Routes.Accept {
		key := fmt.Sprintf("routes.accept[%d]", i)
		if a.From.IsZero() {
			bad(key+".from", "missing: the offering node's address (fc..), its public key (base64), or \"*\"")
		}
		if a.From.ByCert() {
			bad(key+".from", "%s: group:/org:/name: identities are only for policy rules; give the offering node's address (fc..), its public key (base64), or \"*\"", a.From)
		}
		if !a.Prefix.IsValid() {
			bad(key+".prefix", "missing: the prefix to take routes within, e.g. \"192.168.10.0/24\" or \"0.0.0.0/0\"")
		}
	}

	exposed := map[string]int{}
	for i, e := range c.Expose {
		key := fmt.Sprintf("expose[%d]", i)
		if e.Port < 1 || e.Port > 65535 {
			bad(key+".port", "%d: the overlay port, 1..65535", e.Port)
		}
		id := e.Proto.String() + "/" + strconv.Itoa(e.Port)
		if j, dup := exposed[id]; dup {
			bad(key+".port", "%s is exposed twice (also expose[%d])", id, j)
		}
		exposed[id] = i
		if !e.Target.IsValid() {
			bad(key+".target", "missing: where the service listens, e.g. \"127.0.0.1:8080\"")
		}
	}
	locals := map[LocalAddr]string{}
	use := func(key string, l LocalAddr) {
		if other, dup := locals[l]; dup {
			bad(key, "%q is also used by %s", l, other)
		}
		locals[l] = key
	}
	for i, cn := range c.Connect {
		key := fmt.Sprintf("connect[%d]", i)
		if !cn.Local.IsSet() {
			bad(key+".local", "missing: a loopback \"127.0.0.1:PORT\" or a Unix socket path to listen on")
		} else {
			use(key+".local", cn.Local)
		}
		if !cn.Remote.IsValid() {
			bad(key+".remote", "missing: the overlay service, e.g. \"[fc12:3456::1]:80\" or \"name:80\" (a peer's name)")
		}
	}
	if c.Proxy.SOCKS5.IsSet() {
		use("proxy.socks5", c.Proxy.SOCKS5)
	}
	if c.Proxy.HTTP.IsSet() {
		use("proxy.http", c.Proxy.HTTP)
	}
	for _, u := range c.Proxy.Users {
		if u == "*" {
			continue
		}
		if _, err := LookupUsers([]string{u}); err != nil {
			bad("proxy.users", "%v", err)
		}
	}
	if len(c.AllowedLocalUsers) > 0 {
		if !kernel {
			bad("allowed_local_users", "needs tun.mode = \"kernel\"; a userspace node is reachable only through its proxies: restrict those with proxy.users")
		}
		if _, err := LookupUsers(c.AllowedLocalUsers); err != nil {
			bad("allowed_local_users", "%v", err)
		}
	}
}
