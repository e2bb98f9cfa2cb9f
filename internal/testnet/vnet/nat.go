package vnet

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"
)

// Mapping is a NAT's mapping behaviour (RFC 4787 section 4.1): which
// outbound flows of one inside socket share a public port.
type Mapping uint8

const (
	// EndpointIndependentMapping gives an inside socket one public port
	// whatever it sends to (REQ-1), so the address a bridge observes is
	// the one peers can punch to. The zero value.
	EndpointIndependentMapping Mapping = iota
	// AddressDependentMapping gives it one public port per remote IP
	// address.
	AddressDependentMapping
	// AddressAndPortDependentMapping gives it one public port per remote
	// address and port: the "symmetric" NAT, where what a third party
	// observes is useless to anyone else.
	AddressAndPortDependentMapping
)

func (m Mapping) String() string {
	switch m {
	case EndpointIndependentMapping:
		return "endpoint-independent mapping"
	case AddressDependentMapping:
		return "address-dependent mapping"
	case AddressAndPortDependentMapping:
		return "address-and-port-dependent mapping"
	}
	return fmt.Sprintf("Mapping(%d)", m)
}

// Filtering is a NAT's filtering behaviour (RFC 4787 section 5): which
// inbound packets to a mapped public port get in.
type Filtering uint8

const (
	// AddressAndPortDependentFiltering admits only packets from an
	// address and port the mapping has sent to: a "port-restricted cone"
	// with endpoint-independent mapping, and what Linux's conntrack does.
	// The zero value.
	AddressAndPortDependentFiltering Filtering = iota
	// AddressDependentFiltering admits packets from any port of an
	// address the mapping has sent to ("restricted cone").
	AddressDependentFiltering
	// EndpointIndependentFiltering admits packets from anyone once the
	// mapping exists ("full cone").
	EndpointIndependentFiltering
)

func (f Filtering) String() string {
	switch f {
	case AddressAndPortDependentFiltering:
		return "address-and-port-dependent filtering"
	case AddressDependentFiltering:
		return "address-dependent filtering"
	case EndpointIndependentFiltering:
		return "endpoint-independent filtering"
	}
	return fmt.Sprintf("Filtering(%d)", f)
}

// PortAllocation is how a NAT picks a new mapping's public port (RFC 4787
// section 4.2.1).
type PortAllocation uint8

const (
	// PreservePort keeps the inside port when it is free, else takes the
	// next free one above it, as Linux masquerade does without flags. The
	// zero value.
	PreservePort PortAllocation = iota
	// SequentialPorts takes the next free port after the last one given
	// out, from 1024 up: predictable, as many home routers are.
	SequentialPorts
	// RandomPorts takes a free port at random (from the world's seed), as
	// masquerade's fully-random flag does.
	RandomPorts
)

// Ports a NAT gives out.
const (
	natFirstPort = 1024
	natLastPort  = 65535
)

// Default timeouts.
const (
	// RFC 4787 REQ-5: a UDP mapping lasts at least two minutes; Linux
	// keeps a flow that saw replies 120 s (nf_conntrack_udp_timeout_stream).
	defaultMappingTimeout = 2 * time.Minute
	// Linux keeps a UDP conntrack entry that saw no reply 30 s
	// (nf_conntrack_udp_timeout).
	defaultUnsolicitedTimeout = 30 * time.Second
	// TCP mappings outlive any test: conntrack keeps an established flow
	// five days, and vnet does not see stream data cross the NAT to
	// refresh them.
	tcpMappingTimeout = 24 * time.Hour
)

