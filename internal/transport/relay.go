package transport

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// DirectWindow is how long a direct path stays in use after the last proof
// that it works, when a relay is there to fall back on.
const DirectWindow = 3 * time.Second

// Relay is a bridge that carries relay frames: over the node's UDP socket
// or over a TCP connection.
type Relay interface {
	// SendRelay sends complete relay frames to the bridge.
	SendRelay(frames [][]byte) error
	// String names the bridge and transport, e.g. "203.0.113.1:4610/udp".
	String() string
}

// relayPath is a peer's path through a bridge: the bridge and the relay id
// it gave the peer.
type relayPath struct {
	via Relay
	id  uint32
}

// FrameHandler receives the non-WireGuard frames of a received batch (the
// bridge protocol's control and relay frames). It runs on a receive
// goroutine and must not keep the slices after it returns.
type FrameHandler interface {
	HandleFrames(frames [][]byte, srcs []netip.AddrPort)
}

// SetFrameHandler installs the handler for non-WireGuard frames. Without
// one they are dropped and counted.
func (b *Bind) SetFrameHandler(h FrameHandler) { b.frames.Store(&h) }

type frameBatch struct {
	frames [][]byte
	srcs   []netip.AddrPort
}

var frameBatches = sync.Pool{New: func() any { return new(frameBatch) }}

func getFrameBatch() *frameBatch { return frameBatches.Get().(*frameBatch) }

// add keeps a frame for the handler.
func (f *frameBatch) add(frame []byte, src netip.AddrPort) {
	f.frames = append(f.frames, frame)
	f.srcs = append(f.srcs, src)
}

func (f *frameBatch) deliver(b *Bind) {
	if h := b.frames.Load(); h != nil && len(f.frames) > 0 {
		(*h).HandleFrames(f.frames, f.srcs)
	} else {
		b.stats.ControlDropped.Add(uint64(len(f.frames)))
	}
	clear(f.frames)
	f.frames, f.srcs = f.frames[:0], f.srcs[:0]
	frameBatches.Put(f)
}

// SendFrames sends non-WireGuard frames (bridge control, probes, relayed
// frames a bridge forwards) straight to dst over the node's UDP socket.
func (b *Bind) SendFrames(frames [][]byte, dst netip.AddrPort) error {
	return b.inner.Send(frames, &conn.StdNetEndpoint{AddrPort: dst})
}

// AddUDPRelay makes relay frames arriving from addr count as WireGuard
// messages relayed by r (a bridge this node registered with over UDP).
func (b *Bind) AddUDPRelay(addr netip.AddrPort, r Relay) {
	b.relaysMu.Lock()
	b.relays[addr] = r
	b.relaysMu.Unlock()
}

// RemoveUDPRelay undoes AddUDPRelay.
func (b *Bind) RemoveUDPRelay(addr netip.AddrPort) {
	b.relaysMu.Lock()
	delete(b.relays, addr)
	b.relaysMu.Unlock()
}

func (b *Bind) udpRelay(src netip.AddrPort) Relay {
	b.relaysMu.RLock()
	defer b.relaysMu.RUnlock()
	return b.relays[src]
}

// SetRelay gives the peer key a path through r with the relay id the
// bridge assigned it. It reports false if key is not a peer.
func (b *Bind) SetRelay(key identity.PublicKey, r Relay, id uint32) bool {
	p := b.Peer(key)
	if p == nil {
		return false
	}
	b.setRelay(p, relayPath{via: r, id: id})
	return true
}

// MoveRelay moves every peer's path through old onto r, keeping its relay
// id (the same bridge, reached over another transport or connection).
func (b *Bind) MoveRelay(old, r Relay) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.peers {
		if rp := p.relay.Load(); rp != nil && rp.via == old {
			b.setRelayLocked(p, relayPath{via: r, id: rp.id})
		}
	}
}

// DirectWorks records proof that the peer key is reachable at addr (a
// probe it answered from there): the peer's direct path moves there and is
// used for DirectWindow.
func (b *Bind) DirectWorks(key identity.PublicKey, addr netip.AddrPort) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.peers[key]
	if p == nil {
		return
	}
	if d := p.direct.Load(); d == nil || d.AddrPort != addr {
		p.direct.Store(&conn.StdNetEndpoint{AddrPort: addr})
		if d != nil {
			b.stats.Roamed.Add(1)
		}
	}
	b.addAddrLocked(p, addr)
	p.markDirectAlive()
}

// Path describes how the Bind sends to a peer now.
type Path struct {
	Kind   string         // "direct", "relay", or "" (no path)
	Direct netip.AddrPort // the direct address, if known
	Relay  string         // the bridge, if a relay path is known
}

