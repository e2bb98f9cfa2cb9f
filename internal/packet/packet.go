// Package packet parses and builds the IP packets that cross the TUN device.
//
// Parsing never allocates and never panics on any input: it is the first code
// that looks at bytes a peer sent (after decryption) or a local program wrote.
// It understands IPv4, IPv6 with its extension headers, TCP, UDP and ICMP
// (including the flow quoted inside ICMP errors), which is what the policy
// filter needs to decide on a packet.
package packet

import (
	"encoding/binary"
	"errors"
	"net/netip"
)

// IP protocol numbers the filter distinguishes.
const (
	ProtoICMPv4 = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// TCP flags.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPAck = 0x10
)

// ICMP types the filter and the ping tool care about.
const (
	ICMPv4EchoReply   = 0
	ICMPv4Unreachable = 3
	ICMPv4EchoRequest = 8
	ICMPv4TimeExceed  = 11
	ICMPv4ParamProb   = 12

	ICMPv6Unreachable = 1
	ICMPv6TooBig      = 2
	ICMPv6TimeExceed  = 3
	ICMPv6ParamProb   = 4
	ICMPv6EchoRequest = 128
	ICMPv6EchoReply   = 129
)

// Header sizes.
const (
	IPv4HeaderLen = 20
	IPv6HeaderLen = 40
	ICMPHeaderLen = 8
)

var (
	errShort   = errors.New("packet too short")
	errVersion = errors.New("not an IPv4 or IPv6 packet")
	errLength  = errors.New("IP length field inconsistent with packet size")
	errExt     = errors.New("malformed IPv6 extension header chain")
)

// Flow identifies a transport conversation. For ICMP echo the identifier is
// carried in both ports, so that Reverse of a request matches its reply.
type Flow struct {
	Proto   uint8
	Src     netip.Addr
	Dst     netip.Addr
	SrcPort uint16
	DstPort uint16
}

// Reverse returns the flow seen from the other end.
func (f Flow) Reverse() Flow {
	return Flow{Proto: f.Proto, Src: f.Dst, Dst: f.Src, SrcPort: f.DstPort, DstPort: f.SrcPort}
}

// Parsed is the decoded view of one packet. The zero value is reset by Decode.
type Parsed struct {
	Flow
	Version uint8 // 4 or 6
	// Length is the IP total length (header included) as the header states it;
	// Decode checks it against the buffer.
	Length int
	// L4Offset is where the transport header starts; 0 if there is none to read
	// (non-first fragment, or a protocol this package does not parse).
	L4Offset int
	// Fragment is true for any fragment; NonFirst for those without the
	// transport header.
	Fragment bool
	NonFirst bool
	// HasPorts is true when SrcPort/DstPort were read from a TCP or UDP header.
	HasPorts bool
	TCPFlags uint8
	ICMPType uint8
	ICMPCode uint8
	// Inner is the flow quoted by an ICMP error (unreachable, too big, time
	// exceeded, parameter problem), as the original sender saw it.
	Inner    Flow
	HasInner bool
}

// IsICMP reports whether the packet is ICMPv4 or ICMPv6.
func (p *Parsed) IsICMP() bool { return p.Proto == ProtoICMPv4 || p.Proto == ProtoICMPv6 }

// IsEchoRequest reports an ICMP echo request of either family.
func (p *Parsed) IsEchoRequest() bool {
	return (p.Proto == ProtoICMPv6 && p.ICMPType == ICMPv6EchoRequest) ||
		(p.Proto == ProtoICMPv4 && p.ICMPType == ICMPv4EchoRequest)
}

// IsEchoReply reports an ICMP echo reply of either family.
func (p *Parsed) IsEchoReply() bool {
	return (p.Proto == ProtoICMPv6 && p.ICMPType == ICMPv6EchoReply) ||
		(p.Proto == ProtoICMPv4 && p.ICMPType == ICMPv4EchoReply)
}

// IsICMPError reports an ICMP error message of either family.
func (p *Parsed) IsICMPError() bool {
	switch p.Proto {
	case ProtoICMPv6:
		return p.ICMPType >= ICMPv6Unreachable && p.ICMPType <= ICMPv6ParamProb
	case ProtoICMPv4:
		return p.ICMPType == ICMPv4Unreachable || p.ICMPType == ICMPv4TimeExceed || p.ICMPType == ICMPv4ParamProb
	}
	return false
}

// IsTCPInitial reports a TCP SYN without ACK: the packet that opens a connection.
func (p *Parsed) IsTCPInitial() bool {
	return p.Proto == ProtoTCP && p.HasPorts && p.TCPFlags&(TCPSyn|TCPAck) == TCPSyn
}

// Decode parses b, which must start with an IP header. On error p holds
// whatever was read before the problem and must not be used for decisions.
func (p *Parsed) Decode(b []byte) error {
	*p = Parsed{}
	if len(b) < 1 {
		return errShort
	}
	switch b[0] >> 4 {
	case 4:
		return p.decode4(b, false)
	case 6:
		return p.decode6(b, false)
	}
	return errVersion
}

