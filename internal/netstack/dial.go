package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
)

// This file is how programs in the tomoe process use the stack: net.Conn,
// net.Listener and net.PacketConn backed by gVisor endpoints (gonet).

// After Close, DialContext, ListenTCP and ListenUDP fail with net.ErrClosed.

// DialContext connects to address over the overlay, like net.Dialer's
// DialContext. network is "tcp", "tcp4", "tcp6", "udp", "udp4" or "udp6";
// address is "host:port" where host is a literal IP ("[fc11::1]:80",
// "10.0.0.1:53"): the stack has no resolver, so names are an error. For TCP the
// connect is cancelled when ctx is done; UDP only checks ctx before starting.
// An IPv4-mapped IPv6 host is dialled as IPv4 unless network is "tcp6"/"udp6".
func (s *Stack) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if s.isClosed() {
		return nil, fmt.Errorf("netstack dial %s %s: %w", network, address, net.ErrClosed)
	}
	transport, family, err := parseNetwork(network)
	if err != nil {
		return nil, fmt.Errorf("netstack dial %s %s: %w", network, address, err)
	}
	ap, err := parseLiteralAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("netstack dial %s %s: %w", network, address, err)
	}
	if family != 6 {
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if (family == 4 && !ap.Addr().Is4()) || (family == 6 && !ap.Addr().Is6()) {
		return nil, fmt.Errorf("netstack dial %s %s: address family does not match network", network, address)
	}
	fa, proto := fullAddress(ap)
	if transport == "tcp" {
		c, err := gonet.DialContextTCP(ctx, s.ipstack, fa, proto)
		if err != nil {
			return nil, fmt.Errorf("netstack dial %s %s: %w", network, address, err)
		}
		return c, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("netstack dial %s %s: %w", network, address, err)
	}
	c, err := gonet.DialUDP(s.ipstack, nil, &fa, proto)
	if err != nil {
		return nil, fmt.Errorf("netstack dial %s %s: %w", network, address, err)
	}
	return &udpConn{UDPConn: c, v4: proto == ipv4.ProtocolNumber}, nil
}

// ListenTCP listens for TCP connections on addr. An unspecified address (::
// or 0.0.0.0) means all local addresses; :: also accepts IPv4 if the stack has
// an IPv4 address. Port 0 picks a free port; the listener's Addr reports it.
func (s *Stack) ListenTCP(addr netip.AddrPort) (net.Listener, error) {
	if s.isClosed() {
		return nil, fmt.Errorf("netstack listen tcp %s: %w", addr, net.ErrClosed)
	}
	fa, proto, err := listenAddress(addr)
	if err != nil {
		return nil, fmt.Errorf("netstack listen tcp %s: %w", addr, err)
	}
	l, err := gonet.ListenTCP(s.ipstack, fa, proto)
	if err != nil {
		return nil, fmt.Errorf("netstack listen tcp %s: %w", addr, err)
	}
	return l, nil
}

// ListenUDP opens a UDP socket bound to addr, with the same address rules as
// ListenTCP. WriteTo takes a *net.UDPAddr; any other net.Addr is an error.
func (s *Stack) ListenUDP(addr netip.AddrPort) (net.PacketConn, error) {
	if s.isClosed() {
		return nil, fmt.Errorf("netstack listen udp %s: %w", addr, net.ErrClosed)
	}
	fa, proto, err := listenAddress(addr)
	if err != nil {
		return nil, fmt.Errorf("netstack listen udp %s: %w", addr, err)
	}
	c, err := gonet.DialUDP(s.ipstack, &fa, nil, proto)
	if err != nil {
		return nil, fmt.Errorf("netstack listen udp %s: %w", addr, err)
	}
	return &udpConn{UDPConn: c, v4: proto == ipv4.ProtocolNumber}, nil
}

// udpConn is gonet's UDPConn with a WriteTo that rejects, rather than panics
// on, an address that is not a *net.UDPAddr, and that passes IPv4
// destinations to IPv4 sockets in 4-byte form.
type udpConn struct {
	*gonet.UDPConn
	v4 bool
}

// WriteTo implements net.PacketConn.
func (c *udpConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok || ua == nil {
		return 0, &net.OpError{Op: "write", Net: "udp", Source: c.LocalAddr(), Addr: addr,
			Err: fmt.Errorf("netstack: destination %T is not a *net.UDPAddr", addr)}
	}
	ap := ua.AddrPort()
	if !ap.Addr().IsValid() {
		return 0, &net.OpError{Op: "write", Net: "udp", Source: c.LocalAddr(), Addr: addr,
			Err: errors.New("netstack: destination has no valid IP")}
	}
	if c.v4 {
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return c.UDPConn.WriteTo(b, net.UDPAddrFromAddrPort(ap))
}

// parseNetwork splits a Go network name into transport and address family
// (4, 6, or 0 for either).
func parseNetwork(network string) (transport string, family int, err error) {
	switch network {
	case "tcp", "udp":
		return network, 0, nil
	case "tcp4", "udp4":
		return network[:3], 4, nil
	case "tcp6", "udp6":
		return network[:3], 6, nil
	}
	return "", 0, fmt.Errorf("unsupported network %q: use tcp, tcp4, tcp6, udp, udp4 or udp6", network)
}

// parseLiteralAddrPort parses "host:port" where host is a literal IP address
// and port is numeric.
func parseLiteralAddrPort(address string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("host %q is not a literal IP address: the netstack has no resolver, resolve names first", host)
	}
	if ip.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("host %q has a zone: overlay addresses take none", host)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q is not a number 0-65535", port)
	}
	return netip.AddrPortFrom(ip, uint16(p)), nil
}

// listenAddress converts a listen address to gVisor's form; an unspecified
// address becomes the empty address, which gVisor binds to every local one.
func listenAddress(addr netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber, error) {
	if !addr.Addr().IsValid() {
		return tcpip.FullAddress{}, 0, errors.New("invalid address: use [::]:port for all local addresses")
	}
	if addr.Addr().Zone() != "" {
		return tcpip.FullAddress{}, 0, errors.New("address has a zone: overlay addresses take none")
	}
	a := addr.Addr().Unmap()
	fa, proto := fullAddress(netip.AddrPortFrom(a, addr.Port()))
	if a.IsUnspecified() {
		fa.Addr = tcpip.Address{}
	}
	return fa, proto, nil
}

// fullAddress converts ap to gVisor's form. The NIC is left 0 so that gVisor
// routes; there is only one NIC anyway.
func fullAddress(ap netip.AddrPort) (tcpip.FullAddress, tcpip.NetworkProtocolNumber) {
	proto := ipv6.ProtocolNumber
	if ap.Addr().Is4() {
		proto = ipv4.ProtocolNumber
	}
	return tcpip.FullAddress{Addr: tcpip.AddrFromSlice(ap.Addr().AsSlice()), Port: ap.Port()}, proto
}
