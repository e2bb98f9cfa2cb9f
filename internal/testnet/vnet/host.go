package vnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// Host is a machine with one address on one network. Its UDP ports are
// shared by its Binds and UDPConns; its TCP ports by its listeners and the
// streams it dials.
type Host struct {
	w    *World
	name string
	link *Link
	addr netip.Addr
	done chan struct{} // closed when the world closes

	// mu guards the fields below. The data path read-locks it to find a
	// socket; binding and closing write-lock it.
	mu        sync.RWMutex
	closed    bool
	udp       map[uint16]*socket
	listeners map[uint16]*Listener
	tcp       map[uint16]struct{}  // local ports of streams this host dialled
	streams   map[*stream]struct{} // streams with an end here
	nextUDP   uint16               // where the search for an ephemeral port starts
	nextTCP   uint16
}

// Ephemeral ports, as Linux's ip_local_port_range.
const (
	ephemeralFirst = 32768
	ephemeralLast  = 60999
)

var errHostClosed = errors.New("vnet: host closed")

func newHost(w *World, name string) *Host {
	return &Host{w: w, name: name, done: make(chan struct{}), nextUDP: ephemeralFirst, nextTCP: ephemeralFirst}
}

// Name returns the host's name.
func (h *Host) Name() string { return h.name }

// Addr returns the host's address.
func (h *Host) Addr() netip.Addr { return h.addr }

// InterfaceAddrs has net.InterfaceAddrs's signature and form for this
// host: its address with its network's prefix length (a *net.IPNet,
// "10.1.0.2/24"), so code that lists local addresses or derives broadcast
// addresses can take it as its source.
func (h *Host) InterfaceAddrs() ([]net.Addr, error) {
	bits := h.link.net.prefix.Bits()
	return []net.Addr{&net.IPNet{IP: h.addr.AsSlice(), Mask: net.CIDRMask(bits, h.addr.BitLen())}}, nil
}

// Link returns the host's link to its network: set its delay, loss and
// bandwidth there, or cut it.
func (h *Host) Link() *Link { return h.link }

func (h *Host) String() string { return h.name + " " + h.addr.String() }

// bindUDP opens a socket on port (an ephemeral one if 0).
func (h *Host) bindUDP(port uint16) (*socket, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errHostClosed
	}
	if port == 0 {
		p, ok := ephemeral(&h.nextUDP, func(p uint16) bool { _, used := h.udp[p]; return used })
		if !ok {
			return nil, fmt.Errorf("vnet: %s: no free UDP port", h.name)
		}
		port = p
	} else if _, used := h.udp[port]; used {
		return nil, fmt.Errorf("vnet: %s: udp port %d: address already in use", h.name, port)
	}
	s := newSocket(h, port)
	if h.udp == nil {
		h.udp = make(map[uint16]*socket)
	}
	h.udp[port] = s
	return s, nil
}

// unbindUDP forgets s (if it still holds its port).
func (h *Host) unbindUDP(s *socket) {
	h.mu.Lock()
	if h.udp[s.port] == s {
		delete(h.udp, s.port)
	}
	h.mu.Unlock()
}

// ephemeral finds a port in the ephemeral range not used, starting at
// *next, and moves *next past it.
func ephemeral(next *uint16, used func(uint16) bool) (uint16, bool) {
	p := *next
	for range ephemeralLast - ephemeralFirst + 1 {
		if p < ephemeralFirst || p > ephemeralLast {
			p = ephemeralFirst
		}
		if !used(p) {
			*next = p + 1
			return p, true
		}
		p++
	}
	return 0, false
}

// output sends p from this host.
func (h *Host) output(p *packet) {
	if p.dst.Addr() == h.addr {
		h.input(p, nil)
		return
	}
	h.link.send(up, p)
}

// input implements node.
func (h *Host) input(p *packet, _ *Link) {
	if p.syn != nil {
		h.acceptSyn(p)
		return
	}
	if p.proto != UDP {
		h.w.drop(p, &h.w.stats.noSocket)
		return
	}
	h.mu.RLock()
	s := h.udp[p.dst.Port()]
	h.mu.RUnlock()
	if s == nil {
		h.w.drop(p, &h.w.stats.noSocket)
		return
	}
	s.deliver(p)
}

// close closes everything the host has open.
func (h *Host) close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	close(h.done)
	socks := make([]*socket, 0, len(h.udp))
	for _, s := range h.udp {
		socks = append(socks, s)
	}
	lns := make([]*Listener, 0, len(h.listeners))
	for _, l := range h.listeners {
		lns = append(lns, l)
	}
	streams := make([]*stream, 0, len(h.streams))
	for s := range h.streams {
		streams = append(streams, s)
	}
	h.mu.Unlock()
	for _, s := range socks {
		s.close()
	}
	for _, l := range lns {
		l.Close()
	}
	for _, s := range streams {
		s.reset("world closed")
	}
}
