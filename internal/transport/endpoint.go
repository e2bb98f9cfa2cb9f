package transport

import (
	"net/netip"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"golang.zx2c4.com/wireguard/conn"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/ratelimit"
)

// The endpoints the Bind hands WireGuard: one PeerEndpoint per peer, and
// candidates for messages from a source address (or relay path) the peer
// has not used, which become its path only as package transport's doc
// says.

// PeerEndpoint is the one endpoint object WireGuard holds for a peer.
type PeerEndpoint struct {
	key    identity.PublicKey
	direct atomic.Pointer[conn.StdNetEndpoint] // current direct path; nil until known
	relay  atomic.Pointer[relayPath]           // path through a bridge; nil if none
	// directUntil (Unix ns): while a relay is known, the direct path is used
	// only until then; proof that it works (a probe answered, an
	// authenticated packet) moves it on.
	directUntil atomic.Int64

	// answered: a transport message for one of its sessions arrived.
	answered atomic.Bool
	// sent counts the transport messages handed to the socket for it,
	// directly or through a relay (sent.go).
	sent atomic.Uint64
	// handshakeMsgs limits its responses and cookie replies (sawMessage).
	handshakeMsgs *rate.Limiter

	// Guarded by Bind.mu.
	addrs     [addrsPerPeer]netip.AddrPort
	nextAddr  int
	indices   [indicesPerPeer]uint32
	nextIndex int
}

var _ conn.Endpoint = (*PeerEndpoint)(nil)

// Key returns the peer's public key.
func (p *PeerEndpoint) Key() identity.PublicKey { return p.key }

// Direct returns the current direct address, if any.
func (p *PeerEndpoint) Direct() netip.AddrPort {
	if d := p.direct.Load(); d != nil {
		return d.AddrPort
	}
	return netip.AddrPort{}
}

func (p *PeerEndpoint) knowsAddrLocked(a netip.AddrPort) bool {
	for _, k := range p.addrs {
		if k == a {
			return true
		}
	}
	return false
}

// addAddrLocked records a as one of p's recent addresses, in p's ring and
// the Bind's index of them.
func (b *Bind) addAddrLocked(p *PeerEndpoint, a netip.AddrPort) {
	if p.knowsAddrLocked(a) {
		return
	}
	if old := p.addrs[p.nextAddr]; b.byAddr[old] == p {
		delete(b.byAddr, old)
	}
	p.addrs[p.nextAddr] = a
	p.nextAddr = (p.nextAddr + 1) % addrsPerPeer
	b.byAddr[a] = p
}

// sawMessage notes a message of type typ for one of p's sessions and
// reports whether it may go on to WireGuard. Handshake responses and
// cookie replies name a session index only the path between us sees, but
// each goes to WireGuard's handshake queue: more than handshakeMsgRate a
// second for one peer is not a handshake, it is someone on the path
// trying to put the device under load.
func (p *PeerEndpoint) sawMessage(typ byte) bool {
	if typ == msgTransport {
		if !p.answered.Load() {
			p.answered.Store(true)
		}
		return true
	}
	return p.handshakeMsgs.Allow()
}

// handshakeMsgRate bounds the responses and cookie replies per second
// that reach WireGuard for one peer (this node sends at most one
// initiation per peer every 5 s, so a few are plenty).
const handshakeMsgRate = 10

// hasPath reports whether the peer can be sent to: a direct address or a
// relay path.
func (p *PeerEndpoint) hasPath() bool { return p.direct.Load() != nil || p.relay.Load() != nil }

// ClearSrc forgets the sticky source address, as conn.Endpoint asks.
func (p *PeerEndpoint) ClearSrc() {
	if d := p.direct.Load(); d != nil && d.SrcIP().IsValid() {
		p.direct.CompareAndSwap(d, &conn.StdNetEndpoint{AddrPort: d.AddrPort})
	}
}

// SrcToString implements conn.Endpoint.
func (p *PeerEndpoint) SrcToString() string {
	if d := p.direct.Load(); d != nil {
		return d.SrcToString()
	}
	return ""
}