// PathOf reports the path to key's packets would take now.
func (b *Bind) PathOf(key identity.PublicKey) Path {
	p := b.Peer(key)
	if p == nil {
		return Path{}
	}
	var out Path
	out.Direct = p.Direct()
	r := p.relay.Load()
	if r != nil {
		out.Relay = r.via.String()
	}
	switch {
	case r != nil && (!out.Direct.IsValid() || !p.directAlive()):
		out.Kind = "relay"
	case out.Direct.IsValid():
		out.Kind = "direct"
	}
	return out
}

// RelayedPeers lists the peers that have a relay path, with their current
// direct address (invalid if none): the ones whose direct path is worth
// probing.
func (b *Bind) RelayedPeers() map[identity.PublicKey]netip.AddrPort {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make(map[identity.PublicKey]netip.AddrPort)
	for k, p := range b.peers {
		if p.relay.Load() != nil {
			out[k] = p.Direct()
		}
	}
	return out
}

func (p *PeerEndpoint) directAlive() bool {
	return time.Now().UnixNano() < p.directUntil.Load()
}

func (p *PeerEndpoint) markDirectAlive() {
	p.directUntil.Store(time.Now().Add(DirectWindow).UnixNano())
}

// relayBufs holds the frames built for one relayed send.
type relayBufs struct {
	frames [][]byte
	store  [][]byte
}

var relayBufPool = sync.Pool{New: func() any { return new(relayBufs) }}

// sendRelay wraps each WireGuard message in a relay frame for r.
func (b *Bind) sendRelay(bufs [][]byte, r *relayPath) error {
	rb := relayBufPool.Get().(*relayBufs)
	defer relayBufPool.Put(rb)
	rb.frames = rb.frames[:0]
	for i, buf := range bufs {
		if i == len(rb.store) {
			// Full-size buffers, like wireguard-go's own: StdNetBind's UDP
			// GSO coalesces a batch into the spare capacity of its first
			// buffer. With buffers sized to the message it cannot, every
			// frame becomes its own datagram, and the relay runs at a
			// third of the speed (measured).
			rb.store = append(rb.store, make([]byte, 0, wire.RelayHeaderSize+device.MaxMessageSize))
		}
		f := rb.store[i][:wire.RelayHeaderSize+len(buf)]
		wire.RelayHeader(f, r.id)
		copy(f[wire.RelayHeaderSize:], buf)
		rb.frames = append(rb.frames, f)
	}
	b.stats.RelayedOut.Add(uint64(len(bufs)))
	return r.via.SendRelay(rb.frames)
}

// relayed matches a WireGuard message that came through a bridge to its
// peer. nil: drop (initiations always leave here for the handshake
// pipeline, which delivers them later if they pass).
func (b *Bind) relayed(msg []byte, path relayPath) conn.Endpoint {
	if len(msg) < 8 || msg[1]|msg[2]|msg[3] != 0 {
		return nil
	}
	var p *PeerEndpoint
	switch msg[0] {
	case msgInitiation:
		if h := b.hs.Load(); h != nil {
			h.submit(msg, hsOrigin{path: path, relayed: true})
		}
		return nil
	case msgResponse, msgCookie, msgTransport:
		off := 4
		if msg[0] == msgResponse {
			off = 8
		}
		if len(msg) < off+4 {
			return nil
		}
		b.mu.RLock()
		p = b.byIndex[binary.LittleEndian.Uint32(msg[off:off+4])]
		b.mu.RUnlock()
		if p == nil {
			b.stats.UnknownSession.Add(1)
		}
	}
	if p == nil {
		return nil
	}
	b.stats.RelayedIn.Add(1)
	if !p.sawMessage(msg[0]) {
		return nil
	}
	return b.relayEndpoint(p, path, msg[0] != msgCookie)
}

// relayEndpoint is the endpoint WireGuard gets with a message of peer p
// that came through path: p itself if that is p's relay path, else a
// candidate. A candidate that promotes becomes the peer's relay path only
// if WireGuard authenticates the message and answers through it (Send),
// so a forged frame cannot redirect the peer; one that does not (an
// initiation's) only carries the handshake's answer back.
func (b *Bind) relayEndpoint(p *PeerEndpoint, path relayPath, promotes bool) conn.Endpoint {
	if cur := p.relay.Load(); cur != nil && *cur == path {
		return p
	}
	return &relayCandidate{path: path, peer: p, promotes: promotes}
}

// relayCandidate is a relay path a message came through that is not (yet)
// its peer's: handed to WireGuard with the message, adopted on first send
// if promotes.
type relayCandidate struct {
	path     relayPath
	peer     *PeerEndpoint
	promotes bool
}

