package transport

import (
	"errors"
	"net/netip"

	"golang.zx2c4.com/wireguard/conn"
)

// ttlSender is an inner Bind that can send a datagram from its socket
// with an IP TTL (IPv6: hop limit) of the caller's choosing, leaving the
// TTL of every other send as it was: the host's sockets (stdBind, on
// Linux) and vnet.Bind.
type ttlSender interface {
	SendTTL(bufs [][]byte, ep conn.Endpoint, ttl int) error
}

// ErrTTLUnsupported is what SendFramesTTL returns where the Bind cannot
// choose a datagram's TTL.
var ErrTTLUnsupported = errors.New("transport: sending with a chosen TTL is not supported on this socket")

// SendFramesTTL sends non-WireGuard frames to dst from the node's UDP
// socket, as SendFrames does, with the IP TTL (IPv6: hop limit) ttl, 1 to
// 255. Sends that run at the same time, WireGuard's included, keep the
// socket's own TTL: the TTL travels with these datagrams alone (IP_TTL
// and IPV6_HOPLIMIT as ancillary data). The prober sends its NAT openers
// with it: datagrams that make this side's NAT map the flow to a peer
// and die at a router before the peer's. It returns ErrTTLUnsupported
// where the socket cannot do that.
func (b *Bind) SendFramesTTL(frames [][]byte, dst netip.AddrPort, ttl int) error {
	ts, ok := b.inner.(ttlSender)
	if !ok {
		return ErrTTLUnsupported
	}
	return ts.SendTTL(frames, &conn.StdNetEndpoint{AddrPort: dst}, ttl)
}