// DstToString implements conn.Endpoint: the current direct address, or "".
func (p *PeerEndpoint) DstToString() string {
	if d := p.direct.Load(); d != nil {
		return d.DstToString()
	}
	return ""
}

// DstToBytes implements conn.Endpoint (WireGuard keys its cookies on it).
func (p *PeerEndpoint) DstToBytes() []byte {
	if d := p.direct.Load(); d != nil {
		return d.DstToBytes()
	}
	return nil
}

// DstIP implements conn.Endpoint.
func (p *PeerEndpoint) DstIP() netip.Addr { return p.Direct().Addr() }

// SrcIP implements conn.Endpoint.
func (p *PeerEndpoint) SrcIP() netip.Addr {
	if d := p.direct.Load(); d != nil {
		return d.SrcIP()
	}
	return netip.Addr{}
}

// sourceEndpoint is a source address not yet known to belong to a peer's
// path: handed to WireGuard with packets from it. If promotes, it becomes
// the peer's path on the first send through it (WireGuard authenticated a
// transport message or handshake response from there).
type sourceEndpoint struct {
	addr     netip.AddrPort
	std      *conn.StdNetEndpoint // as received: carries the sticky source
	peer     *PeerEndpoint
	promotes bool
}

func (s *sourceEndpoint) ClearSrc()           {}
func (s *sourceEndpoint) SrcToString() string { return s.std.SrcToString() }
func (s *sourceEndpoint) DstToString() string { return s.addr.String() }
func (s *sourceEndpoint) DstToBytes() []byte  { return s.std.DstToBytes() }
func (s *sourceEndpoint) DstIP() netip.Addr   { return s.addr.Addr() }
func (s *sourceEndpoint) SrcIP() netip.Addr   { return s.std.SrcIP() }

// directEndpoint is the endpoint WireGuard gets with a message of peer p
// from std: p itself from an address p uses, else a candidate.
func (b *Bind) directEndpoint(p *PeerEndpoint, std *conn.StdNetEndpoint, promotes bool) conn.Endpoint {
	b.mu.RLock()
	known := p.knowsAddrLocked(std.AddrPort)
	b.mu.RUnlock()
	if known {
		return p
	}
	return b.candidate(std, p, promotes)
}

// candidateKey tells apart the two candidates of one address: the one
// handed over with initiations never moves the peer's path.
type candidateKey struct {
	addr     netip.AddrPort
	promotes bool
}

func (b *Bind) candidate(std *conn.StdNetEndpoint, p *PeerEndpoint, promotes bool) conn.Endpoint {
	k := candidateKey{std.AddrPort, promotes}
	b.mu.RLock()
	c := b.candidates[k]
	b.mu.RUnlock()
	if c != nil && c.peer == p {
		return c
	}
	now := time.Now()
	if !b.newCandidates.Allow(ratelimit.Source(std.AddrPort.Addr()), now) || !b.candidateTotal.AllowN(now, 1) {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c = b.candidates[k]
	if c == nil || c.peer != p {
		if len(b.candidates) >= maxCandidates {
			clear(b.candidates) // under a flood: start over rather than grow
		}
		c = &sourceEndpoint{addr: std.AddrPort, std: std, peer: p, promotes: promotes}
		b.candidates[k] = c
	}
	return c
}

func (b *Bind) promote(c *sourceEndpoint) {
	p := c.peer
	b.mu.Lock()
	k := candidateKey{c.addr, c.promotes}
	if b.candidates[k] == c {
		delete(b.candidates, k)
	}
	if b.peers[p.key] != p {
		b.mu.Unlock()
		return // removed meanwhile
	}
	moved := !p.knowsAddrLocked(c.addr)
	b.addAddrLocked(p, c.addr)
	p.direct.Store(c.std)
	p.markDirectAlive()
	b.mu.Unlock()
	if moved {
		b.stats.Roamed.Add(1)
		b.log.Info("peer moved to a new address", "peer", p.key.ShortString(), "endpoint", c.addr)
	}
}
