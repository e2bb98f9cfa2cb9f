package vlab

import (
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/tomoe-net/tomoe/internal/clock"
	"github.com/tomoe-net/tomoe/internal/testnet"
	"github.com/tomoe-net/tomoe/internal/testnet/vnet"
)

// NATConfig is the vnet NAT configuration of one of the netns lab's NAT
// kinds (testnet.NATKind; the kinds are one list for both labs): the
// zero NATConfig is Linux masquerade behind an input chain that drops,
// endpoint-independent, keeping the inside port when free; symmetric is
// masquerade with fully-random ports; UDP-blocked masquerades TCP and
// drops all forwarded UDP. Every kind lets in only replies to flows
// started from inside, and the router answers nothing.
func NATConfig(k testnet.NATKind) vnet.NATConfig {
	switch k {
	case testnet.Symmetric:
		return vnet.NATConfig{Mapping: vnet.AddressAndPortDependentMapping, Ports: vnet.RandomPorts}
	case testnet.UDPBlocked:
		return vnet.NATConfig{BlockUDP: true}
	}
	return vnet.NATConfig{}
}

// Addresses of the lab, as testnet.NATLab's.
var internetPrefix = netip.MustParsePrefix("203.0.113.0/24")

const (
	maxPublicHosts = 9
	maxSites       = 244 // routers at 203.0.113.11 to .254
)

// Lab is an internet with public hosts and NATed sites, and the tomoe
// nodes on them. Building it is not safe for concurrent use; reading
// nodes is.
type Lab struct {
	// World is the in-memory internet: tests reach links, NATs and
	// counters through it.
	World *vnet.World
	// Internet is the public network, 203.0.113.0/24.
	Internet *vnet.Network

	t     testing.TB
	names map[string]bool
	nhost int
	nsite int

	mu      sync.Mutex // guards started
	started []*Node    // in the order they first started: closed in reverse
}

// New builds an empty lab, torn down when t ends (see the package doc).
// cfg configures the World (its Seed above all); the zero value is fine.
// Its Clock must be nil or clock.Real(): the lab's nodes run on real
// time (wireguard-go's and the userspace stack's timers cannot run on
// another), and a network on another clock would drift from them.
func New(t testing.TB, cfg vnet.Config) *Lab {
	t.Helper()
	if cfg.Clock != nil && cfg.Clock != clock.Real() {
		t.Fatalf("vlab: the World's clock must be real time, as the nodes' is")
	}
	w := vnet.New(cfg)
	internet, err := w.NewNetwork("internet", internetPrefix)
	if err != nil {
		t.Fatal(err)
	}
	l := &Lab{World: w, Internet: internet, t: t, names: map[string]bool{}}
	// The test's temporary directories (the nodes' among them) go after
	// the nodes stop: cleanups run last registered first, and TempDir
	// registers its own at its first call, so make that call first.
	t.TempDir()
	t.Cleanup(l.close)
	return l
}

// close closes the nodes, last started first, then the World.
func (l *Lab) close() {
	l.mu.Lock()
	nodes := slices.Clone(l.started)
	l.mu.Unlock()
	slices.Reverse(nodes)
	for _, n := range nodes {
		n.Stop()
	}
	l.World.Close()
}

func (l *Lab) claim(name string) {
	l.t.Helper()
	if l.names[name] {
		l.t.Fatalf("vlab: name %q already used", name)
	}
	l.names[name] = true
}

// AddHost adds a public host on the internet, 203.0.113.n for the n-th.
func (l *Lab) AddHost(name string) *vnet.Host {
	l.t.Helper()
	l.claim(name)
	if l.nhost == maxPublicHosts {
		l.t.Fatalf("vlab: more than %d public hosts", maxPublicHosts)
	}
	l.nhost++
	h, err := l.Internet.AddHostAt(name, netip.AddrFrom4([4]byte{203, 0, 113, byte(l.nhost)}))
	if err != nil {
		l.t.Fatal(err)
	}
	return h
}

// Site is a LAN behind a NAT router with one host on it.
type Site struct {
	Name string
	Kind testnet.NATKind // 0 for a site added with AddSiteWith
	// NAT is the router: cut paths through it (BlockUDPTo), move it
	// (SetPublicAddr), flush it.
	NAT *vnet.NAT
	// LAN is the site's network, 10.n.0.0/24.
	LAN *vnet.Network
	// Host is the machine behind the NAT, at Private.
	Host *vnet.Host
	// Private is the host's address on the LAN, 10.n.0.2.
	Private netip.Addr
	// Public is the router's address as first configured, the source the
	// internet sees (NAT.Public after a move).
	Public netip.Addr
}

// AddSite adds a site whose router translates as kind says.
func (l *Lab) AddSite(name string, kind testnet.NATKind) *Site {
	l.t.Helper()
	s := l.AddSiteWith(name, NATConfig(kind))
	s.Kind = kind
	return s
}

// AddSiteWith adds a site whose router has cfg (its Public and Gateway
// are set by the lab).
func (l *Lab) AddSiteWith(name string, cfg vnet.NATConfig) *Site {
	l.t.Helper()
	l.claim(name)
	if l.nsite == maxSites {
		l.t.Fatalf("vlab: more than %d sites", maxSites)
	}
	l.nsite++
	n := byte(l.nsite)
	s := &Site{
		Name:    name,
		Private: netip.AddrFrom4([4]byte{10, n, 0, 2}),
		Public:  netip.AddrFrom4([4]byte{203, 0, 113, 10 + n}),
	}
	lan, err := l.World.NewNetwork(name+"-lan", netip.PrefixFrom(netip.AddrFrom4([4]byte{10, n, 0, 0}), 24))
	if err != nil {
		l.t.Fatal(err)
	}
	cfg.Public = s.Public
	cfg.Gateway = netip.AddrFrom4([4]byte{10, n, 0, 1})
	if s.NAT, err = l.World.NewNAT(name+"-rt", lan, l.Internet, cfg); err != nil {
		l.t.Fatal(err)
	}
	if s.Host, err = lan.AddHostAt(name, s.Private); err != nil {
		l.t.Fatal(err)
	}
	s.LAN = lan
	return s
}

// noteStarted records n's first start, for the teardown's order.
func (l *Lab) noteStarted(n *Node) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !slices.Contains(l.started, n) {
		l.started = append(l.started, n)
	}
}
