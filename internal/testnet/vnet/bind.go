package vnet

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.zx2c4.com/wireguard/conn"
)

// Bind is a wireguard-go conn.Bind on a Host's UDP port. It speaks
// conn.StdNetBind's endpoint type, *conn.StdNetEndpoint, both ways, so
// code written against StdNetBind (a Bind that wraps it and screens what
// its ReceiveFuncs return) runs on it unchanged. It can be opened again
// after Close, as wireguard-go's BindUpdate does.
type Bind struct {
	h     *Host
	batch int

	mu   sync.Mutex // serialises Open and Close
	sock atomic.Pointer[socket]
}

var _ conn.Bind = (*Bind)(nil)

// NewBind returns a closed Bind on the host; Open binds its port.
func (h *Host) NewBind() *Bind { return &Bind{h: h, batch: h.w.cfg.BindBatchSize} }

// Open implements conn.Bind: it binds port (an ephemeral one if 0) and
// returns one ReceiveFunc.
func (b *Bind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sock.Load() != nil {
		return nil, 0, conn.ErrBindAlreadyOpen
	}
	s, err := b.h.bindUDP(port)
	if err != nil {
		return nil, 0, err
	}
	b.sock.Store(s)
	return []conn.ReceiveFunc{b.receiveFunc(s)}, s.port, nil
}

// receiveFunc reads from s. Calls are serialised: pk and eps are theirs.
// eps caches one *conn.StdNetEndpoint per recent source so that a steady
// flow costs no allocation; an endpoint handed out is never changed
// (ClearSrc clears nothing here: there is no sticky source).
func (b *Bind) receiveFunc(s *socket) conn.ReceiveFunc {
	var (
		mu      sync.Mutex
		pk      = make([]*packet, b.batch)
		eps     map[netip.AddrPort]*conn.StdNetEndpoint
		lastSrc netip.AddrPort // a flow's packets skip the map
		lastEp  *conn.StdNetEndpoint
	)
	const maxCached = 256
	return func(bufs [][]byte, sizes []int, out []conn.Endpoint) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		n, err := s.recv(pk[:min(len(bufs), len(pk))], nil)
		if err != nil {
			return 0, err
		}
		for i, p := range pk[:n] {
			sizes[i] = copy(bufs[i], p.payload())
			ep := lastEp
			if p.src != lastSrc {
				ep = eps[p.src]
			}
			if ep == nil {
				if eps == nil || len(eps) >= maxCached {
					eps = make(map[netip.AddrPort]*conn.StdNetEndpoint)
				}
				ep = &conn.StdNetEndpoint{AddrPort: p.src}
				eps[p.src] = ep
			}
			lastSrc, lastEp = p.src, ep
			out[i] = ep
			pk[i] = nil
			p.release()
		}
		return n, nil
	}
}

// Close implements conn.Bind; the ReceiveFuncs of the last Open return
// net.ErrClosed from then on.
func (b *Bind) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.sock.Swap(nil); s != nil {
		s.close()
	}
	return nil
}

// Send implements conn.Bind. ep must be a *conn.StdNetEndpoint.
func (b *Bind) Send(bufs [][]byte, ep conn.Endpoint) error {
	s := b.sock.Load()
	if s == nil {
		return net.ErrClosed
	}
	e, ok := ep.(*conn.StdNetEndpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	for _, buf := range bufs {
		if err := s.send(e.AddrPort, buf); err != nil {
			return err
		}
	}
	return nil
}

// SendTTL sends bufs to ep as Send does, with the IP TTL (IPv6: hop
// limit) ttl, 1 to 255, instead of DefaultTTL: the packets die at the
// router that would take their last hop. Concurrent Sends keep theirs.
func (b *Bind) SendTTL(bufs [][]byte, ep conn.Endpoint, ttl int) error {
	s := b.sock.Load()
	if s == nil {
		return net.ErrClosed
	}
	e, ok := ep.(*conn.StdNetEndpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	if ttl < 1 || ttl > 255 {
		return fmt.Errorf("vnet: TTL %d out of range", ttl)
	}
	for _, buf := range bufs {
		if err := s.sendTTL(e.AddrPort, buf, uint8(ttl)); err != nil {
			return err
		}
	}
	return nil
}

// ParseEndpoint implements conn.Bind: "ip:port" or "[ip6]:port".
func (b *Bind) ParseEndpoint(str string) (conn.Endpoint, error) {
	ap, err := netip.ParseAddrPort(str)
	if err != nil {
		return nil, err
	}
	return &conn.StdNetEndpoint{AddrPort: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}, nil
}

// SetMark implements conn.Bind; there is no routing by mark here.
func (b *Bind) SetMark(uint32) error { return nil }

// BatchSize implements conn.Bind (Config.BindBatchSize).
func (b *Bind) BatchSize() int { return b.batch }

// Port returns the bound port, or 0 when closed.
func (b *Bind) Port() uint16 {
	if s := b.sock.Load(); s != nil {
		return s.port
	}
	return 0
}
