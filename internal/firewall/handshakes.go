//go:build linux

package firewall

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The kernel's share of holding against handshake floods. A node reads its
// UDP socket on one goroutine; a flood of initiations at line rate fills
// that socket faster than any per-packet check in userspace can empty it,
// and its peers' packets are dropped with the flood (measured: 200k
// initiations a second left a peer 0.00-0.14 Gbit/s of its 1.8). In
// prerouting, before conntrack and the socket, WireGuard initiations to
// tomoe's port beyond HandshakeRate a second are dropped, except from the
// addresses of the node's current peers (sets peers4, peers6, kept by
// SetPeers), whose rekeying must get through. What passes meets the
// node's own budgets (internal/transport/handshake.go).
//
// An initiation is a UDP datagram of 156 bytes (8 of header, 148 of
// message) whose payload starts 01 00 00 00.

// HandshakeBurst is the burst the kernel limit allows above the rate.
const HandshakeBurst = 2000

const (
	setPeers4 = "peers4"
	setPeers6 = "peers6"
)

// handshakeSets are the sets of peers' addresses the rules look up. Their
// IDs (which name a set within one netlink batch) are set here: left 0,
// the library would take one from a package counter it does not guard.
func handshakeSets() []*nftables.Set {
	return []*nftables.Set{
		{Table: table, ID: setID4, Name: setPeers4, KeyType: nftables.TypeIPAddr},
		{Table: table, ID: setID6, Name: setPeers6, KeyType: nftables.TypeIP6Addr},
	}
}

const (
	setID4 = 1
	setID6 = 2
)

// handshakeLimit returns the prerouting rules: per family, an initiation
// from a peer's address is accepted (left to the node), others beyond the
// rate dropped and counted.
func handshakeLimit(cfg Config) [][]expr.Any {
	if cfg.HandshakeRate == 0 || cfg.UDPPort == 0 {
		return nil
	}
	initiation := slices.Concat(l4proto(unix.IPPROTO_UDP), dport(cfg.UDPPort), []expr.Any{
		// udp length 156
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 4, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, 156)},
		// @th,64,32 0x01000000: message type 1, three zero bytes
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 8, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{1, 0, 0, 0}},
	})
	limit := []expr.Any{
		&expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(cfg.HandshakeRate), Unit: expr.LimitTimeSecond, Burst: HandshakeBurst, Over: true},
		&expr.Counter{},
		verdict(expr.VerdictDrop),
	}
	var rules [][]expr.Any
	for _, fam := range []struct {
		proto  byte
		set    string
		id     uint32
		offset uint32
		length uint32
	}{{unix.NFPROTO_IPV4, setPeers4, setID4, 12, 4}, {unix.NFPROTO_IPV6, setPeers6, setID6, 8, 16}} {
		peer := []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.offset, Len: fam.length},
			&expr.Lookup{SourceRegister: 1, SetName: fam.set, SetID: fam.id},
		}
		rules = append(rules,
			slices.Concat(nfproto(fam.proto), initiation, peer, []expr.Any{verdict(expr.VerdictAccept)}),
			slices.Concat(nfproto(fam.proto), initiation, limit))
	}
	return rules
}

// SetPeers makes addrs the addresses whose initiations pass the kernel's
// limit (the node's current peers' endpoints).
func (f *Firewall) SetPeers(addrs []netip.Addr) error {
	want := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		want[a.Unmap()] = true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	var add4, add6, del4, del6 []nftables.SetElement
	for a := range want {
		if !f.peers[a] {
			add4, add6 = appendElem(add4, add6, a)
		}
	}
	for a := range f.peers {
		if !want[a] {
			del4, del6 = appendElem(del4, del6, a)
		}
	}
	if len(add4)+len(add6)+len(del4)+len(del6) == 0 {
		return nil
	}
	sets := handshakeSets()
	for i, ops := range [][2][]nftables.SetElement{{add4, del4}, {add6, del6}} {
		if len(ops[0]) > 0 {
			if err := f.conn.SetAddElements(sets[i], ops[0]); err != nil {
				return fmt.Errorf("firewall: peers' addresses: %w", err)
			}
		}
		if len(ops[1]) > 0 {
			if err := f.conn.SetDeleteElements(sets[i], ops[1]); err != nil {
				return fmt.Errorf("firewall: peers' addresses: %w", err)
			}
		}
	}
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("firewall: peers' addresses: %w", err)
	}
	f.peers = want
	return nil
}

// peerElements splits the current peers' addresses by family, for a
// rebuilt table.
func (f *Firewall) peerElements() (v4, v6 []nftables.SetElement) {
	for a := range f.peers {
		v4, v6 = appendElem(v4, v6, a)
	}
	return v4, v6
}

func appendElem(v4, v6 []nftables.SetElement, a netip.Addr) ([]nftables.SetElement, []nftables.SetElement) {
	if a.Is4() {
		return append(v4, nftables.SetElement{Key: a.AsSlice()}), v6
	}
	return v4, append(v6, nftables.SetElement{Key: a.AsSlice()})
}
