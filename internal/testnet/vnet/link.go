package vnet

import (
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tomoe-net/tomoe/internal/clock"
)

// LinkConfig is what a link does to the packets crossing it. Each field
// applies to each direction separately: a link with Delay 10ms adds 10 ms
// to a host's packets going out and 10 ms to those coming in, and a
// Bandwidth of 1e6 gives 1 MB/s each way. The zero value is an ideal
// link: packets cross it at once, on the sender's goroutine.
type LinkConfig struct {
	// Delay is the one-way latency.
	Delay time.Duration
	// Loss is the probability (0 to 1) that a datagram is lost.
	// Connection requests and stream data are never lost: TCP would
	// retransmit them, and vnet does not model that.
	Loss float64
	// Bandwidth in bytes a second shapes datagrams with a token bucket
	// (0: unlimited). Stream data is not shaped.
	Bandwidth int64
	// Burst is how many bytes may pass at once before shaping starts;
	// 0 means 1500.
	Burst int
	// Queue is how many bytes may wait for the bandwidth before the link
	// drops more (tail drop); 0 means 64 KiB. Without a Bandwidth, at most
	// 65,536 packets are in flight each way.
	Queue int
	// Down drops everything and resets the streams crossing the link.
	Down bool
	// BlockUDP and BlockTCP drop that protocol; BlockTCP also resets the
	// streams crossing the link.
	BlockUDP, BlockTCP bool
}

// maxInFlight bounds the packets on one direction of a link with delay
// and no bandwidth limit (a shaped link is bounded by its Queue first):
// 65,536 full-size datagrams are 128 MiB of pooled buffers, and a sender
// that outruns its link that far is a runaway test.
const maxInFlight = 1 << 16

func (c *LinkConfig) ideal() bool { return c.Delay == 0 && c.Loss == 0 && c.Bandwidth == 0 }

// Directions across a link.
const (
	up   = 0 // from the link's owner into its network
	down = 1 // from the network to the owner
)

// Link joins a host or a NAT side to a network.
type Link struct {
	w     *World
	id    uint64 // seeds its directions' loss generators
	net   *Network
	owner node
	cfg   atomic.Pointer[LinkConfig]
	dirs  [2]linkDir

	mu      sync.Mutex // guards addr (written with net.mu held too), streams
	addr    netip.Addr
	streams map[*stream]struct{} // streams whose path crosses the link
}

// linkDir is one direction of a link: the queue of packets delayed or
// shaped on it, and the timer that releases them.
type linkDir struct {
	l   *Link
	dir int

	// armed is set while packets wait in q or a batch is being delivered:
	// then later packets must queue behind them (FIFO), even on an ideal
	// link. It is written with mu held and read without.
	armed atomic.Bool

	mu     sync.Mutex // guards the fields below
	closed bool
	q      packetQueue
	rng    *rand.Rand // loss; made on first use
	tat    int64      // shaping: when the bytes accepted so far finish at line rate
	last   int64      // due time of the last packet queued: no overtaking
	timer  clock.Timer
	batch  []*packet // the firing goroutine's scratch (only one fires at a time: armed)
}

func newLink(w *World, n *Network, owner node, addr netip.Addr) *Link {
	l := &Link{w: w, net: n, owner: owner, addr: addr}
	l.id = w.newIDLocked()
	l.cfg.Store(&LinkConfig{})
	for i := range l.dirs {
		l.dirs[i] = linkDir{l: l, dir: i}
	}
	w.links = append(w.links, l)
	return l
}

// Addr returns the address of the link's owner on its network.
func (l *Link) Addr() netip.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addr
}

// Network returns the network the link attaches to.
func (l *Link) Network() *Network { return l.net }

// Config returns the link's configuration.
func (l *Link) Config() LinkConfig { return *l.cfg.Load() }

// Set replaces the link's configuration. Packets already queued keep the
// times they were given. If the link goes down or starts blocking TCP,
// the streams crossing it are reset.
func (l *Link) Set(cfg LinkConfig) {
	c := cfg
	l.mu.Lock() // ordered with addStream's check
	l.cfg.Store(&c)
	l.mu.Unlock()
	if c.Down || c.BlockTCP {
		l.resetStreams("link down")
	}
}

// SetDown cuts (true) or restores (false) the link, keeping the rest of
// its configuration.
func (l *Link) SetDown(down bool) {
	l.mu.Lock()
	c := *l.cfg.Load()
	c.Down = down
	l.cfg.Store(&c)
	l.mu.Unlock()
	if down {
		l.resetStreams("link down")
	}
}

