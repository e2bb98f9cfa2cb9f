package packet

import (
	"encoding/binary"
	"net/netip"
)

// minIPv6MTU bounds the size of ICMPv6 errors (RFC 4443 2.4(c)).
const minIPv6MTU = 1280

// Checksum folds the one's-complement sum of b into initial (RFC 1071).
func checksumAdd(sum uint32, b []byte) uint32 {
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	return sum
}

func checksumFold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = (sum & 0xffff) + sum>>16
	}
	return ^uint16(sum)
}

// pseudoHeaderSum is the IPv6 pseudo-header sum (RFC 8200 8.1), or the IPv4
// one when the addresses are IPv4.
func pseudoHeaderSum(src, dst netip.Addr, proto uint8, length int) uint32 {
	var sum uint32
	sum = checksumAdd(sum, src.AsSlice())
	sum = checksumAdd(sum, dst.AsSlice())
	sum += uint32(length)
	sum += uint32(proto)
	return sum
}

// TransportChecksum computes the TCP/UDP/ICMPv6 checksum of segment, whose
// checksum field must be zero.
func TransportChecksum(src, dst netip.Addr, proto uint8, segment []byte) uint16 {
	return checksumFold(checksumAdd(pseudoHeaderSum(src, dst, proto, len(segment)), segment))
}

// headerChecksum computes the IPv4 header checksum (the field must be zero).
func headerChecksum(h []byte) uint16 { return checksumFold(checksumAdd(0, h)) }

// VerifyTransportChecksum reports whether the TCP, UDP or ICMP checksum of the
// parsed packet b is correct. Used by tests and by the ping reply matcher.
func VerifyTransportChecksum(b []byte, p *Parsed) bool {
	if p.L4Offset == 0 || p.Fragment || p.Length > len(b) {
		return false
	}
	seg := b[p.L4Offset:p.Length]
	if p.Proto == ProtoICMPv4 {
		return checksumFold(checksumAdd(0, seg)) == 0
	}
	return checksumFold(checksumAdd(pseudoHeaderSum(p.Src, p.Dst, p.Proto, len(seg)), seg)) == 0
}

// IPv6Header writes a 40-byte IPv6 header into b.
func IPv6Header(b []byte, src, dst netip.Addr, next uint8, payloadLen int, hopLimit uint8) {
	b[0] = 0x60
	b[1], b[2], b[3] = 0, 0, 0
	binary.BigEndian.PutUint16(b[4:6], uint16(payloadLen))
	b[6] = next
	b[7] = hopLimit
	s, d := src.As16(), dst.As16()
	copy(b[8:24], s[:])
	copy(b[24:40], d[:])
}

// IPv4Header writes a 20-byte IPv4 header (no options, DF set) into b.
func IPv4Header(b []byte, src, dst netip.Addr, proto uint8, payloadLen int, ttl uint8) {
	b[0] = 0x45
	b[1] = 0
	binary.BigEndian.PutUint16(b[2:4], uint16(IPv4HeaderLen+payloadLen))
	binary.BigEndian.PutUint16(b[4:6], 0)
	binary.BigEndian.PutUint16(b[6:8], 0x4000)
	b[8] = ttl
	b[9] = proto
	b[10], b[11] = 0, 0
	s, d := src.As4(), dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:12], headerChecksum(b[:IPv4HeaderLen]))
}

// EchoRequest builds an ICMP echo request from src to dst (ICMPv6 or ICMPv4
// by the address family) with the given identifier, sequence and payload.
func EchoRequest(src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	if src.Is4() {
		b := make([]byte, IPv4HeaderLen+ICMPHeaderLen+len(payload))
		icmp := b[IPv4HeaderLen:]
		icmp[0] = ICMPv4EchoRequest
		binary.BigEndian.PutUint16(icmp[4:6], id)
		binary.BigEndian.PutUint16(icmp[6:8], seq)
		copy(icmp[8:], payload)
		binary.BigEndian.PutUint16(icmp[2:4], checksumFold(checksumAdd(0, icmp)))
		IPv4Header(b, src, dst, ProtoICMPv4, len(icmp), 64)
		return b
	}
	b := make([]byte, IPv6HeaderLen+ICMPHeaderLen+len(payload))
	icmp := b[IPv6HeaderLen:]
	icmp[0] = ICMPv6EchoRequest
	binary.BigEndian.PutUint16(icmp[4:6], id)
	binary.BigEndian.PutUint16(icmp[6:8], seq)
	copy(icmp[8:], payload)
	binary.BigEndian.PutUint16(icmp[2:4], TransportChecksum(src, dst, ProtoICMPv6, icmp))
	IPv6Header(b, src, dst, ProtoICMPv6, len(icmp), 64)
	return b
}

// EchoPayload returns the payload and sequence of an echo packet that p
// describes.
func EchoPayload(b []byte, p *Parsed) (seq uint16, payload []byte) {
	if p.L4Offset == 0 || p.Length > len(b) || p.L4Offset+ICMPHeaderLen > p.Length {
		return 0, nil
	}
	icmp := b[p.L4Offset:p.Length]
	return binary.BigEndian.Uint16(icmp[6:8]), icmp[ICMPHeaderLen:]
}