// NATConfig is how a NAT behaves. The zero value is Linux masquerade
// behind a firewall that drops unsolicited input: endpoint-independent
// mapping, address-and-port-dependent filtering, ports preserved, no
// hairpinning.
type NATConfig struct {
	// Public is the NAT's address on the outside network; zero means the
	// lowest free one.
	Public netip.Addr
	// Gateway is its address on the inside network, the inside hosts'
	// default route; zero means the lowest free one.
	Gateway netip.Addr

	Mapping   Mapping
	Filtering Filtering
	Ports     PortAllocation
	// Hairpin lets an inside host reach another inside host (or itself)
	// through the public address and a mapped port (RFC 4787 REQ-9). The
	// packet is translated both ways and filtered as if it came from
	// outside; it arrives from the sender's public address and port.
	// Without it such packets are dropped.
	Hairpin bool
	// BlockUDP drops all UDP forwarded either way while TCP passes, as
	// restrictive corporate firewalls do.
	BlockUDP bool
	// NoInputFirewall models a Linux router whose input chain accepts
	// everything. An inbound packet that no mapping admits (unmapped or
	// filtered) then goes to the router itself, and conntrack records it:
	// the flow (remote -> public:port) exists for UnsolicitedTimeout,
	// refreshed by each such packet. While it does, an outbound flow from
	// inside to that same remote cannot use that public port (its reply
	// tuple would clash), so it gets another: a new mapping for that
	// remote alone, even under endpoint-independent mapping. This is why
	// two "easy" NATs do not go direct when one's probe arrives before
	// the other has sent its own: the late side's probes leave from a
	// port the early side never heard of. Has no effect on packets that
	// endpoint-independent filtering admits.
	NoInputFirewall bool
	// MappingTimeout is how long a UDP mapping (and each remote its
	// filter lets in) lives after its last packet, outbound or admitted
	// inbound; 0 means 2 minutes.
	MappingTimeout time.Duration
	// UnsolicitedTimeout is how long a NoInputFirewall router remembers an
	// unsolicited packet; 0 means 30 s.
	UnsolicitedTimeout time.Duration
}

// NAT is a router that joins an inside network to an outside one,
// translating the inside hosts' addresses to its public address. Packets
// it forwards either way lose one from their TTL; it drops one whose TTL
// is 1, outbound before it maps it. A packet to the NAT itself (an
// unsolicited one, NoInputFirewall) needs no TTL to spare.
type NAT struct {
	w       *World
	name    string
	cfg     NATConfig
	inside  *Link      // to the inside network: the inside hosts' gateway
	gateway netip.Addr // inside's address, which never changes
	outside *Link      // to the outside network, at the public address
	in, out natSide

	mu          sync.Mutex // guards the fields below
	public      netip.Addr
	rng         *rand.Rand
	cursor      uint16                     // the next port to try (SequentialPorts; PreservePort after a taken one)
	taken       uint16                     // PreservePort: the wanted port the cursor moves on from
	maps        map[mapKey]*binding        // by inside socket and remote, masked by cfg.Mapping
	exact       map[mapKey]*binding        // flows that could not share their socket's port (NoInputFirewall)
	ports       map[portKey]*binding       // by public port
	filters     map[filterKey]*filterEntry // remotes let in, masked by cfg.Filtering
	unsolicited map[filterKey]int64        // NoInputFirewall: expiry of unsolicited flows
	blocked     map[netip.Addr]struct{}    // BlockUDPTo
	streams     map[*stream]struct{}       // streams through the NAT
	nextSweep   int64
	// The last flow translated outbound and its mapping: a steady flow
	// costs a comparison instead of hashing two addresses.
	lastFlow mapKey
	lastB    *binding
}

type natSide struct {
	n      *NAT
	inside bool
}

func (s *natSide) input(p *packet, _ *Link) {
	if s.inside {
		s.n.outbound(p)
	} else {
		s.n.inbound(p)
	}
}

// binding is a mapping: an inside socket's public port, for some remotes.
type binding struct {
	key     mapKey
	exact   bool // in NAT.exact, not NAT.maps
	port    uint16
	expires int64
	// The filter entry used last, while it is live (then it is in
	// NAT.filters): a flow's packets refresh it in place.
	lastKey filterKey
	last    *filterEntry
}

type mapKey struct {
	proto          Proto
	inside, remote netip.AddrPort
}

type portKey struct {
	proto Proto
	port  uint16
}

type filterKey struct {
	proto  Proto
	port   uint16
	remote netip.AddrPort
}

// filterEntry lets a remote in to b. An entry whose binding has since
// been replaced lets nobody in.
type filterEntry struct {
	b       *binding
	expires int64
}

