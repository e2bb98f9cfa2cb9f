package names

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/tomoe-net/tomoe/internal/routes"
)

// Address is where a kernel-mode node answers DNS, on port 53 and its
// interface: an address of the overlay's own prefix (fc00::/8) that no
// key derives (a node address is fc followed by 120 bits of a hash; this
// one would need 104 of them zero), so it is the same on every host, as
// 127.0.0.53 is for systemd-resolved, and reaches only the host's own
// processes (see the node's DNS setup for why).
var Address = netip.MustParseAddr("fc00::53")

// Port is the DNS port.
const Port = 53

// Default limits on TCP, where a client holds state of ours (see
// ServerConfig). Only the host's own processes reach the server, so these
// are about a stuck or buggy program, not a crowd: resolvers use TCP only
// after a truncated answer, which ours hardly ever are.
const (
	DefaultMaxConns    = 16
	DefaultIdleTimeout = 10 * time.Second
	DefaultMaxLifetime = 60 * time.Second
)

// ServerConfig says where a Server listens and what it answers.
type ServerConfig struct {
	// Addr is the address to listen on, port included (port 0: a free
	// one, the same for UDP and TCP).
	Addr netip.AddrPort
	// Device, if set, is the interface the sockets are bound to
	// (SO_BINDTODEVICE): they then take only packets for Addr that
	// arrive through it, or from the host itself when Addr is on it (the
	// kernel counts a local packet as arriving through the interface
	// that holds its destination), never the same address reached
	// through another interface (measured: e2e TestDNSNames).
	Device string
	Names  Names

	// TCP limits: at most MaxConns connections at once (more are closed
	// at once), each idle at most IdleTimeout between queries and open
	// at most MaxLifetime. Zero: the defaults above.
	MaxConns    int
	IdleTimeout time.Duration
	MaxLifetime time.Duration
}

// Server answers DNS over UDP and TCP. Close stops it; nothing it started
// outlives Close.
type Server struct {
	cfg ServerConfig
	udp *net.UDPConn
	tcp *net.TCPListener

	sem chan struct{} // one slot per TCP connection

	mu     sync.Mutex // guards conns and closed
	conns  map[net.Conn]struct{}
	closed bool

	wg sync.WaitGroup
}

// Serve opens the sockets and starts answering.
func Serve(cfg ServerConfig) (*Server, error) {
	if cfg.Names == nil {
		return nil, errors.New("dns server: no names")
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MaxLifetime <= 0 {
		cfg.MaxLifetime = DefaultMaxLifetime
	}
	s := &Server{cfg: cfg, sem: make(chan struct{}, cfg.MaxConns), conns: make(map[net.Conn]struct{})}
	var lc net.ListenConfig
	if cfg.Device != "" {
		lc.Control = routes.BindToDevice(cfg.Device)
	}
	network := "6"
	if cfg.Addr.Addr().Is4() {
		network = "4"
	}
	pc, err := lc.ListenPacket(context.Background(), "udp"+network, cfg.Addr.String())
	if err != nil {
		return nil, fmt.Errorf("dns server: udp %s: %w", cfg.Addr, err)
	}
	s.udp = pc.(*net.UDPConn)
	// Port 0 picked a UDP port; TCP takes the same.
	tcpAddr := netip.AddrPortFrom(cfg.Addr.Addr(), s.udp.LocalAddr().(*net.UDPAddr).AddrPort().Port())
	ln, err := lc.Listen(context.Background(), "tcp"+network, tcpAddr.String())
	if err != nil {
		s.udp.Close()
		return nil, fmt.Errorf("dns server: tcp %s: %w", tcpAddr, err)
	}
	s.tcp = ln.(*net.TCPListener)
	s.wg.Add(2)
	go s.serveUDP()
	go s.serveTCP()
	return s, nil
}

// Addr is the address the server answers on.
func (s *Server) Addr() netip.AddrPort {
	return s.udp.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Close stops the server and waits for its goroutines. Safe to call more
// than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	err := errors.Join(s.udp.Close(), s.tcp.Close())
	s.wg.Wait()
	return err
}

// serveUDP answers each datagram on the reading goroutine: one datagram
// costs at most one answer, and a flood is bounded by the socket's
// receive buffer, not by goroutines.
func (s *Server) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := s.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A transient error (an ICMP error from an earlier answer's
			// destination) must not stop the server.
			continue
		}
		if resp := Answer(buf[:n], s.cfg.Names, false); resp != nil {
			s.udp.WriteToUDPAddrPort(resp, from)
		}
	}
}

func (s *Server) serveTCP() {
	defer s.wg.Done()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off a little
			// rather than spin.
			time.Sleep(50 * time.Millisecond)
			continue
		}
		select {
		case s.sem <- struct{}{}:
		default:
			c.Close() // too many at once
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			<-s.sem
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c)
	}
}

// serveConn answers the queries of one TCP connection (RFC 7766: each
// message with a two-byte length), in order, until the client closes it,
// idles for IdleTimeout or has been connected for MaxLifetime.
func (s *Server) serveConn(c net.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
		<-s.sem
		s.wg.Done()
	}()
	end := time.Now().Add(s.cfg.MaxLifetime)
	buf := make([]byte, 2+65535)
	for {
		deadline := time.Now().Add(s.cfg.IdleTimeout)
		if deadline.After(end) {
			deadline = end
		}
		c.SetDeadline(deadline)
		if _, err := io.ReadFull(c, buf[:2]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(buf[:2]))
		if _, err := io.ReadFull(c, buf[2:2+n]); err != nil {
			return
		}
		resp := Answer(buf[2:2+n], s.cfg.Names, true)
		if resp == nil {
			return
		}
		out := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(resp)), uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}
