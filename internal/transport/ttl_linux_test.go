package transport

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// ttlReceiver is a UDP socket that reports each datagram's TTL (IPv4) or
// hop limit (IPv6).
type ttlReceiver struct {
	pc  *net.UDPConn
	six bool
}

func listenTTL(t *testing.T, network, addr string) *ttlReceiver {
	t.Helper()
	pc, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Skipf("no %s socket here: %v", network, err)
	}
	t.Cleanup(func() { pc.Close() })
	r := &ttlReceiver{pc: pc, six: network == "udp6"}
	rc, err := pc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	rc.Control(func(fd uintptr) {
		if r.six {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVTTL, 1)
		}
	})
	if serr != nil {
		t.Fatal(serr)
	}
	return r
}

func (r *ttlReceiver) addr() netip.AddrPort { return r.pc.LocalAddr().(*net.UDPAddr).AddrPort() }

// next returns the next datagram and its TTL.
func (r *ttlReceiver) next(t *testing.T) (string, int) {
	t.Helper()
	buf, oob := make([]byte, 2048), make([]byte, 256)
	r.pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, oobn, _, _, err := r.pc.ReadMsgUDPAddrPort(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if (m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TTL) || (m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_HOPLIMIT) {
			return string(buf[:n]), int(binary.NativeEndian.Uint32(m.Data))
		}
	}
	t.Fatalf("no TTL with %q", buf[:n])
	return "", 0
}

// SendFramesTTL sets the TTL of its datagrams alone: frames sent through
// the same socket at the same time keep the socket's own, and they all
// leave from the Bind's port.
func TestSendFramesTTL(t *testing.T) {
	for _, tc := range []struct{ network, at string }{{"udp4", "127.0.0.1:0"}, {"udp6", "[::1]:0"}} {
		t.Run(tc.network, func(t *testing.T) {
			r := listenTTL(t, tc.network, tc.at)
			b := NewBind(nil)
			_, port, err := b.Open(0)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			const rounds = 50
			done := make(chan error, 1)
			go func() {
				for range rounds {
					if err := b.SendFrames([][]byte{[]byte("plain")}, r.addr()); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			for range rounds {
				if err := b.SendFramesTTL([][]byte{[]byte("low")}, r.addr(), 3); err != nil {
					t.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			var low, plain int
			for range 2 * rounds {
				msg, ttl := r.next(t)
				switch {
				case msg == "low" && ttl == 3:
					low++
				case msg == "plain" && ttl > 3:
					plain++
				default:
					t.Fatalf("%q arrived with TTL %d", msg, ttl)
				}
			}
			if low != rounds || plain != rounds {
				t.Fatalf("%d low and %d plain, want %d each", low, plain, rounds)
			}
			// From the Bind's own port: the mapping a NAT makes for it is
			// the one WireGuard's packets use.
			r.pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			b.SendFramesTTL([][]byte{[]byte("where")}, r.addr(), 3)
			_, from, err := r.pc.ReadFromUDPAddrPort(make([]byte, 64))
			if err != nil || from.Port() != port {
				t.Fatalf("came from %v (%v), want port %d", from, err, port)
			}
			if err := b.SendFramesTTL([][]byte{[]byte("x")}, r.addr(), 0); err == nil {
				t.Fatal("TTL 0 accepted")
			}
		})
	}
}

// A Bind whose sockets cannot be told apart from another's (two on one
// port and wildcard address in one process, each in its own network
// namespace) says so instead of guessing; so does one over a Bind that
// cannot set a TTL at all.
func TestSendFramesTTLUnsupported(t *testing.T) {
	if fd := dupIfOne([]int{1, 2}, 4610, 4); fd != -1 {
		t.Fatalf("two candidates gave descriptor %d", fd)
	}
	b := NewBindOn(plainBind{conn.NewStdNetBind()}, nil)
	if err := b.SendFramesTTL([][]byte{[]byte("x")}, netip.MustParseAddrPort("127.0.0.1:9"), 2); !errors.Is(err, ErrTTLUnsupported) {
		t.Fatalf("got %v, want ErrTTLUnsupported", err)
	}
}

// plainBind hides every method but conn.Bind's.
type plainBind struct{ conn.Bind }
