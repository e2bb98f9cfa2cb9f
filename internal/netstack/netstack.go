// Package netstack owns tomoe's userspace mode: a gVisor TCP/IP stack that
// lives inside the tomoe process and whose link layer is a tun.Device.
//
// WireGuard reads the stack's outbound IP packets from the Stack (Read) and
// writes decrypted inbound IP packets into it (Write), exactly as it would with
// a kernel TUN device, so userspace mode needs no root and no OS routes.
// Programs in the same process (the HTTP server, ping, SOCKS5, port forwards)
// reach the overlay through the stack's DialContext, ListenTCP and ListenUDP.
//
// The package owns the stack's lifecycle, its single point-to-point NIC, the
// bounded outbound queue between the stack and WireGuard, and the TCP tuning
// that makes the stack fast enough to fill a WireGuard tunnel.
package netstack

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// Limits on Config.MTU. 1280 is the IPv6 minimum link MTU (RFC 8200); 65535
// is the largest packet an IPv4 or non-jumbo IPv6 header can describe.
const (
	MinMTU = 1280
	MaxMTU = 65535
)

// batchSize is what BatchSize reports and the most packets one Read returns.
// It equals wireguard-go's conn.IdealBatchSize: the device sizes its batches as
// max(bind, tun), so matching the UDP bind means one Read fills exactly one
// sendmmsg batch without enlarging the device's per-batch buffer pools (each
// slot there is a 64 KiB message buffer). A relay bind with batch size 1 still
// gets batches of 128 from us, which amortises the per-Read locking.
const batchSize = 128

// nicID is the stack's only NIC, the link to WireGuard.
const nicID tcpip.NICID = 1

// Config configures a Stack. The zero value is not valid: Addresses and MTU
// must be set.
type Config struct {
	// Addresses are the stack's local addresses: the node's IPv6 fc00::/8
	// overlay address and, optionally, IPv4 addresses. At least one; each must
	// be a valid, unzoned, unicast address, and none may repeat.
	Addresses []netip.Addr

	// MTU is the link MTU in bytes, MinMTU..MaxMTU. It bounds every packet
	// Read returns, and TCP derives its segment size from it.
	MTU int

	// Logger receives the stack's diagnostics. Nil discards them.
	Logger *slog.Logger

	// BatchSize, if not 0, is what BatchSize reports instead of batchSize
	// (1..128). wireguard-go keeps one 64 KiB buffer per batch slot for its
	// TUN reader, 8 MiB a device at 128: a simulation of thousands of
	// nodes in one process (bench/sim) shrinks it.
	BatchSize int
}

// validate reports the first problem with c, naming the field and the fix.
func (c *Config) validate() error {
	if len(c.Addresses) == 0 {
		return errors.New("netstack config: Addresses is empty: set at least one local address, e.g. the node's fc00::/8 address")
	}
	seen := make(map[netip.Addr]bool, len(c.Addresses))
	for i, a := range c.Addresses {
		switch {
		case !a.IsValid():
			return fmt.Errorf("netstack config: Addresses[%d] is the zero netip.Addr: set a real IPv6 or IPv4 address", i)
		case a.Zone() != "":
			return fmt.Errorf("netstack config: Addresses[%d] %s has a zone: overlay addresses are global, drop the %%zone", i, a)
		case a.Is4In6():
			return fmt.Errorf("netstack config: Addresses[%d] %s is IPv4-mapped: use the plain IPv4 form %s", i, a, a.Unmap())
		case a.IsUnspecified(), a.IsMulticast(), a.IsLoopback():
			return fmt.Errorf("netstack config: Addresses[%d] %s is not a unicast address", i, a)
		case seen[a]:
			return fmt.Errorf("netstack config: Addresses[%d] %s is listed twice", i, a)
		}
		seen[a] = true
	}
	if c.BatchSize < 0 || c.BatchSize > batchSize {
		return fmt.Errorf("netstack config: BatchSize %d out of range: set 1..%d, or 0 for %d", c.BatchSize, batchSize, batchSize)
	}
	if c.MTU < MinMTU || c.MTU > MaxMTU {
		return fmt.Errorf("netstack config: MTU %d out of range: set %d..%d", c.MTU, MinMTU, MaxMTU)
	}
	return nil
}

