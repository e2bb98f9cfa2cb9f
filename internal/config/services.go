package config

import (
	"fmt"
	"net"
	"net/netip"
	"os/user"
	"path/filepath"
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
	Prefix string `toml:"prefix"`
	// Masquerade rewrites the source of forwarded traffic to this node's
	// LAN address, so the LAN needs no route back to the overlay.
	Masquerade bool `toml:"masquerade"`
}

// RouteAccept accepts the prefixes a node offers that lie within Prefix.
type RouteAccept struct {
	// From is the offering node: its address, its public key, or "*".
	From   string `toml:"from"`
	Prefix string `toml:"prefix"`
}

// Expose makes a local service reachable at [node address]:Port.
type Expose struct {
	Port   int    `toml:"port"`
	Proto  string `toml:"proto"`  // "tcp" (default) or "udp"
	Target string `toml:"target"` // "127.0.0.1:8080": where the service listens
}

// Connect is a local port forward into the overlay.
type Connect struct {
	// Local is a loopback "IP:PORT" or an absolute Unix socket path.
	Local string `toml:"local"`
	// Remote is "[address]:port" or "name:port" (a peer's name).
	Remote string `toml:"remote"`
}

// Proxy configures the local SOCKS5 and HTTP CONNECT proxies into the overlay.
type Proxy struct {
	// SOCKS5 and HTTP are a loopback "IP:PORT" or an absolute Unix socket
	// path; empty: off.
	SOCKS5 string `toml:"socks5"`
	HTTP   string `toml:"http"`
	// Users may also use loopback listeners (proxies and connects); the user
	// running the node always may. "*" lets every local user in.
	Users []string `toml:"users"`
}

// IPv4Auto is the tun.ipv4 value that derives the address from the key.
const IPv4Auto = "auto"

// IPv4 returns the node's overlay IPv4 address: tun.ipv4, or with "auto"
// the address of pub in tun.ipv4_prefix; invalid when unset. Validate has
// checked both keys.
func (c *Config) IPv4(pub identity.PublicKey) netip.Addr {
	if c.TUN.IPv4 == IPv4Auto {
		a, _ := pub.IPv4Address(c.IPv4Prefix())
		return a
	}
	a, _ := netip.ParseAddr(c.TUN.IPv4)
	return a
}