func (c *relayCandidate) ClearSrc()           {}
func (c *relayCandidate) SrcToString() string { return "" }
func (c *relayCandidate) DstToString() string { return c.path.via.String() }
func (c *relayCandidate) DstToBytes() []byte {
	return binary.BigEndian.AppendUint32([]byte(c.path.via.String()), c.path.id)
}
func (c *relayCandidate) DstIP() netip.Addr { return netip.Addr{} }
func (c *relayCandidate) SrcIP() netip.Addr { return netip.Addr{} }

// relayLimitKey is the "source address" relayed initiations are rate
// limited by: one per bridge and relay id, in the discard prefix 100::/64
// so it can never be a real source.
func relayLimitKey(path relayPath) netip.Addr {
	var a [16]byte
	a[0] = 0x01
	binary.BigEndian.PutUint32(a[8:12], path.id)
	h := fnv32(path.via.String())
	binary.BigEndian.PutUint32(a[12:16], h)
	return netip.AddrFrom16(a)
}

func fnv32(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// Deliver hands WireGuard a message that arrived through r outside the
// UDP sockets (a relay frame on a bridge's TCP connection). msg is copied.
// It reports false if the message was dropped (queue full or closed).
func (b *Bind) Deliver(msg []byte, r Relay, id uint32) bool {
	b.injectMu.Lock()
	q := b.inject
	b.injectMu.Unlock()
	if q == nil || len(msg) > device.MaxMessageSize {
		return false
	}
	return q.push(injected{msg: append(getInjectBuf(), msg...), path: relayPath{via: r, id: id}})
}

// deliverInitiation hands WireGuard an initiation the handshake pipeline
// passed, with the endpoint to answer through. It reports false if the
// queue is full or closed.
func (b *Bind) deliverInitiation(msg []byte, ep conn.Endpoint) bool {
	b.injectMu.Lock()
	q := b.inject
	b.injectMu.Unlock()
	if q == nil {
		return false
	}
	return q.push(injected{msg: append(getInjectBuf(), msg...), ep: ep})
}

// injected is a message for WireGuard from outside the UDP sockets: ep is
// set if its endpoint is decided already, else path is the relay path it
// came through.
type injected struct {
	msg  []byte
	path relayPath
	ep   conn.Endpoint
}

var injectBufs = sync.Pool{New: func() any { b := make([]byte, 0, device.MaxMessageSize); return &b }}

func getInjectBuf() []byte { return (*injectBufs.Get().(*[]byte))[:0] }

func putInjectBuf(b []byte) { injectBufs.Put(&b) }

// injectQueue is a bounded queue of injected messages: TCP-relayed
// messages in ch, and in hs the initiations the handshake pipeline passed,
// which a busy TCP relay must not crowd out (each cost two X25519 and is
// recorded against replay already).
type injectQueue struct {
	ch     chan injected
	hs     chan injected
	closed chan struct{}
	once   sync.Once
}

const injectQueueLen = 1024

func newInjectQueue() *injectQueue {
	return &injectQueue{ch: make(chan injected, injectQueueLen), hs: make(chan injected, hsQueueLen), closed: make(chan struct{})}
}

func (q *injectQueue) push(m injected) bool {
	select {
	case <-q.closed:
		putInjectBuf(m.msg)
		return false
	default:
	}
	ch := q.ch
	if m.ep != nil {
		ch = q.hs
	}
	select {
	case ch <- m:
		return true
	default:
		putInjectBuf(m.msg)
		return false
	}
}

// next returns a queued message without waiting, initiations first.
func (q *injectQueue) next() (injected, bool) {
	select {
	case m := <-q.hs:
		return m, true
	default:
	}
	select {
	case m := <-q.hs:
		return m, true
	case m := <-q.ch:
		return m, true
	default:
		return injected{}, false
	}
}

func (q *injectQueue) close() { q.once.Do(func() { close(q.closed) }) }

// receiveInjected is the ReceiveFunc WireGuard reads injected messages
// with.
func (b *Bind) receiveInjected(q *injectQueue) conn.ReceiveFunc {
	return func(bufs [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		for {
			m, ok := q.next()
			if !ok {
				select {
				case <-q.closed:
					return 0, net.ErrClosed
				case m = <-q.hs:
				case m = <-q.ch:
				}
			}
			n := 0
			for {
				ep := m.ep
				if ep == nil {
					ep = b.relayed(m.msg, m.path)
				}
				if ep != nil && len(m.msg) <= len(bufs[n]) {
					sizes[n] = copy(bufs[n], m.msg)
					eps[n] = ep
					n++
				}
				putInjectBuf(m.msg)
				if n == len(bufs) {
					break
				}
				var more bool
				if m, more = q.next(); !more {
					break
				}
			}
			if n > 0 {
				return n, nil
			}
		}
	}
}
