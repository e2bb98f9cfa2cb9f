package transport

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// stdBind is wireguard-go's StdNetBind with SendTTL. StdNetBind keeps its
// sockets to itself, and setting IP_TTL on them would change the TTL of
// WireGuard's packets sent meanwhile; so after each Open it finds its
// sockets among this process's descriptors (UDP, bound to the wildcard
// address and the port it opened) and keeps duplicates of them, through
// which SendTTL sends with the TTL as ancillary data (Linux 4.9 and
// later). Where that finding is ambiguous (another UDP socket on the same
// port and wildcard address in this process: several nodes, each in its
// own network namespace, in one test process), SendTTL returns
// ErrTTLUnsupported and nothing else changes.
type stdBind struct {
	conn.Bind
	mu     sync.RWMutex // guards v4, v6; SendTTL holds it shared while it uses them
	v4, v6 int          // our duplicates of the IPv4 and IPv6 sockets, -1: none
}

func newStdBind() conn.Bind { return &stdBind{Bind: conn.NewStdNetBind(), v4: -1, v6: -1} }

// Open implements conn.Bind.
func (s *stdBind) Open(port uint16) ([]conn.ReceiveFunc, uint16, error) {
	fns, actual, err := s.Bind.Open(port)
	if err != nil {
		return nil, 0, err
	}
	v4, v6 := findUDPSockets(actual)
	s.mu.Lock()
	s.closeLocked()
	s.v4, s.v6 = v4, v6
	s.mu.Unlock()
	return fns, actual, nil
}

// Close implements conn.Bind.
func (s *stdBind) Close() error {
	s.mu.Lock()
	s.closeLocked()
	s.mu.Unlock()
	return s.Bind.Close()
}

func (s *stdBind) closeLocked() {
	for _, fd := range []*int{&s.v4, &s.v6} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

// SendTTL implements ttlSender. It never blocks: a datagram the socket
// has no room for is an error.
func (s *stdBind) SendTTL(bufs [][]byte, ep conn.Endpoint, ttl int) error {
	e, ok := ep.(*conn.StdNetEndpoint)
	if !ok {
		return conn.ErrWrongEndpointType
	}
	if ttl < 1 || ttl > 255 {
		return fmt.Errorf("transport: TTL %d out of range", ttl)
	}
	a := e.AddrPort.Addr().Unmap()
	s.mu.RLock()
	defer s.mu.RUnlock()
	var (
		fd  int
		sa  unix.Sockaddr
		oob []byte
	)
	if a.Is4() {
		fd, sa, oob = s.v4, &unix.SockaddrInet4{Port: int(e.AddrPort.Port()), Addr: a.As4()}, ttlCmsg(unix.IPPROTO_IP, unix.IP_TTL, ttl)
	} else {
		fd, sa, oob = s.v6, &unix.SockaddrInet6{Port: int(e.AddrPort.Port()), Addr: a.As16()}, ttlCmsg(unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT, ttl)
	}
	if fd < 0 {
		return ErrTTLUnsupported
	}
	for _, b := range bufs {
		if _, err := unix.SendmsgN(fd, b, oob, sa, unix.MSG_DONTWAIT); err != nil {
			return &net.OpError{Op: "write", Net: "udp", Addr: net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, e.AddrPort.Port())), Err: err}
		}
	}
	return nil
}

// ttlCmsg is one control message carrying a TTL or hop limit (an int).
func ttlCmsg(level, typ int32, ttl int) []byte {
	b := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, typ
	h.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(b[unix.CmsgLen(0):], uint32(ttl))
	return b
}

// findUDPSockets returns duplicates of this process's UDP sockets bound
// to the wildcard address and port, IPv4 and IPv6, each only if it is
// the one such socket (-1 otherwise).
func findUDPSockets(port uint16) (v4, v6 int) {
	var fds4, fds6 []int
	entries, _ := os.ReadDir("/proc/self/fd")
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		switch boundUDP(fd, port) {
		case 4:
			fds4 = append(fds4, fd)
		case 6:
			fds6 = append(fds6, fd)
		}
	}
	return dupIfOne(fds4, port, 4), dupIfOne(fds6, port, 6)
}

// boundUDP returns 4 or 6 if fd is a UDP socket of that family bound to
// the wildcard address and port, else 0.
func boundUDP(fd int, port uint16) int {
	if typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil || typ != unix.SOCK_DGRAM {
		return 0
	}
	if proto, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || proto != unix.IPPROTO_UDP {
		return 0
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		if sa.Port == int(port) && sa.Addr == [4]byte{} {
			return 4
		}
	case *unix.SockaddrInet6:
		if sa.Port == int(port) && sa.Addr == [16]byte{} {
			return 6
		}
	}
	return 0
}

// dupIfOne duplicates the one descriptor in fds, and checks that the
// duplicate is still such a socket (the number could have been closed
// and reused since it was looked at); -1 if fds does not hold exactly
// one or the check fails.
func dupIfOne(fds []int, port uint16, family int) int {
	if len(fds) != 1 {
		return -1
	}
	d, err := unix.FcntlInt(uintptr(fds[0]), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	if boundUDP(d, port) != family {
		unix.Close(d)
		return -1
	}
	return d
}