// ICMPv6 destination-unreachable codes.
const (
	UnreachNoRoute     = 0
	UnreachProhibited  = 1
	UnreachAddress     = 3
	UnreachPort        = 4
	UnreachPolicyFails = 5
)

// Unreachable builds the ICMP destination-unreachable error that from sends
// back to the source of orig, quoting as much of orig as the minimum MTU
// allows. It returns nil when orig must not be answered with an error
// (RFC 4443 2.4(e): not for ICMP errors, multicast, or unparsable packets).
func Unreachable(from netip.Addr, orig []byte, code uint8) []byte {
	var p Parsed
	if err := p.Decode(orig); err != nil {
		return nil
	}
	if p.IsICMPError() || p.Dst.IsMulticast() || p.Src.IsUnspecified() || p.Src.IsMulticast() {
		return nil
	}
	orig = orig[:p.Length]
	if p.Version == 4 {
		if !from.Is4() {
			return nil
		}
		// RFC 792 asks for the header and 8 bytes; more is allowed and helps.
		quote := orig
		if len(quote) > 548 {
			quote = quote[:548]
		}
		b := make([]byte, IPv4HeaderLen+ICMPHeaderLen+len(quote))
		icmp := b[IPv4HeaderLen:]
		icmp[0] = ICMPv4Unreachable
		icmp[1] = v4UnreachCode(code)
		copy(icmp[ICMPHeaderLen:], quote)
		binary.BigEndian.PutUint16(icmp[2:4], checksumFold(checksumAdd(0, icmp)))
		IPv4Header(b, from, p.Src, ProtoICMPv4, len(icmp), 64)
		return b
	}
	if !from.Is6() {
		return nil
	}
	quote := orig
	if max := minIPv6MTU - IPv6HeaderLen - ICMPHeaderLen; len(quote) > max {
		quote = quote[:max]
	}
	b := make([]byte, IPv6HeaderLen+ICMPHeaderLen+len(quote))
	icmp := b[IPv6HeaderLen:]
	icmp[0] = ICMPv6Unreachable
	icmp[1] = code
	copy(icmp[ICMPHeaderLen:], quote)
	binary.BigEndian.PutUint16(icmp[2:4], TransportChecksum(from, p.Src, ProtoICMPv6, icmp))
	IPv6Header(b, from, p.Src, ProtoICMPv6, len(icmp), 64)
	return b
}

// v4UnreachCode maps an ICMPv6 unreachable code to its ICMPv4 meaning.
func v4UnreachCode(code uint8) uint8 {
	switch code {
	case UnreachProhibited, UnreachPolicyFails:
		return 13 // communication administratively prohibited
	case UnreachPort:
		return 3
	case UnreachAddress:
		return 1 // host unreachable
	}
	return 0 // net unreachable
}

// UDP builds an IPv6 or IPv4 UDP datagram (family by src) with a correct
// checksum.
func UDP(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	hl := IPv6HeaderLen
	if src.Is4() {
		hl = IPv4HeaderLen
	}
	b := make([]byte, hl+8+len(payload))
	l4 := b[hl:]
	binary.BigEndian.PutUint16(l4[0:2], sport)
	binary.BigEndian.PutUint16(l4[2:4], dport)
	binary.BigEndian.PutUint16(l4[4:6], uint16(len(l4)))
	copy(l4[8:], payload)
	binary.BigEndian.PutUint16(l4[6:8], TransportChecksum(src, dst, ProtoUDP, l4))
	if src.Is4() {
		IPv4Header(b, src, dst, ProtoUDP, len(l4), 64)
	} else {
		IPv6Header(b, src, dst, ProtoUDP, len(l4), 64)
	}
	return b
}

// TCP builds an IPv6 or IPv4 TCP segment (family by src) with the given
// flags, no options and a correct checksum.
func TCP(src, dst netip.Addr, sport, dport uint16, flags uint8, payload []byte) []byte {
	hl := IPv6HeaderLen
	if src.Is4() {
		hl = IPv4HeaderLen
	}
	b := make([]byte, hl+20+len(payload))
	l4 := b[hl:]
	binary.BigEndian.PutUint16(l4[0:2], sport)
	binary.BigEndian.PutUint16(l4[2:4], dport)
	l4[12] = 5 << 4
	l4[13] = flags
	binary.BigEndian.PutUint16(l4[14:16], 65535)
	copy(l4[20:], payload)
	binary.BigEndian.PutUint16(l4[16:18], TransportChecksum(src, dst, ProtoTCP, l4))
	if src.Is4() {
		IPv4Header(b, src, dst, ProtoTCP, len(l4), 64)
	} else {
		IPv6Header(b, src, dst, ProtoTCP, len(l4), 64)
	}
	return b
}
