package node

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node/peers"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// What the DNS server answers from: static peers' names before
// certificates' names, this node's own certificate names, empty
// non-terminals, and an IPv4 address only where one is known (this node's
// tun.ipv4; a peer's derived address once it is an installed route).
func TestLookupDNSName(t *testing.T) {
	self, web1, db, shadow := newKey(t).Public(), newKey(t).Public(), newKey(t).Public(), newKey(t).Public()
	space := identity.DefaultIPv4Prefix
	selfV4, _ := self.IPv4Address(space)
	web1V4, _ := web1.IPv4Address(space)
	cfg := &config.Config{TUN: config.TUN{IPv4Prefix: config.IPv4Prefix{Prefix: space}}}
	n := &Node{cfg: cfg, pub: self, ipv4: selfV4, peers: peers.New(peers.Limits{})}
	n.peers.Lock()
	n.peers.Insert(&peers.Peer{Key: web1, Addr: web1.Address(), Name: "Web1", Static: true, Routes: []netip.Prefix{netip.PrefixFrom(web1V4, 32)}})
	n.peers.Insert(&peers.Peer{Key: db, Addr: db.Address()}) // its IPv4 is not routed to it
	n.peers.Unlock()
	n.dns.setStatic([]config.Peer{{PublicKey: web1, Name: "Web1"}, {PublicKey: db, Name: ""}})
	n.dns.setCertNames(policy.Directory{
		db.Address():     {{Org: "acme", Name: "db.prod.acme"}},
		shadow.Address(): {{Org: "acme", Name: "web1"}}, // a static name wins
	}, self.Address(), []policy.Member{{Org: "acme", Name: "me.acme"}})

	tests := []struct {
		name   string
		exists bool
		v6, v4 []netip.Addr
	}{
		{"web1", true, []netip.Addr{web1.Address()}, []netip.Addr{web1V4}},
		{"db.prod.acme", true, []netip.Addr{db.Address()}, nil},
		{"prod.acme", true, nil, nil},
		{"acme", true, nil, nil},
		{"me.acme", true, []netip.Addr{self.Address()}, []netip.Addr{selfV4}},
		{"nope", false, nil, nil},
		{"", false, nil, nil},
	}
	for _, tt := range tests {
		r, ok := n.lookupDNSName(tt.name)
		if ok != tt.exists || !slices.Equal(r.IPv6, tt.v6) || !slices.Equal(r.IPv4, tt.v4) {
			t.Errorf("%q: %v %+v, want %v %v %v", tt.name, ok, r, tt.exists, tt.v6, tt.v4)
		}
	}
}