// decode4 parses an IPv4 header. quoted is set for the copy inside an ICMP
// error, which is usually truncated: lengths are then not checked against b.
func (p *Parsed) decode4(b []byte, quoted bool) error {
	if len(b) < IPv4HeaderLen {
		return errShort
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if ihl < IPv4HeaderLen || len(b) < ihl {
		return errLength
	}
	if !quoted && (total < ihl || total > len(b)) {
		return errLength
	}
	p.Version = 4
	p.Length = total
	p.Proto = b[9]
	p.Src = netip.AddrFrom4([4]byte(b[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	frag := binary.BigEndian.Uint16(b[6:8])
	offset := frag & 0x1fff
	more := frag&0x2000 != 0
	p.Fragment = offset != 0 || more
	p.NonFirst = offset != 0
	if p.NonFirst {
		return nil
	}
	end := total
	if quoted || end > len(b) {
		end = len(b)
	}
	return p.decodeL4(b[:end], ihl, quoted)
}

func (p *Parsed) decode6(b []byte, quoted bool) error {
	if len(b) < IPv6HeaderLen {
		return errShort
	}
	payload := int(binary.BigEndian.Uint16(b[4:6]))
	total := IPv6HeaderLen + payload
	if !quoted && total > len(b) {
		return errLength
	}
	p.Version = 6
	p.Length = total
	p.Src = netip.AddrFrom16([16]byte(b[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	end := total
	if quoted || end > len(b) {
		end = len(b)
	}
	b = b[:end]
	next := b[6]
	off := IPv6HeaderLen
	// Walk the extension headers. Eight is more than any sane packet has;
	// a longer chain is treated as malformed rather than walked forever.
	for i := 0; i < 8; i++ {
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(b) < off+8 {
				return p.truncatedExt(quoted)
			}
			next = b[off]
			off += (int(b[off+1]) + 1) * 8
			if off > len(b) {
				return p.truncatedExt(quoted)
			}
		case 44: // fragment
			if len(b) < off+8 {
				return p.truncatedExt(quoted)
			}
			fo := binary.BigEndian.Uint16(b[off+2 : off+4])
			p.Fragment = true
			p.NonFirst = fo>>3 != 0
			next = b[off]
			off += 8
			if p.NonFirst {
				p.Proto = next
				return nil
			}
		case 51: // authentication header: length in 4-octet units, minus 2
			if len(b) < off+8 {
				return p.truncatedExt(quoted)
			}
			next = b[off]
			off += (int(b[off+1]) + 2) * 4
			if off > len(b) {
				return p.truncatedExt(quoted)
			}
		default:
			p.Proto = next
			return p.decodeL4(b, off, quoted)
		}
	}
	return errExt
}

func (p *Parsed) truncatedExt(quoted bool) error {
	if quoted {
		return nil // the quote was cut short: no ports, but not an error
	}
	return errExt
}

func (p *Parsed) decodeL4(b []byte, off int, quoted bool) error {
	p.L4Offset = off
	l4 := b[off:]
	switch p.Proto {
	case ProtoTCP:
		// Ports are in the first four bytes; an ICMP quote guarantees eight.
		if len(l4) < 4 || (!quoted && len(l4) < 20) {
			return p.shortL4(quoted)
		}
		p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		p.DstPort = binary.BigEndian.Uint16(l4[2:4])
		p.HasPorts = true
		if len(l4) >= 14 {
			p.TCPFlags = l4[13]
		}
	case ProtoUDP:
		if len(l4) < 4 || (!quoted && len(l4) < 8) {
			return p.shortL4(quoted)
		}
		p.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		p.DstPort = binary.BigEndian.Uint16(l4[2:4])
		p.HasPorts = true
	case ProtoICMPv4, ProtoICMPv6:
		if (p.Proto == ProtoICMPv4) != (p.Version == 4) {
			// ICMPv4 inside IPv6 or the reverse: meaningless, treat as an
			// opaque protocol.
			p.L4Offset = 0
			return nil
		}
		if len(l4) < ICMPHeaderLen {
			return p.shortL4(quoted)
		}
		p.ICMPType = l4[0]
		p.ICMPCode = l4[1]
		if p.IsEchoRequest() || p.IsEchoReply() {
			id := binary.BigEndian.Uint16(l4[4:6])
			p.SrcPort, p.DstPort = id, id
		} else if p.IsICMPError() && !quoted {
			var inner Parsed
			quote := l4[ICMPHeaderLen:]
			var err error
			if p.Version == 4 {
				err = inner.decode4(quote, true)
			} else {
				err = inner.decode6(quote, true)
			}
			if err == nil && inner.Version == p.Version {
				p.Inner = inner.Flow
				p.HasInner = true
			}
		}
	default:
		p.L4Offset = 0
	}
	return nil
}

func (p *Parsed) shortL4(quoted bool) error {
	if quoted {
		return nil
	}
	return errShort
}