// Stack is a userspace TCP/IP stack; it is also the tun.Device WireGuard reads
// and writes. All methods are safe for concurrent use.
type Stack struct {
	log     *slog.Logger
	mtu     int
	batch   int  // what BatchSize reports
	gro     bool // Write merges TCP segments (gro.go)
	ipstack *stack.Stack
	link    *link
	events  chan tun.Event
	stats   counters

	// closeMu guards closed. Write holds it shared while it injects, so
	// Close can tear the stack down knowing no injection is in flight.
	closeMu   sync.RWMutex
	closed    bool
	closeOnce sync.Once
}

var _ tun.Device = (*Stack)(nil)

// New validates cfg and starts a stack with cfg's addresses on one NIC, a
// route for all IPv6 (and all IPv4 if an IPv4 address is configured) through
// that NIC, and the TCP tuning described in tuning.go. The returned Stack's
// Events channel already holds tun.EventUp.
func New(cfg Config) (*Stack, error) {
	return newStack(cfg, defaultTuning())
}

// newStack is New with the tuning as a parameter, so benchmarks can compare
// settings.
func newStack(cfg Config, tn tuning) (*Stack, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "netstack")

	// The zero ipv6.Options turn off duplicate address detection, router
	// solicitation and MLD: the overlay link has no neighbours or routers to
	// talk to, and DAD would hold each address tentative for a second.
	ipstack := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		// Deliver packets to our own addresses inside the stack, so a
		// program can dial the node's own address.
		HandleLocal: true,
	})
	s := &Stack{
		log:     log,
		mtu:     cfg.MTU,
		batch:   cmp.Or(cfg.BatchSize, batchSize),
		ipstack: ipstack,
		events:  make(chan tun.Event, 1),
		gro:     tn.gro,
	}
	s.link = newLink(uint32(cfg.MTU), tn.queueLen, tn.rxChecksumOffload, tn.gso, &s.stats, log)

	if err := s.setup(cfg, tn); err != nil {
		s.link.out.close()
		ipstack.Destroy()
		return nil, err
	}
	s.events <- tun.EventUp
	log.Debug("netstack up", "addrs", cfg.Addresses, "mtu", cfg.MTU, "cc", tn.congestionControl)
	return s, nil
}

// setup applies the tuning, creates the NIC and installs addresses and routes.
func (s *Stack) setup(cfg Config, tn tuning) error {
	if err := tn.apply(s.ipstack); err != nil {
		return err
	}
	if err := s.ipstack.CreateNIC(nicID, s.link); err != nil {
		return fmt.Errorf("netstack create nic: %s", err)
	}
	hasV4 := false
	for _, a := range cfg.Addresses {
		pa := tcpip.ProtocolAddress{
			Protocol:          ipv6.ProtocolNumber,
			AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix(),
		}
		if a.Is4() {
			pa.Protocol = ipv4.ProtocolNumber
			hasV4 = true
		}
		if err := s.ipstack.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return fmt.Errorf("netstack add address %s: %s", a, err)
		}
	}
	routes := []tcpip.Route{{Destination: header.IPv6EmptySubnet, NIC: nicID}}
	if hasV4 {
		routes = append(routes, tcpip.Route{Destination: header.IPv4EmptySubnet, NIC: nicID})
	}
	s.ipstack.SetRouteTable(routes)
	return nil
}

// File implements tun.Device. A userspace stack has no file descriptor.
func (s *Stack) File() *os.File { return nil }

// MTU implements tun.Device; it is Config.MTU.
func (s *Stack) MTU() (int, error) { return s.mtu, nil }