// NewNAT adds a NAT joining inside (which gets it as gateway and must not
// have one yet) to outside.
func (w *World) NewNAT(name string, inside, outside *Network, cfg NATConfig) (*NAT, error) {
	if inside == outside || inside.w != w || outside.w != w {
		return nil, fmt.Errorf("vnet: NAT %s: inside and outside must be two networks of this world", name)
	}
	if cfg.MappingTimeout <= 0 {
		cfg.MappingTimeout = defaultMappingTimeout
	}
	if cfg.UnsolicitedTimeout <= 0 {
		cfg.UnsolicitedTimeout = defaultUnsolicitedTimeout
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, ErrClosed
	}
	if err := w.nameFreeLocked(name); err != nil {
		return nil, err
	}
	if inside.gateway.Load() != nil {
		return nil, fmt.Errorf("vnet: NAT %s: network %s already has a gateway", name, inside.name)
	}
	n := &NAT{w: w, name: name, cfg: cfg, cursor: natFirstPort}
	n.in, n.out = natSide{n, true}, natSide{n, false}
	var err error
	if n.inside, err = inside.attachLocked(cfg.Gateway, &n.in); err != nil {
		return nil, fmt.Errorf("vnet: NAT %s: inside: %w", name, err)
	}
	if n.outside, err = outside.attachLocked(cfg.Public, &n.out); err != nil {
		inside.detachLocked(n.inside)
		return nil, fmt.Errorf("vnet: NAT %s: outside: %w", name, err)
	}
	n.public, n.gateway = n.outside.addr, n.inside.addr
	n.rng = rand.New(rand.NewPCG(w.cfg.Seed, w.newIDLocked()))
	n.flushLocked()
	inside.gateway.Store(n.inside)
	w.nats[name] = n
	return n, nil
}

// Name returns the NAT's name.
func (n *NAT) Name() string { return n.name }

// Config returns the NAT's configuration (Public as created).
func (n *NAT) Config() NATConfig { return n.cfg }

// Public returns the NAT's current public address.
func (n *NAT) Public() netip.Addr {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.public
}

// Gateway returns the NAT's address on the inside network.
func (n *NAT) Gateway() netip.Addr { return n.gateway }

// Inside and Outside return the NAT's links, to shape or cut them.
func (n *NAT) Inside() *Link  { return n.inside }
func (n *NAT) Outside() *Link { return n.outside }

// Mappings reports how many mappings the NAT holds, expired ones that
// were not swept yet included.
func (n *NAT) Mappings() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.ports)
}

// SetPublicAddr moves the NAT to a new public address on its outside
// network, as a DHCP renewal does: all mappings are forgotten and the
// streams through it are reset. The inside hosts are not told.
func (n *NAT) SetPublicAddr(addr netip.Addr) error {
	if err := n.outside.net.move(n.outside, addr); err != nil {
		return fmt.Errorf("vnet: NAT %s: %w", n.name, err)
	}
	n.mu.Lock()
	n.public = addr.Unmap()
	streams := n.flushLocked()
	n.mu.Unlock()
	for _, s := range streams {
		s.reset("NAT address changed")
	}
	return nil
}

// Flush forgets every mapping and unsolicited flow, as a reboot does, and
// resets the streams through the NAT.
func (n *NAT) Flush() {
	n.mu.Lock()
	streams := n.flushLocked()
	n.mu.Unlock()
	for _, s := range streams {
		s.reset("NAT flushed")
	}
}

// flushLocked empties the tables and returns the streams to reset.
func (n *NAT) flushLocked() []*stream {
	n.maps = make(map[mapKey]*binding)
	n.exact = nil
	n.ports = make(map[portKey]*binding)
	n.filters = nil
	n.unsolicited = nil
	n.lastB = nil
	ss := make([]*stream, 0, len(n.streams))
	for s := range n.streams {
		ss = append(ss, s)
	}
	n.streams = nil
	return ss
}

