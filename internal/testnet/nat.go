package testnet

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// NATKind is how a site's router translates and filters traffic. Every kind
// filters inbound traffic the same way: only replies to flows started from
// inside get in, and everything else is dropped without an ICMP error.
type NATKind int

const (
	// EndpointIndependent maps one inside socket to one public port
	// whatever the destination (plain masquerade: Linux keeps the source
	// port when it is free), so peers can punch holes to each other.
	EndpointIndependent NATKind = iota + 1
	// Symmetric picks a new public port for each destination, so the
	// endpoint a third party observes is useless to anyone else.
	Symmetric
	// UDPBlocked masquerades TCP and drops all forwarded UDP, as
	// restrictive corporate firewalls do.
	UDPBlocked
)

func (k NATKind) String() string {
	switch k {
	case EndpointIndependent:
		return "endpoint-independent"
	case Symmetric:
		return "symmetric"
	case UDPBlocked:
		return "udp-blocked"
	}
	return fmt.Sprintf("NATKind(%d)", int(k))
}

// NATLab is an "internet" segment, 203.0.113.0/24 on a Linux bridge, with
// public hosts on it (203.0.113.1 to .9, in the order they are added) and
// sites behind NAT routers (router n at 203.0.113.(10+n), n counting from
// 1). It is torn down when the test ends. It is not safe for concurrent
// use while being built.
type NATLab struct {
	// Switch is the namespace holding the internet bridge, br0.
	Switch *Netns
	// Hosts are the public hosts, by name.
	Hosts map[string]*Host
	// Sites are the NATed sites, by name.
	Sites map[string]*Site

	t     testing.TB
	nhost int
	nsite int
}

// Site is a private network behind a NAT router: the router's WAN
// interface "wan" is on the internet segment, its LAN interface "lan" is
// 10.n.0.1/24, and one host at 10.n.0.2 routes through it.
type Site struct {
	Name string
	Kind NATKind
	// Options are how the router differs from the plain kind.
	Options SiteOptions
	// Router is the NAT router's namespace; its rules are in the
	// nftables table "ip natlab".
	Router *Netns
	// Host is the machine behind the NAT; Host.IPv4 equals Private.
	Host *Host
	// Private is the host's address on the site's LAN.
	Private netip.Addr
	// Public is the router's WAN address, the source the internet sees.
	Public netip.Addr
}

// SiteOptions change a site's router from what its kind alone makes.
type SiteOptions struct {
	// NoInputFirewall makes the router accept everything its input
	// chain sees, as many home and embedded Linux routers do. An
	// unsolicited packet to its public address then reaches the router
	// itself, and conntrack records it as a flow (remote -> public:port)
	// for nf_conntrack_udp_timeout (30 s), refreshed by each such packet.
	// While it lives, masquerade cannot give that public port to an
	// inside socket's flow to the same remote (the reply tuples would
	// clash) and picks another: the hole a peer punched is the wrong one.
	// Only for EndpointIndependent sites.
	NoInputFirewall bool
	// Transit puts a router (namespace "<name>-isp") between the site's
	// router and the internet segment, as an ISP's is: packets to and
	// from the site cross one more routed hop (its TTL drops by one
	// more), while addresses stay as AddSite gives them (the transit
	// router answers ARP for each side on the other's behalf).
	Transit bool
}

// natTable names the nftables table in every router namespace.
const natTable = "natlab"

const (
	maxPublicHosts = 9
	maxSites       = 244 // 203.0.113.11 to .254
)

// RequireNftables skips t unless the nft command is installed.
func RequireNftables(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("skipped: nftables (nft) is not installed; the NAT lab needs it")
	}
}

// NewNATLab builds an empty internet segment. Tests call RequireRoot and
// RequireNftables first.
func NewNATLab(t testing.TB) *NATLab {
	t.Helper()
	return &NATLab{
		Switch: NewLAN(t).Switch,
		Hosts:  map[string]*Host{},
		Sites:  map[string]*Site{},
		t:      t,
	}
}

