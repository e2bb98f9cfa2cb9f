// Package nat owns how a node finds and proves direct paths to peers
// behind NAT (DESIGN.md "Bridges": a bridge introduces two nodes, tells
// each the other's observed endpoint, and both send probes):
//
//   - which endpoints are plausible to probe, or to pass on to other nodes
//     as places to probe (endpoints.go);
//   - the candidates bridges report for each peer, the probes this node
//     sends and answers, their budgets, and the proof that a path works,
//     which it hands to the Bind (prober.go); the openers that precede
//     probes to a NAT's public side (low-TTL probes that map this side's
//     flow before the peer's probes arrive), and the quiet spell and
//     shared retry schedule after an attempt that proved nothing;
//   - which introductions are fresh (introductions.go).
//
// It has no goroutines and no sockets of its own: the node's client of
// its bridges (internal/bridge/client) drives it, opening frames and
// timing rounds, and the Bind (internal/transport) sends what it seals.
package nat

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// Plausible reports whether ep may be probed, or passed on to other nodes
// as a place to probe: a unicast address that can be another machine, and
// a port. Endpoints come from other nodes (their Register) through the
// bridge, so a member could otherwise aim everyone it is introduced to at
// targets of its choosing. Never:
//   - the unspecified address, 0.0.0.0/8, or port 0: nothing to send to;
//   - multicast or the IPv4 limited broadcast: one probe would reach a
//     whole network (Go sockets may broadcast: SO_BROADCAST is on);
//   - link-local: honest nodes never report one (Node.localEndpoints
//     skips them), an IPv6 one needs a zone the wire does not carry, and
//     the one that matters most, 169.254.169.254, is a cloud's metadata
//     service;
//   - overlay addresses: probes to them would loop through tomoe0.
//
// Loopback only if loopback is set: the bridge that vouches for ep is
// itself reached at a loopback address, so every node it knows at a
// loopback address runs on this host (tests; several nodes on one
// machine). From anywhere else, a loopback endpoint would aim this node
// at its own services.
func Plausible(ep netip.AddrPort, loopback bool) bool {
	a := ep.Addr().Unmap()
	switch {
	case !a.IsValid() || ep.Port() == 0 || a.IsUnspecified():
		return false
	case a.Is4() && (a.As4()[0] == 0 || a == netip.AddrFrom4([4]byte{255, 255, 255, 255})):
		return false
	case a.IsMulticast() || a.IsLinkLocalUnicast() || identity.IsNodeAddress(a) || identity.IsSiteAddress(a):
		return false
	case a.IsLoopback():
		return loopback
	}
	return true
}

// PlausibleOnly returns the plausible endpoints of eps, unmapped, in a new
// slice (nil if none).
func PlausibleOnly(eps []netip.AddrPort, loopback bool) []netip.AddrPort {
	var out []netip.AddrPort
	for _, ep := range eps {
		if Plausible(ep, loopback) {
			if out == nil {
				out = make([]netip.AddrPort, 0, len(eps))
			}
			out = append(out, netip.AddrPortFrom(ep.Addr().Unmap(), ep.Port()))
		}
	}
	return out
}

// Broadcasts knows the IPv4 broadcast addresses of this host's networks
// (192.168.1.255 on a 192.168.1.0/24), which no probe may go to: one
// packet would reach every host there. Only this host knows them, so the
// bridge cannot filter them out for it.
type Broadcasts struct {
	mu      sync.Mutex                 // guards addrs, set and read
	addrs   func() ([]net.Addr, error) // net.InterfaceAddrs, or what SetSource gave
	set     map[netip.Addr]bool
	read    time.Time
	refresh time.Duration
}

// NewBroadcasts reads this host's networks with net.InterfaceAddrs, at
// most every 10 s.
func NewBroadcasts() *Broadcasts {
	return &Broadcasts{addrs: net.InterfaceAddrs, refresh: 10 * time.Second}
}

// SetSource makes b read this host's networks with addrs from now on
// (tests: networks of their choosing).
func (b *Broadcasts) SetSource(addrs func() ([]net.Addr, error)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.addrs, b.set = addrs, nil
}

// Has reports whether a is the broadcast address of one of this host's
// IPv4 networks, as of at most refresh ago.
func (b *Broadcasts) Has(a netip.Addr, now time.Time) bool {
	a = a.Unmap()
	if !a.Is4() {
		return false // IPv6 has no broadcast
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.set == nil || now.Sub(b.read) >= b.refresh || now.Before(b.read) {
		b.set, b.read = map[netip.Addr]bool{}, now
		addrs, _ := b.addrs()
		for _, ia := range addrs {
			p, err := netip.ParsePrefix(ia.String())
			if err != nil || !p.Addr().Unmap().Is4() || p.Bits() >= 31 {
				continue // /31 and /32 have no broadcast address
			}
			v := p.Addr().Unmap().As4()
			host := uint32(1)<<(32-p.Bits()) - 1
			n := (uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3])) | host
			b.set[netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})] = true
		}
	}
	return b.set[a]
}