// BlockUDPTo makes the NAT drop forwarded UDP to and from addr (such as
// another site's public address), established flows included, as
// testnet.Site.BlockUDPTo does. UnblockUDPTo undoes it.
func (n *NAT) BlockUDPTo(addr netip.Addr) {
	n.mu.Lock()
	if n.blocked == nil {
		n.blocked = make(map[netip.Addr]struct{})
	}
	n.blocked[addr.Unmap()] = struct{}{}
	n.mu.Unlock()
}

// UnblockUDPTo undoes BlockUDPTo.
func (n *NAT) UnblockUDPTo(addr netip.Addr) {
	n.mu.Lock()
	delete(n.blocked, addr.Unmap())
	n.mu.Unlock()
}

// outbound translates p, from inside, and forwards it outside (or back
// inside, hairpinned).
func (n *NAT) outbound(p *packet) {
	w := n.w
	if p.proto == UDP && n.cfg.BlockUDP {
		w.drop(p, &w.stats.blocked)
		return
	}
	dst := p.dst.Addr()
	n.mu.Lock()
	if dst == n.gateway {
		n.mu.Unlock()
		w.drop(p, &w.stats.noSocket) // the router serves nothing
		return
	}
	if _, ok := n.blocked[dst]; ok && p.proto == UDP {
		n.mu.Unlock()
		w.drop(p, &w.stats.blocked)
		return
	}
	if !p.forward(1) {
		// Dropped before a mapping is made: Linux discards the
		// conntrack entry of a packet it does not forward.
		n.mu.Unlock()
		w.drop(p, &w.stats.ttlExpired)
		return
	}
	now := w.now()
	n.sweepLocked(now)
	b := n.bindLocked(p.proto, p.src, p.dst, now)
	if b == nil {
		n.mu.Unlock()
		w.drop(p, &w.stats.natFiltered) // out of ports
		return
	}
	p.src = netip.AddrPortFrom(n.public, b.port)
	if dst == n.public {
		if !n.cfg.Hairpin {
			n.mu.Unlock()
			w.drop(p, &w.stats.noRoute)
			return
		}
		to, ok := n.admitLocked(p.proto, p.src, p.dst.Port(), now)
		if ok && p.syn != nil {
			p.syn.crossNAT(n)
		}
		n.mu.Unlock()
		if !ok {
			w.drop(p, &w.stats.natFiltered)
			return
		}
		p.dst = to
		n.inside.send(up, p)
		return
	}
	if p.syn != nil {
		p.syn.crossNAT(n)
	}
	n.mu.Unlock()
	n.outside.send(up, p)
}

// inbound translates p, from outside, and forwards it inside if a mapping
// admits it.
func (n *NAT) inbound(p *packet) {
	w := n.w
	if p.proto == UDP && n.cfg.BlockUDP {
		w.drop(p, &w.stats.blocked)
		return
	}
	n.mu.Lock()
	if p.dst.Addr() != n.public {
		n.mu.Unlock()
		w.drop(p, &w.stats.noRoute) // in flight across an address change
		return
	}
	if _, ok := n.blocked[p.src.Addr()]; ok && p.proto == UDP {
		n.mu.Unlock()
		w.drop(p, &w.stats.blocked)
		return
	}
	now := w.now()
	n.sweepLocked(now)
	to, ok := n.admitLocked(p.proto, p.src, p.dst.Port(), now)
	if !ok {
		n.mu.Unlock()
		w.drop(p, &w.stats.natFiltered)
		return
	}
	if !p.forward(1) {
		// Conntrack saw it (the mapping is refreshed), routing drops it.
		n.mu.Unlock()
		w.drop(p, &w.stats.ttlExpired)
		return
	}
	p.dst = to
	if p.syn != nil {
		p.syn.crossNAT(n)
	}
	n.mu.Unlock()
	n.inside.send(up, p)
}

func (n *NAT) timeout(proto Proto) int64 {
	if proto == TCP {
		return int64(tcpMappingTimeout)
	}
	return int64(n.cfg.MappingTimeout)
}

func (n *NAT) mappingRemote(r netip.AddrPort) netip.AddrPort {
	switch n.cfg.Mapping {
	case EndpointIndependentMapping:
		return netip.AddrPort{}
	case AddressDependentMapping:
		return netip.AddrPortFrom(r.Addr(), 0)
	}
	return r
}