// AddHost adds a public host, its eth0 on the internet segment.
func (l *NATLab) AddHost(name string) *Host {
	l.t.Helper()
	l.checkName(name)
	if l.nhost == maxPublicHosts {
		l.t.Fatalf("natlab: more than %d public hosts", maxPublicHosts)
	}
	l.nhost++
	h := &Host{
		Netns: NewNetns(l.t, name),
		IPv4:  netip.AddrFrom4([4]byte{203, 0, 113, byte(l.nhost)}),
	}
	l.plug(h.Netns, fmt.Sprintf("h%d", l.nhost), "eth0", h.IPv4)
	l.Hosts[name] = h
	return h
}

// AddSite adds a site whose router translates as kind says.
func (l *NATLab) AddSite(name string, kind NATKind) *Site {
	l.t.Helper()
	return l.AddSiteWith(name, kind, SiteOptions{})
}

// AddSiteWith adds a site whose router translates as kind says, changed
// by opts.
func (l *NATLab) AddSiteWith(name string, kind NATKind, opts SiteOptions) *Site {
	l.t.Helper()
	l.checkName(name)
	if opts.NoInputFirewall && kind != EndpointIndependent {
		l.t.Fatalf("natlab: site %s: NoInputFirewall is for endpoint-independent sites, not %v", name, kind)
	}
	if l.nsite == maxSites {
		l.t.Fatalf("natlab: more than %d sites", maxSites)
	}
	l.nsite++
	n := byte(l.nsite)
	s := &Site{
		Name:    name,
		Kind:    kind,
		Options: opts,
		Router:  NewNetns(l.t, name+"-rt"),
		Private: netip.AddrFrom4([4]byte{10, n, 0, 2}),
		Public:  netip.AddrFrom4([4]byte{203, 0, 113, 10 + n}),
	}
	gw := netip.AddrFrom4([4]byte{10, n, 0, 1})
	s.Host = &Host{Netns: NewNetns(l.t, name), IPv4: s.Private}

	if opts.Transit {
		l.transit(s, n)
	} else {
		l.plug(s.Router, fmt.Sprintf("s%d", n), "wan", s.Public)
	}
	s.Router.Run("ip", "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", s.Host.Name)
	s.Router.Run("ip", "addr", "add", gw.String()+"/24", "dev", "lan")
	s.Router.Run("ip", "link", "set", "lan", "up")
	s.Host.Run("ip", "addr", "add", s.Private.String()+"/24", "dev", "eth0")
	s.Host.Run("ip", "link", "set", "eth0", "up")
	s.Host.Run("ip", "route", "add", "default", "via", gw.String())

	// Write the sysctl from a thread inside the namespace: /proc/sys/net
	// shows the writer's namespace, and this needs no procps.
	var err error
	s.Router.Do(func() { err = os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644) })
	if err != nil {
		l.t.Fatalf("natlab: site %s: enable forwarding: %v", name, err)
	}
	s.applyRules(l.t)
	l.Sites[name] = s
	return s
}

// transit joins the router of site s (number n) to the internet segment
// through a router namespace of its own. That router owns no address in
// the segment: it routes the site's public address to the site's router
// and the rest of the segment to the switch, and answers ARP on each
// link for the addresses behind the other (proxy ARP, at once), so both
// sides keep their addresses and on-link routes.
func (l *NATLab) transit(s *Site, n byte) {
	l.t.Helper()
	isp := NewNetns(l.t, s.Name+"-isp")
	port := fmt.Sprintf("t%d", n)
	l.Switch.Run("ip", "link", "add", port, "type", "veth", "peer", "name", "inet", "netns", isp.Name)
	l.Switch.Run("ip", "link", "set", port, "master", "br0", "up")
	isp.Run("ip", "link", "add", "cust", "type", "veth", "peer", "name", "wan", "netns", s.Router.Name)
	s.Router.Run("ip", "addr", "add", s.Public.String()+"/24", "dev", "wan")
	s.Router.Run("ip", "link", "set", "wan", "up")
	// An address outside the segment, for the ARP requests it sends.
	isp.Run("ip", "addr", "add", fmt.Sprintf("100.64.0.%d/32", n), "dev", "inet")
	isp.Run("ip", "addr", "add", fmt.Sprintf("100.64.0.%d/32", n), "dev", "cust")
	isp.Run("ip", "link", "set", "inet", "up")
	isp.Run("ip", "link", "set", "cust", "up")
	isp.Run("ip", "route", "add", "203.0.113.0/24", "dev", "inet")
	isp.Run("ip", "route", "add", s.Public.String()+"/32", "dev", "cust")
	var err error
	isp.Do(func() {
		for _, kv := range [][2]string{
			{"ipv4/ip_forward", "1"},
			{"ipv4/conf/inet/proxy_arp", "1"},
			{"ipv4/conf/cust/proxy_arp", "1"},
			{"ipv4/neigh/inet/proxy_delay", "0"},
			{"ipv4/neigh/cust/proxy_delay", "0"},
		} {
			if err == nil {
				err = os.WriteFile("/proc/sys/net/"+kv[0], []byte(kv[1]+"\n"), 0o644)
			}
		}
	})
	if err != nil {
		l.t.Fatalf("natlab: site %s: transit router: %v", s.Name, err)
	}
}