// Name implements tun.Device.
func (s *Stack) Name() (string, error) { return "netstack", nil }

// Events implements tun.Device. It yields tun.EventUp once and is closed by
// Close.
func (s *Stack) Events() <-chan tun.Event { return s.events }

// BatchSize implements tun.Device; see batchSize for the choice, and
// Config.BatchSize.
func (s *Stack) BatchSize() int { return s.batch }

// Close stops the stack: every connection and listener made through it is
// aborted, a blocked Read returns os.ErrClosed, Write returns os.ErrClosed,
// queued outbound packets are discarded, every goroutine the stack started has
// ended when Close returns, and Events is closed. Close is idempotent and
// always returns nil.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		s.closeMu.Lock() // waits for in-flight Writes
		s.closed = true
		s.closeMu.Unlock()

		s.link.out.close()
		// Destroy aborts every endpoint, stops the TCP processor goroutines
		// and removes the NIC; it returns once they have all stopped.
		s.ipstack.Destroy()
		close(s.events)
		s.log.Debug("netstack closed")
	})
	return nil
}

// isClosed reports whether Close has begun.
func (s *Stack) isClosed() bool {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	return s.closed
}

// Stats is a snapshot of the link's counters since New. Inbound is WireGuard
// to stack (Write), outbound is stack to WireGuard (Read).
type Stats struct {
	// PacketsIn and BytesIn count packets Write handed to the stack.
	PacketsIn uint64
	BytesIn   uint64

	// PacketsOut and BytesOut count packets Read returned to the caller.
	PacketsOut uint64
	BytesOut   uint64

	// DroppedOversize counts outbound packets Read discarded because they
	// did not fit the caller's buffer after the offset.
	DroppedOversize uint64

	// DroppedQueueFull counts outbound packets the stack produced while the
	// outbound queue was full (nobody reading fast enough), or after Close.
	DroppedQueueFull uint64

	// DroppedMalformed counts inbound packets rejected as malformed: those
	// Write refused (IP version neither 4 nor 6, shorter than the fixed IP
	// header) plus those gVisor's IP layer refused after parsing.
	DroppedMalformed uint64

	// CoalescedIn counts inbound TCP segments Write merged with others of
	// their flow before handing them to the stack (see gro.go); they are
	// in PacketsIn too.
	CoalescedIn uint64
}

// Stats returns the current counters.
func (s *Stack) Stats() Stats {
	ip := s.ipstack.Stats().IP
	return Stats{
		PacketsIn:        s.stats.packetsIn.Load(),
		BytesIn:          s.stats.bytesIn.Load(),
		PacketsOut:       s.stats.packetsOut.Load(),
		BytesOut:         s.stats.bytesOut.Load(),
		DroppedOversize:  s.stats.droppedOversize.Load(),
		DroppedQueueFull: s.stats.droppedQueueFull.Load(),
		DroppedMalformed: s.stats.droppedMalformed.Load() + ip.MalformedPacketsReceived.Value(),
		CoalescedIn:      s.stats.coalescedIn.Load(),
	}
}

// counters backs Stats. Read and Write add once per call, not per packet.
type counters struct {
	packetsIn, bytesIn   atomic.Uint64
	packetsOut, bytesOut atomic.Uint64
	droppedOversize      atomic.Uint64
	droppedQueueFull     atomic.Uint64
	droppedMalformed     atomic.Uint64
	coalescedIn          atomic.Uint64
}

// logEvery rate-limits a log line that could otherwise fire per packet.
type logEvery struct {
	interval time.Duration
	last     atomic.Int64 // unix nanoseconds of the last allowed line
}

// allow reports whether a line may be logged now, and if so claims the slot.
func (l *logEvery) allow() bool {
	now := time.Now().UnixNano()
	last := l.last.Load()
	if last != 0 && now-last < int64(l.interval) {
		return false
	}
	return l.last.CompareAndSwap(last, now)
}