func (n *NAT) filterRemote(r netip.AddrPort) netip.AddrPort {
	if n.cfg.Filtering == AddressDependentFiltering {
		return netip.AddrPortFrom(r.Addr(), 0)
	}
	return r
}

// bindLocked returns the mapping for a flow from inside to remote,
// making it if needed, and refreshes it and the remote's filter entry. It
// returns nil if no port is free.
func (n *NAT) bindLocked(proto Proto, inside, remote netip.AddrPort, now int64) *binding {
	flow := mapKey{proto, inside, remote}
	b := n.lastB
	if b == nil || b.expires <= now || n.lastFlow != flow {
		if b = n.lookupLocked(flow, now); b == nil {
			return nil
		}
		n.lastFlow, n.lastB = flow, b
	}
	t := n.timeout(proto)
	b.expires = now + t
	if n.cfg.Filtering != EndpointIndependentFiltering {
		n.allowLocked(b, filterKey{proto, b.port, n.filterRemote(remote)}, now, now+t)
	}
	return b
}

// lookupLocked finds or makes the mapping for flow.
func (n *NAT) lookupLocked(flow mapKey, now int64) *binding {
	proto, inside, remote := flow.proto, flow.inside, flow.remote
	var b *binding
	if n.exact != nil {
		b = n.liveLocked(n.exact[mapKey{proto, inside, remote}], now)
	}
	if b == nil {
		key := mapKey{proto, inside, n.mappingRemote(remote)}
		b = n.liveLocked(n.maps[key], now)
		switch {
		case b == nil:
			if b = n.newBindingLocked(key, false, remote, now); b == nil {
				return nil
			}
		case n.clashesLocked(proto, b.port, remote, now):
			// Conntrack holds (remote -> public:port) for an
			// unsolicited packet: this flow's reply tuple would clash,
			// so it gets a port of its own (NoInputFirewall).
			if b = n.newBindingLocked(flow, true, remote, now); b == nil {
				return nil
			}
		}
	}
	return b
}

// allowLocked lets the remote of fk in to b until expires.
func (n *NAT) allowLocked(b *binding, fk filterKey, now, expires int64) {
	if f := b.last; f != nil && b.lastKey == fk && f.expires > now {
		f.expires = expires
		return
	}
	if n.filters == nil {
		n.filters = make(map[filterKey]*filterEntry)
	}
	f := n.filters[fk]
	if f == nil || f.b != b {
		f = &filterEntry{b: b}
		n.filters[fk] = f
	}
	f.expires = expires
	b.lastKey, b.last = fk, f
}

// liveLocked returns b unless it expired (then it is removed).
func (n *NAT) liveLocked(b *binding, now int64) *binding {
	if b != nil && b.expires <= now {
		n.removeLocked(b)
		return nil
	}
	return b
}

func (n *NAT) removeLocked(b *binding) {
	if n.lastB == b {
		n.lastB = nil
	}
	if b.exact {
		if n.exact[b.key] == b {
			delete(n.exact, b.key)
		}
	} else if n.maps[b.key] == b {
		delete(n.maps, b.key)
	}
	pk := portKey{b.key.proto, b.port}
	if n.ports[pk] == b {
		delete(n.ports, pk)
	}
}

func (n *NAT) newBindingLocked(key mapKey, exact bool, remote netip.AddrPort, now int64) *binding {
	port, ok := n.allocLocked(key.proto, key.inside.Port(), remote, now)
	if !ok {
		return nil
	}
	b := &binding{key: key, exact: exact, port: port}
	if exact {
		if n.exact == nil {
			n.exact = make(map[mapKey]*binding)
		}
		n.exact[key] = b
	} else {
		n.maps[key] = b
	}
	n.ports[portKey{key.proto, port}] = b
	return b
}

// clashesLocked reports whether an unsolicited flow from remote to port
// is remembered.
func (n *NAT) clashesLocked(proto Proto, port uint16, remote netip.AddrPort, now int64) bool {
	if n.unsolicited == nil {
		return false
	}
	exp, ok := n.unsolicited[filterKey{proto, port, remote}]
	return ok && exp > now
}