func (l *NATLab) checkName(name string) {
	l.t.Helper()
	if _, ok := l.Hosts[name]; ok {
		l.t.Fatalf("natlab: name %q already used", name)
	}
	if _, ok := l.Sites[name]; ok {
		l.t.Fatalf("natlab: name %q already used", name)
	}
}

// plug links ns to the internet bridge through a veth pair: port in the
// switch, ifname with addr/24 in ns.
func (l *NATLab) plug(ns *Netns, port, ifname string, addr netip.Addr) {
	l.t.Helper()
	l.Switch.Run("ip", "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns.Name)
	l.Switch.Run("ip", "link", "set", port, "master", "br0", "up")
	ns.Run("ip", "addr", "add", addr.String()+"/24", "dev", ifname)
	ns.Run("ip", "link", "set", ifname, "up")
}

// natRules is the router's ruleset. The forward chain checks the blocked
// set before conntrack's accept, so BlockUDPTo also cuts flows already
// established. The input chain's drop policy keeps the router from
// answering probes of its public address with ICMP port unreachable, and
// conntrack from remembering them (SiteOptions.NoInputFirewall: accept).
const natRules = `table ip ` + natTable + ` {
	set blocked {
		type ipv4_addr
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		meta l4proto udp ip daddr @blocked drop
		meta l4proto udp ip saddr @blocked drop
		%s
		ct state established,related accept
		iifname "lan" oifname "wan" accept
	}
	chain input {
		type filter hook input priority filter; policy %s;
		iifname "lo" accept
		ct state established,related accept
		iifname "lan" accept
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" masquerade %s
	}
}
`

func (s *Site) applyRules(t testing.TB) {
	t.Helper()
	var filter, mapping string
	input := "drop"
	if s.Options.NoInputFirewall {
		input = "accept"
	}
	switch s.Kind {
	case EndpointIndependent:
	case Symmetric:
		// Without a flag the kernel keeps the inside port when it can;
		// "fully-random" skips that and draws every new mapping's port
		// at random, so each destination gets its own. ("random" also
		// does, but through a hash whose inputs vary between kernels.)
		mapping = "fully-random"
	case UDPBlocked:
		filter = "meta l4proto udp drop"
	default:
		t.Fatalf("natlab: site %s: unknown NAT kind %v", s.Name, s.Kind)
	}
	cmd := s.Router.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(fmt.Sprintf(natRules, filter, input, mapping))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("natlab: site %s: nft: %v\n%s", s.Name, err, out)
	}
}

// BlockUDPTo makes the router drop forwarded UDP to and from addr, such as
// another site's Public address, cutting the direct path between them
// (in both directions, established flows included) while the rest of the
// internet stays reachable.
func (s *Site) BlockUDPTo(addr netip.Addr) {
	s.Router.t.Helper()
	s.Router.Run("nft", "add", "element", "ip", natTable, "blocked", "{ "+addr.String()+" }")
}

// UnblockUDPTo undoes BlockUDPTo; it fails the test if addr is not
// blocked.
func (s *Site) UnblockUDPTo(addr netip.Addr) {
	s.Router.t.Helper()
	s.Router.Run("nft", "delete", "element", "ip", natTable, "blocked", "{ "+addr.String()+" }")
}
