package vnet

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
)

// Network is a segment with one prefix: every host and NAT side on it has
// one address in the prefix, and it reaches anything else through its
// gateway, if it has one (the inside of the NAT it sits behind).
type Network struct {
	w      *World
	name   string
	prefix netip.Prefix

	// The data path finds links without taking a lock (a read lock's
	// shared counter costs more than the rest of a hop when cores route
	// at once): table is a map that is never written once published, and
	// only addresses added since it was built are looked up under mu, in
	// recent. When recent reaches a quarter of table, a new table is
	// built, so building a network of n hosts copies O(n) entries in all.
	table     atomic.Pointer[map[netip.Addr]*Link]
	hasRecent atomic.Bool // recent is not empty
	gateway   atomic.Pointer[Link]
	hops      atomic.Uint32 // routers a packet crosses here (SetHops)

	mu     sync.RWMutex         // guards links, recent and next
	links  map[netip.Addr]*Link // every link: the master copy
	recent map[netip.Addr]*Link // links added since table was built
	next   netip.Addr           // where the search for a free address starts
}

// Below this many recent links, the table is not rebuilt.
const minRecent = 64

// addLocked records l at addr.
func (n *Network) addLocked(addr netip.Addr, l *Link) {
	n.links[addr] = l
	if n.recent == nil {
		n.recent = make(map[netip.Addr]*Link)
	}
	n.recent[addr] = l
	n.hasRecent.Store(true)
	if t := n.table.Load(); len(n.recent) >= max(minRecent, len(*t)/4) {
		n.rebuildLocked()
	}
}

// rebuildLocked publishes a new table of every link.
func (n *Network) rebuildLocked() {
	t := make(map[netip.Addr]*Link, len(n.links))
	for a, l := range n.links {
		t[a] = l
	}
	n.table.Store(&t)
	n.recent = nil
	n.hasRecent.Store(false)
}

// lookup returns the link holding dst, or nil.
func (n *Network) lookup(dst netip.Addr) *Link {
	if l := (*n.table.Load())[dst]; l != nil {
		return l
	}
	if !n.hasRecent.Load() {
		return nil
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.recent[dst]
}

// node is what sits at the far end of a link from its network: a Host or
// one side of a NAT. input runs on whichever goroutine delivers p (a
// sender's, or a link's timer) and must not block.
type node interface {
	input(p *packet, from *Link)
}

// SetHops makes packets crossing the network (from one of its links to
// another) pass hops routers, as the internet between two sites does:
// each takes one off the packet's TTL, and one whose TTL would reach 0
// is dropped (Stats.TTLExpired). Zero, the default, is one Ethernet
// segment. A NAT is a router of its own (NATConfig).
func (n *Network) SetHops(hops uint8) { n.hops.Store(uint32(hops)) }

// Name returns the name the network was created with.
func (n *Network) Name() string { return n.name }

// Prefix returns the network's prefix.
func (n *Network) Prefix() netip.Prefix { return n.prefix }

func (n *Network) String() string { return n.name + " " + n.prefix.String() }

// AddHost attaches a new host to the network at the lowest free address.
func (n *Network) AddHost(name string) (*Host, error) { return n.AddHostAt(name, netip.Addr{}) }

// AddHostAt attaches a new host to the network at addr.
func (n *Network) AddHostAt(name string, addr netip.Addr) (*Host, error) {
	w := n.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, ErrClosed
	}
	if err := w.nameFreeLocked(name); err != nil {
		return nil, err
	}
	h := newHost(w, name)
	l, err := n.attachLocked(addr, h)
	if err != nil {
		return nil, fmt.Errorf("vnet: host %s: %w", name, err)
	}
	h.link = l
	h.addr = l.addr
	w.hosts[name] = h
	return h, nil
}

// attachLocked makes a link from owner to the network at addr (the
// lowest free address if addr is zero). w.mu is held (it orders before
// n.mu).
func (n *Network) attachLocked(addr netip.Addr, owner node) (*Link, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !addr.IsValid() {
		a, err := n.freeAddrLocked()
		if err != nil {
			return nil, err
		}
		addr = a
	}
	addr = addr.Unmap()
	if !n.prefix.Contains(addr) {
		return nil, fmt.Errorf("%w: %s not in %s", ErrOutOfPrefix, addr, n.prefix)
	}
	if _, ok := n.links[addr]; ok {
		return nil, fmt.Errorf("%w: %s on %s", ErrAddrUsed, addr, n.name)
	}
	l := newLink(n.w, n, owner, addr)
	n.addLocked(addr, l)
	return l, nil
}

// freeAddrLocked returns the lowest free address at or after n.next,
// skipping an IPv4 prefix's broadcast address.
func (n *Network) freeAddrLocked() (netip.Addr, error) {
	last := lastAddr(n.prefix)
	for a := n.next; a.IsValid() && n.prefix.Contains(a); a = a.Next() {
		if a.Is4() && n.prefix.Bits() < 31 && a == last {
			break
		}
		if _, ok := n.links[a]; !ok {
			n.next = a.Next()
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: %s", ErrFull, n.prefix)
}

// lastAddr returns the highest address in p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := range b {
		bit := i * 8
		switch {
		case bit >= p.Bits():
			b[i] = 0xff
		case bit+8 > p.Bits():
			b[i] |= 0xff >> (p.Bits() - bit)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// move re-homes l from its address to to, as when a NAT's public address
// changes.
func (n *Network) move(l *Link, to netip.Addr) error {
	to = to.Unmap()
	if !n.prefix.Contains(to) {
		return fmt.Errorf("%w: %s not in %s", ErrOutOfPrefix, to, n.prefix)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if other, ok := n.links[to]; ok && other != l {
		return fmt.Errorf("%w: %s on %s", ErrAddrUsed, to, n.name)
	}
	l.mu.Lock()
	delete(n.links, l.addr)
	l.addr = to
	l.mu.Unlock()
	n.links[to] = l
	n.rebuildLocked() // the old address must stop leading here at once
	return nil
}

// detachLocked removes l (a NAT's inside link whose outside failed).
func (n *Network) detachLocked(l *Link) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.links, l.addr)
	n.rebuildLocked()
}

// route forwards p, which arrived from link from, to the link holding its
// destination, or the gateway for destinations outside the prefix.
func (n *Network) route(p *packet, from *Link) {
	dst := p.dst.Addr()
	var l *Link
	if n.prefix.Contains(dst) {
		l = n.lookup(dst)
	} else {
		l = n.gateway.Load()
	}
	if l == nil || l == from {
		n.w.drop(p, &n.w.stats.noRoute)
		return
	}
	if h := n.hops.Load(); h > 0 && !p.forward(uint8(h)) {
		n.w.drop(p, &n.w.stats.ttlExpired)
		return
	}
	l.send(down, p)
}