// IPv4Prefix returns tun.ipv4_prefix (identity.DefaultIPv4Prefix when
// unset).
func (c *Config) IPv4Prefix() netip.Prefix {
	p, err := ParseIPv4Prefix(c.TUN.IPv4Prefix)
	if err != nil {
		return identity.DefaultIPv4Prefix
	}
	return p
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

// Offer is a parsed routes.offer entry.
type Offer struct {
	Prefix     netip.Prefix
	Masquerade bool
}

// Offers returns the parsed routes.offer entries (Validate has checked them).
func (c *Config) Offers() []Offer {
	var out []Offer
	for _, o := range c.Routes.Offer {
		if p, err := ParseRoutePrefix(o.Prefix); err == nil {
			out = append(out, Offer{Prefix: p, Masquerade: o.Masquerade})
		}
	}
	return out
}

// Accept is a parsed routes.accept entry.
type Accept struct {
	From   policy.Identity
	Prefix netip.Prefix
}

// Accepts returns the parsed routes.accept entries.
func (c *Config) Accepts() []Accept {
	var out []Accept
	for _, a := range c.Routes.Accept {
		id, err1 := policy.ParseIdentity(a.From)
		p, err2 := ParseRoutePrefix(a.Prefix)
		if err1 == nil && err2 == nil {
			out = append(out, Accept{From: id, Prefix: p})
		}
	}
	return out
}

// ExposeProto returns the protocol of an expose entry ("tcp" by default).
func (e Expose) ExposeProto() string {
	if e.Proto == "" {
		return "tcp"
	}
	return e.Proto
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

// SplitRemote checks an overlay destination "host:port": host is an IP
// literal (IPv6 in brackets) or a peer's name.
func SplitRemote(s string) (host string, port uint16, err error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%q: want \"[address]:port\" or \"name:port\": %v", s, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("%q: port %q is not in 1..65535", s, p)
	}
	if h == "" || strings.ContainsAny(h, " /\\") {
		return "", 0, fmt.Errorf("%q: %q is neither an address nor a name", s, h)
	}
	return h, uint16(n), nil
}

// localSpec checks a listener spec: a loopback IP:PORT or an absolute path.
func localSpec(s string) error {
	if strings.HasPrefix(s, "/") {
		if len(s) > 107 {
			return fmt.Errorf("%q: Unix socket paths are limited to 107 bytes", s)
		}
		if filepath.Clean(s) != s {
			return fmt.Errorf("%q: write the path in clean form (%q)", s, filepath.Clean(s))
		}
		return nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return fmt.Errorf("%q: want a loopback \"127.0.0.1:PORT\" or \"[::1]:PORT\", or an absolute Unix socket path", s)
	}
	if !ap.Addr().IsLoopback() {
		return fmt.Errorf("%q: only loopback addresses are allowed (a proxy into the overlay must not be reachable from the network); use 127.0.0.1 or a Unix socket path", s)
	}
	if ap.Port() == 0 {
		return fmt.Errorf("%q: give a port (1..65535)", s)
	}
	return nil
}

// validateServices checks tun.ipv4, routes, expose, connect, proxy and
// allowed_local_users.
func (c *Config) validateServices(bad func(key, format string, args ...any)) {
	kernel := c.TUN.Mode == ModeKernel
	if _, err := ParseIPv4Prefix(c.TUN.IPv4Prefix); err != nil {
		bad("tun.ipv4_prefix", "%v; the default %s is shared address space (RFC 6598) that LANs rarely use", err, identity.DefaultIPv4Prefix)
	}
	var v4 netip.Addr // an explicit tun.ipv4
	if c.TUN.IPv4 != "" && c.TUN.IPv4 != IPv4Auto {
		a, err := netip.ParseAddr(c.TUN.IPv4)
		switch {
		case err != nil || !a.Is4():
			bad("tun.ipv4", "%q: want \"auto\" (derived from the key in tun.ipv4_prefix) or one IPv4 address without a prefix length, e.g. \"10.99.0.2\" (offered to peers as a /32)", c.TUN.IPv4)
		case a.IsLoopback() || a.IsMulticast() || a.IsUnspecified() || a.IsLinkLocalUnicast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			bad("tun.ipv4", "%s is not a unicast address a node can use", a)
		default:
			v4 = a
		}
	}
	if c.Listen.Stealth && !kernel {
		bad("listen.stealth", "needs tun.mode = \"kernel\" (it installs nftables rules); a userspace node opens no port but listen.udp anyway")
	}

	offered := map[netip.Prefix]int{}
	for i, o := range c.Routes.Offer {
		key := fmt.Sprintf("routes.offer[%d].prefix", i)
		p, err := ParseRoutePrefix(o.Prefix)
		if err != nil {
			bad(key, "%v", err)
			continue
		}
		if j, dup := offered[p]; dup {
			bad(key, "%s is offered twice (also routes.offer[%d])", p, j)
		}
		offered[p] = i
		if v4.IsValid() && p == netip.PrefixFrom(v4, 32) {
			bad(key, "%s is tun.ipv4, which is offered by itself: remove this entry", p)
		}
		if !kernel {
			bad(key, "offering a route needs tun.mode = \"kernel\": a userspace node cannot forward into its LAN")
		}
	}
	if n := len(c.Routes.Offer); n > MaxOffers || (n == MaxOffers && c.TUN.IPv4 != "") {
		bad("routes.offer", "%d routes (tun.ipv4 counts as one more): one offer carries at most %d; offer shorter prefixes that cover several", n, MaxOffers)
	}
	for i, a := range c.Routes.Accept {
		key := fmt.Sprintf("routes.accept[%d]", i)
		if _, err := policy.ParseIdentity(a.From); err != nil {
			bad(key+".from", "%v", err)
		}
		if _, err := ParseRoutePrefix(a.Prefix); err != nil {
			bad(key+".prefix", "%v", err)
		}
	}

	exposed := map[string]int{}
	for i, e := range c.Expose {
		key := fmt.Sprintf("expose[%d]", i)
		if e.Port < 1 || e.Port > 65535 {
			bad(key+".port", "%d: the overlay port, 1..65535", e.Port)
		}
		proto := e.ExposeProto()
		if proto != "tcp" && proto != "udp" {
			bad(key+".proto", "%q: use \"tcp\" or \"udp\"", e.Proto)
		}
		id := proto + "/" + strconv.Itoa(e.Port)
		if j, dup := exposed[id]; dup {
			bad(key+".port", "%s is exposed twice (also expose[%d])", id, j)
		}
		exposed[id] = i
		if e.Target == "" {
			bad(key+".target", "missing: where the service listens, e.g. \"127.0.0.1:8080\"")
		} else if ap, err := netip.ParseAddrPort(e.Target); err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() {
			bad(key+".target", "%q: want the service's IP:PORT, e.g. \"127.0.0.1:8080\" (an address, not a host name)", e.Target)
		}
	}
	locals := map[string]string{}
	use := func(key, spec string) {
		if err := localSpec(spec); err != nil {
			bad(key, "%v", err)
			return
		}
		if other, dup := locals[spec]; dup {
			bad(key, "%q is also used by %s", spec, other)
		}
		locals[spec] = key
	}
	for i, cn := range c.Connect {
		key := fmt.Sprintf("connect[%d]", i)
		if cn.Local == "" {
			bad(key+".local", "missing: a loopback \"127.0.0.1:PORT\" or a Unix socket path to listen on")
		} else {
			use(key+".local", cn.Local)
		}
		if cn.Remote == "" {
			bad(key+".remote", "missing: the overlay service, e.g. \"[fc12:3456::1]:80\" or \"name:80\" (a peer's name)")
		} else if _, _, err := SplitRemote(cn.Remote); err != nil {
			bad(key+".remote", "%v", err)
		}
	}
	if c.Proxy.SOCKS5 != "" {
		use("proxy.socks5", c.Proxy.SOCKS5)
	}
	if c.Proxy.HTTP != "" {
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
