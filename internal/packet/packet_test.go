package packet

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

var (
	a6 = netip.MustParseAddr("fc11::1")
	b6 = netip.MustParseAddr("fc22::2")
	a4 = netip.MustParseAddr("10.0.0.1")
	b4 = netip.MustParseAddr("10.0.0.2")
)

func tcp6(src, dst netip.Addr, sport, dport uint16, flags uint8, payload int) []byte {
	return TCP(src, dst, sport, dport, flags, make([]byte, payload))
}

func udp4(src, dst netip.Addr, sport, dport uint16) []byte {
	return UDP(src, dst, sport, dport, make([]byte, 4))
}

func TestDecodeTCP6(t *testing.T) {
	b := tcp6(a6, b6, 40000, 22, TCPSyn, 10)
	var p Parsed
	if err := p.Decode(b); err != nil {
		t.Fatal(err)
	}
	want := Flow{Proto: ProtoTCP, Src: a6, Dst: b6, SrcPort: 40000, DstPort: 22}
	if p.Flow != want || !p.HasPorts || !p.IsTCPInitial() || p.Version != 6 || p.Length != len(b) {
		t.Fatalf("got %+v", p)
	}
	if !VerifyTransportChecksum(b, &p) {
		t.Fatal("checksum")
	}
	b[IPv6HeaderLen+13] = TCPSyn | TCPAck
	p.Decode(b)
	if p.IsTCPInitial() {
		t.Fatal("SYN-ACK counted as initial")
	}
}

func TestDecodeUDP4AndFragments(t *testing.T) {
	b := udp4(a4, b4, 5353, 53)
	var p Parsed
	if err := p.Decode(b); err != nil {
		t.Fatal(err)
	}
	if p.Flow != (Flow{Proto: ProtoUDP, Src: a4, Dst: b4, SrcPort: 5353, DstPort: 53}) || p.Fragment {
		t.Fatalf("got %+v", p)
	}
	// Non-first fragment: no ports. (The header checksum is not checked.)
	binary.BigEndian.PutUint16(b[6:8], 0x2000|10)
	p.Decode(b)
	if !p.Fragment || !p.NonFirst || p.HasPorts {
		t.Fatalf("fragment: %+v", p)
	}
}

func TestDecodeIPv6FragmentHeader(t *testing.T) {
	inner := tcp6(a6, b6, 1, 2, TCPSyn, 0)
	b := make([]byte, len(inner)+8)
	copy(b, inner[:IPv6HeaderLen])
	b[6] = 44
	binary.BigEndian.PutUint16(b[4:6], uint16(len(b)-IPv6HeaderLen))
	b[IPv6HeaderLen] = ProtoTCP
	binary.BigEndian.PutUint16(b[IPv6HeaderLen+2:], 1) // offset 0, M=1
	copy(b[IPv6HeaderLen+8:], inner[IPv6HeaderLen:])
	var p Parsed
	if err := p.Decode(b); err != nil {
		t.Fatal(err)
	}
	if !p.Fragment || p.NonFirst || !p.HasPorts || p.DstPort != 2 {
		t.Fatalf("first fragment: %+v", p)
	}
	binary.BigEndian.PutUint16(b[IPv6HeaderLen+2:], 8<<3)
	p.Decode(b)
	if !p.NonFirst || p.HasPorts || p.Proto != ProtoTCP {
		t.Fatalf("later fragment: %+v", p)
	}
}

func TestEchoAndUnreachable(t *testing.T) {
	for _, pair := range [][2]netip.Addr{{a6, b6}, {a4, b4}} {
		req := EchoRequest(pair[0], pair[1], 77, 3, []byte("hello"))
		var p Parsed
		if err := p.Decode(req); err != nil {
			t.Fatal(err)
		}
		if !p.IsEchoRequest() || p.SrcPort != 77 || !VerifyTransportChecksum(req, &p) {
			t.Fatalf("echo: %+v", p)
		}
		seq, pl := EchoPayload(req, &p)
		if seq != 3 || string(pl) != "hello" {
			t.Fatalf("payload %d %q", seq, pl)
		}
		un := Unreachable(pair[1], req, UnreachAddress)
		var u Parsed
		if err := u.Decode(un); err != nil {
			t.Fatal(err)
		}
		if !u.IsICMPError() || !u.HasInner || u.Inner != p.Flow || u.Dst != pair[0] || !VerifyTransportChecksum(un, &u) {
			t.Fatalf("unreachable: %+v", u)
		}
		if Unreachable(pair[0], un, UnreachAddress) != nil {
			t.Fatal("answered an ICMP error with an ICMP error")
		}
	}
	big := tcp6(a6, b6, 1, 2, TCPAck, 3000)
	if un := Unreachable(b6, big, 0); len(un) != minIPv6MTU {
		t.Fatalf("unreachable for a big packet is %d bytes", len(un))
	}
}

func TestDecodeRejects(t *testing.T) {
	good := tcp6(a6, b6, 1, 2, TCPSyn, 0)
	cases := map[string][]byte{
		"empty":       {},
		"version 5":   {0x50, 0, 0, 0},
		"short v6":    good[:30],
		"length lies": append([]byte{}, good[:len(good)-1]...),
		"short v4":    {0x45, 0, 0, 20},
		"ihl small":   append([]byte{0x41}, make([]byte, 30)...),
	}
	for name, b := range cases {
		var p Parsed
		if err := p.Decode(b); err == nil {
			t.Errorf("%s: accepted: %+v", name, p)
		}
	}
}

func BenchmarkDecodeTCP6(b *testing.B) {
	pkt := tcp6(a6, b6, 40000, 22, TCPAck, 1300)
	var p Parsed
	b.ReportAllocs()
	for b.Loop() {
		p.Decode(pkt)
	}
}

// FuzzDecode: no input may panic, and what Decode accepts must be consistent.
func FuzzDecode(f *testing.F) {
	f.Add(tcp6(a6, b6, 1, 2, TCPSyn, 4))
	f.Add(udp4(a4, b4, 1, 2))
	f.Add(EchoRequest(a6, b6, 1, 1, []byte("x")))
	f.Add(Unreachable(b6, tcp6(a6, b6, 1, 2, TCPSyn, 4), 3))
	f.Add(Unreachable(b4, udp4(a4, b4, 1, 2), 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p Parsed
		if err := p.Decode(b); err != nil {
			return
		}
		if p.Length > len(b) || p.L4Offset > p.Length {
			t.Fatalf("inconsistent: len %d, %+v", len(b), p)
		}
		if p.Version != 4 && p.Version != 6 {
			t.Fatalf("version %d", p.Version)
		}
		VerifyTransportChecksum(b, &p)
		EchoPayload(b, &p)
		Unreachable(p.Dst, b, 1)
	})
}
