// Package tunbatch fills a whole batch from a Linux TUN device that hands
// packets up with a virtio-net header (IFF_VNET_HDR, as wireguard-go opens
// it).
//
// wireguard-go reads one frame per Read: a TCP or UDP super-packet that it
// splits into up to ~45 packets, or a single packet. Where the kernel
// delivers single packets (a VXLAN segment's frames, which the TUN cannot
// take as UDP-tunnel GSO; forwarded or small-packet traffic), every packet
// then costs a read, and the batch behind it (encryption, one sendmmsg)
// carries one packet. A Reader lets wireguard-go's own Read take the first
// frame, then reads, without waiting, whatever else the device has queued
// into the rest of the batch, splitting super-packets itself (Split).
//
// Split is this package's parser of what the kernel hands up: it checks
// every length and offset it uses, so a malformed frame is an error,
// never a panic or a write past a buffer.
package tunbatch

import (
	"encoding/binary"
	"errors"
	"fmt"

	xsum "gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// The virtio-net header that precedes every frame, in the host's byte
// order (struct virtio_net_hdr, linux/virtio_net.h).
const (
	HeaderLen = 10

	flagNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM

	gsoNone  = 0 // VIRTIO_NET_HDR_GSO_NONE
	gsoTCPv4 = 1 // VIRTIO_NET_HDR_GSO_TCPV4
	gsoUDPL4 = 5 // VIRTIO_NET_HDR_GSO_UDP_L4
	gsoTCPv6 = 4 // VIRTIO_NET_HDR_GSO_TCPV6

	protoTCP = 6
	protoUDP = 17
)

// ErrNoRoom is returned by Split when the frame's packets do not fit in the
// buffers given; nothing was written that the caller must keep.
var ErrNoRoom = errors.New("tunbatch: the frame's packets do not fit the buffers left")

type header struct {
	flags, gsoType                         uint8
	hdrLen, gsoSize, csumStart, csumOffset uint16
}

func decode(b []byte) header {
	return header{
		flags:      b[0],
		gsoType:    b[1],
		hdrLen:     binary.NativeEndian.Uint16(b[2:]),
		gsoSize:    binary.NativeEndian.Uint16(b[4:]),
		csumStart:  binary.NativeEndian.Uint16(b[6:]),
		csumOffset: binary.NativeEndian.Uint16(b[8:]),
	}
}

// Split writes the packets of one frame read from the TUN (virtio-net
// header, then the packet) into bufs[i][offset:], sets sizes[i], and
// returns how many it wrote. A single packet whose checksum the kernel
// left to the device (NEEDS_CSUM) gets it filled in; a TCP or UDP
// super-packet (GSO) is cut into gsoSize pieces, each with its own IP and
// TCP/UDP header, lengths and checksums, as the kernel's own segmentation
// would. It returns ErrNoRoom if the packets need more buffers, or larger
// ones, than given, and another error for a frame it cannot parse.
func Split(in []byte, bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(in) < HeaderLen {
		return 0, fmt.Errorf("tunbatch: frame of %d bytes is shorter than the virtio-net header", len(in))
	}
	if offset < 0 {
		return 0, errors.New("tunbatch: negative offset")
	}
	h := decode(in)
	pkt := in[HeaderLen:]
	if len(pkt) == 0 {
		return 0, errors.New("tunbatch: empty packet")
	}
	room := min(len(bufs), len(sizes))
	if h.gsoType == gsoNone {
		start, at := int(h.csumStart), int(h.csumStart)+int(h.csumOffset)
		csum := h.flags&flagNeedsCsum != 0
		if csum && (start >= len(pkt) || at+2 > len(pkt)) {
			return 0, fmt.Errorf("tunbatch: checksum at %d+%d outside a %d-byte packet", h.csumStart, h.csumOffset, len(pkt))
		}
		if room == 0 || offset > len(bufs[0]) || len(pkt) > len(bufs[0])-offset {
			return 0, ErrNoRoom
		}
		if csum {
			// The field holds the pseudo-header sum; the sum from start
			// to the end, complemented, is the checksum. A 0 is written as
			// 0xffff, as the kernel's skb_checksum_help does: the same for
			// TCP or ICMPv6, but a zero UDP checksum means "none", which an
			// IPv6 receiver drops.
			c := ^xsum.Checksum(pkt[start:], 0)
			if c == 0 {
				c = 0xffff
			}
			binary.BigEndian.PutUint16(pkt[at:], c)
		}
		sizes[0] = copy(bufs[0][offset:], pkt)
		return 1, nil
	}
	return splitGSO(h, pkt, bufs[:room], sizes[:room], offset)
}

// splitGSO cuts a TCP or UDP super-packet into h.gsoSize pieces.
func splitGSO(h header, pkt []byte, bufs [][]byte, sizes []int, offset int) (int, error) {
	version := pkt[0] >> 4
	var proto uint8
	switch {
	case h.gsoType == gsoTCPv4 && version == 4, h.gsoType == gsoTCPv6 && version == 6:
		proto = protoTCP
	case h.gsoType == gsoUDPL4 && (version == 4 || version == 6):
		proto = protoUDP
	default:
		return 0, fmt.Errorf("tunbatch: GSO type %d with IP version %d", h.gsoType, version)
	}
	// The transport header starts at csumStart: the IPv4 header's own
	// length, or the IPv6 header and any extension headers. hdrLen is not
	// trusted (on the forwarding path the kernel may give the whole first
	// packet's length); the transport header's own length is used instead.
	l4 := int(h.csumStart)
	switch version {
	case 4:
		if len(pkt) < 20 || l4 != int(pkt[0]&0xf)*4 || l4 < 20 {
			return 0, fmt.Errorf("tunbatch: IPv4 header length %d, transport at %d", int(pkt[0]&0xf)*4, l4)
		}
	case 6:
		if l4 < 40 {
			return 0, fmt.Errorf("tunbatch: IPv6 transport header at %d", l4)
		}
	}
	hdrLen := l4 + 8
	csumAt := l4 + 6
	if proto == protoTCP {
		if len(pkt) < l4+20 {
			return 0, errors.New("tunbatch: TCP header cut short")
		}
		hdrLen = l4 + int(pkt[l4+12]>>4)*4
		if hdrLen < l4+20 {
			return 0, errors.New("tunbatch: TCP data offset below 5")
		}
		csumAt = l4 + 16
	}
	if len(pkt) < hdrLen {
		return 0, fmt.Errorf("tunbatch: %d-byte packet with %d bytes of headers", len(pkt), hdrLen)
	}
	mss := int(h.gsoSize)
	payload := pkt[hdrLen:]
	if mss == 0 || len(payload) == 0 {
		return 0, fmt.Errorf("tunbatch: GSO with segment size %d and %d bytes of payload", mss, len(payload))
	}
	n := (len(payload) + mss - 1) / mss
	if n > len(bufs) {
		return 0, ErrNoRoom
	}
	for i := range n {
		if offset > len(bufs[i]) || hdrLen+min(mss, len(payload)-i*mss) > len(bufs[i])-offset {
			return 0, ErrNoRoom
		}
	}
	var ipv4ID uint16
	var seq uint32
	if version == 4 {
		ipv4ID = binary.BigEndian.Uint16(pkt[4:])
	}
	if proto == protoTCP {
		seq = binary.BigEndian.Uint32(pkt[l4+4:])
	}
	// The pseudo-header's addresses, the same for every piece.
	var addrs uint16
	if version == 4 {
		addrs = xsum.Checksum(pkt[12:20], 0)
	} else {
		addrs = xsum.Checksum(pkt[8:40], 0)
	}
	for i := range n {
		chunk := payload[i*mss : min((i+1)*mss, len(payload))]
		out := bufs[i][offset:]
		copy(out, pkt[:hdrLen])
		total := hdrLen + copy(out[hdrLen:], chunk)
		out = out[:total]
		if version == 4 {
			binary.BigEndian.PutUint16(out[2:], uint16(total))
			binary.BigEndian.PutUint16(out[4:], ipv4ID+uint16(i))
			out[10], out[11] = 0, 0
			binary.BigEndian.PutUint16(out[10:], ^xsum.Checksum(out[:l4], 0))
		} else {
			binary.BigEndian.PutUint16(out[4:], uint16(total-40))
		}
		if proto == protoTCP {
			binary.BigEndian.PutUint32(out[l4+4:], seq+uint32(i*mss))
			const fin, psh, cwr = 0x01, 0x08, 0x80
			if i != n-1 {
				out[l4+13] &^= fin | psh
			}
			if i != 0 {
				out[l4+13] &^= cwr
			}
		} else {
			binary.BigEndian.PutUint16(out[l4+4:], uint16(total-l4))
		}
		out[csumAt], out[csumAt+1] = 0, 0
		sum := xsum.Combine(addrs, uint16(proto))
		sum = xsum.Combine(sum, uint16(total-l4))
		c := ^xsum.Checksum(out[l4:], sum)
		if c == 0 && proto == protoUDP {
			c = 0xffff // zero means "no checksum" in UDP
		}
		binary.BigEndian.PutUint16(out[csumAt:], c)
		sizes[i] = total
	}
	return n, nil
}