// allocLocked picks a free public port for a new mapping of an inside
// socket on port want, whose first packet goes to remote.
func (n *NAT) allocLocked(proto Proto, want uint16, remote netip.AddrPort, now int64) (uint16, bool) {
	free := func(p uint16) bool {
		if p < natFirstPort {
			return false
		}
		if b := n.ports[portKey{proto, p}]; b != nil {
			if b.expires > now {
				return false
			}
			n.removeLocked(b)
		}
		return !n.clashesLocked(proto, p, remote, now)
	}
	switch n.cfg.Ports {
	case PreservePort:
		if free(want) {
			return want, true
		}
		// The next free port above it. Searches for one port that many
		// sockets want (a symmetric NAT's mappings of one socket) go on
		// from where the last ended: no quadratic scans.
		if want != n.taken {
			n.taken, n.cursor = want, want+1
		}
	case RandomPorts:
		for range 32 {
			p := uint16(natFirstPort + n.rng.IntN(natLastPort-natFirstPort+1))
			if free(p) {
				return p, true
			}
		}
	}
	p := n.cursor
	for range natLastPort - natFirstPort + 1 {
		if p < natFirstPort || p == 0 {
			p = natFirstPort
		}
		if free(p) {
			n.cursor = p + 1
			return p, true
		}
		p++
	}
	return 0, false
}

// admitLocked decides whether a packet from remote to public port gets
// in, and to which inside socket; admitted packets refresh their mapping
// and filter entry, as conntrack's replies do.
func (n *NAT) admitLocked(proto Proto, remote netip.AddrPort, port uint16, now int64) (netip.AddrPort, bool) {
	b := n.liveLocked(n.ports[portKey{proto, port}], now)
	if b == nil {
		n.unsolicitedLocked(proto, port, remote, now)
		return netip.AddrPort{}, false
	}
	t := n.timeout(proto)
	if n.cfg.Filtering != EndpointIndependentFiltering {
		fk := filterKey{proto, port, n.filterRemote(remote)}
		f := b.last
		if f == nil || b.lastKey != fk {
			f = n.filters[fk]
		}
		if f == nil || f.b != b || f.expires <= now {
			n.unsolicitedLocked(proto, port, remote, now)
			return netip.AddrPort{}, false
		}
		f.expires = now + t
		b.lastKey, b.last = fk, f
	}
	b.expires = now + t
	return b.key.inside, true
}

func (n *NAT) unsolicitedLocked(proto Proto, port uint16, remote netip.AddrPort, now int64) {
	if !n.cfg.NoInputFirewall {
		return
	}
	if n.unsolicited == nil {
		n.unsolicited = make(map[filterKey]int64)
	}
	n.lastB = nil // the cached flow skips the check for clashes
	n.unsolicited[filterKey{proto, port, remote}] = now + int64(n.cfg.UnsolicitedTimeout)
}

// sweepLocked removes what expired, at most every half mapping timeout:
// lookups check expiry themselves, this only bounds memory.
func (n *NAT) sweepLocked(now int64) {
	if now < n.nextSweep {
		return
	}
	n.nextSweep = now + max(int64(n.cfg.MappingTimeout)/2, int64(time.Second))
	for _, b := range n.ports {
		if b.expires <= now {
			n.removeLocked(b)
		}
	}
	for k, f := range n.filters {
		if f.expires <= now || n.ports[portKey{k.proto, k.port}] != f.b {
			delete(n.filters, k)
		}
	}
	for k, exp := range n.unsolicited {
		if exp <= now {
			delete(n.unsolicited, k)
		}
	}
}

func (n *NAT) addStream(s *stream) {
	n.mu.Lock()
	if n.streams == nil {
		n.streams = make(map[*stream]struct{})
	}
	n.streams[s] = struct{}{}
	n.mu.Unlock()
}

func (n *NAT) removeStream(s *stream) {
	n.mu.Lock()
	delete(n.streams, s)
	n.mu.Unlock()
}