// send carries p across the link in direction dir.
func (l *Link) send(dir int, p *packet) {
	w := l.w
	cfg := l.cfg.Load()
	if cfg.Down {
		w.drop(p, &w.stats.linkDown)
		return
	}
	if (p.proto == UDP && cfg.BlockUDP) || (p.proto == TCP && cfg.BlockTCP) {
		w.drop(p, &w.stats.blocked)
		return
	}
	if p.syn != nil {
		p.syn.crossLink(l, cfg.Delay)
	}
	d := &l.dirs[dir]
	if cfg.ideal() && !d.armed.Load() {
		l.arrive(dir, p)
		return
	}
	d.enqueue(p, cfg)
}

// arrive hands p to what is at the far end of direction dir.
func (l *Link) arrive(dir int, p *packet) {
	if dir == up {
		l.net.route(p, l)
	} else {
		l.owner.input(p, l)
	}
}

func (d *linkDir) enqueue(p *packet, cfg *LinkConfig) {
	w := d.l.w
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		w.drop(p, &w.stats.linkDown)
		return
	}
	reliable := p.proto == TCP // connection requests: see LinkConfig.Loss
	if cfg.Loss > 0 && !reliable {
		if d.rng == nil {
			d.rng = rand.New(rand.NewPCG(w.cfg.Seed, d.l.id<<1|uint64(d.dir)))
		}
		if d.rng.Float64() < cfg.Loss {
			d.mu.Unlock()
			w.drop(p, &w.stats.lost)
			return
		}
	}
	now := w.now()
	depart := now
	if cfg.Bandwidth > 0 && !reliable {
		// A token bucket as a virtual schedule (GCRA): tat is when the
		// link would finish sending everything accepted so far at line
		// rate; a packet may leave once that, minus the burst, has come.
		bw := cfg.Bandwidth
		burst, queue := int64(cfg.Burst), int64(cfg.Queue)
		if burst <= 0 {
			burst = 1500
		}
		if queue <= 0 {
			queue = 64 << 10
		}
		cost := int64(p.n) * int64(time.Second) / bw
		tat := max(d.tat, now)
		depart = max(now, tat+cost-burst*int64(time.Second)/bw)
		if depart-now > queue*int64(time.Second)/bw {
			d.mu.Unlock()
			w.drop(p, &w.stats.queueFull)
			return
		}
		d.tat = tat + cost
	}
	due := max(depart+int64(cfg.Delay), d.last)
	d.last = due
	if due <= now && !d.armed.Load() {
		d.mu.Unlock()
		d.l.arrive(d.dir, p)
		return
	}
	p.due = due
	if !d.q.push(p, maxInFlight) {
		d.mu.Unlock()
		w.drop(p, &w.stats.queueFull)
		return
	}
	if !d.armed.Load() {
		d.armed.Store(true)
		wait := time.Duration(due - now)
		if d.timer == nil {
			d.timer = w.clock.AfterFunc(wait, d.fire)
		} else {
			d.timer.Reset(wait)
		}
	}
	d.mu.Unlock()
}

// fire delivers the packets that are due, on the timer's goroutine, and
// re-arms the timer for the next one. The lock is not held while
// delivering: delivery crosses other links and NATs.
func (d *linkDir) fire() {
	w := d.l.w
	d.mu.Lock()
	for {
		if d.closed {
			d.mu.Unlock()
			return
		}
		now := w.now()
		batch := d.batch[:0]
		for !d.q.empty() && d.q.peek().due <= now {
			batch = append(batch, d.q.pop())
		}
		if len(batch) == 0 {
			if d.q.empty() {
				d.armed.Store(false)
			} else {
				d.timer.Reset(time.Duration(d.q.peek().due - now))
			}
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
		for i, p := range batch {
			d.l.arrive(d.dir, p)
			batch[i] = nil
		}
		d.mu.Lock()
		d.batch = batch
	}
}

// close drops what waits on the link and stops its timers.
func (l *Link) close() {
	for i := range l.dirs {
		d := &l.dirs[i]
		d.mu.Lock()
		d.closed = true
		if d.timer != nil {
			d.timer.Stop()
		}
		d.q.drain()
		d.mu.Unlock()
	}
	l.resetStreams("world closed")
}

// addStream records that s crosses the link; it fails if the link would
// refuse it by now.
func (l *Link) addStream(s *stream) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c := l.cfg.Load(); c.Down || c.BlockTCP {
		return false
	}
	if l.streams == nil {
		l.streams = make(map[*stream]struct{})
	}
	l.streams[s] = struct{}{}
	return true
}

func (l *Link) removeStream(s *stream) {
	l.mu.Lock()
	delete(l.streams, s)
	l.mu.Unlock()
}

func (l *Link) resetStreams(why string) {
	l.mu.Lock()
	ss := make([]*stream, 0, len(l.streams))
	for s := range l.streams {
		ss = append(ss, s)
	}
	l.mu.Unlock()
	for _, s := range ss {
		s.reset(why)
	}
}
