//go:build linux

package firewall

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// baseChain is a base chain and its rules, in order.
type baseChain struct {
	chain *nftables.Chain
	rules [][]expr.Any
}

// chains returns the chains cfg needs. Chains that would be empty are not
// made: a nat chain makes conntrack track every packet, and every base
// chain costs a hook call per packet. (The input chain is never empty: it
// keeps the overlay off the host's own addresses.)
func chains(cfg Config) []baseChain {
	accept := nftables.ChainPolicyAccept
	out := []baseChain{{
		chain: &nftables.Chain{Name: "prerouting", Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRaw, Policy: &accept},
		rules: append(antiSpoof(cfg), handshakeLimit(cfg)...),
	}}
	if len(cfg.Masquerade) > 0 {
		out = append(out, baseChain{
			chain: &nftables.Chain{Name: "postrouting", Type: nftables.ChainTypeNAT,
				Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept},
			rules: masquerade(cfg),
		})
	}
	if cfg.ClampMSS || cfg.ForwardTUNOnly {
		var rules [][]expr.Any
		if cfg.ForwardTUNOnly {
			for _, b := range cfg.Bridges {
				rules = append(rules, slices.Concat(
					ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, b),
					ifname(expr.MetaKeyOIFNAME, expr.CmpOpEq, b),
					[]expr.Any{verdict(expr.VerdictAccept)}))
			}
			rules = append(rules, slices.Concat(
				ifname(expr.MetaKeyIIFNAME, expr.CmpOpNeq, cfg.TUN),
				ifname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, cfg.TUN),
				[]expr.Any{&expr.Counter{}, verdict(expr.VerdictDrop)}))
		}
		if cfg.ClampMSS {
			rules = append(rules, clampMSS(expr.MetaKeyOIFNAME, cfg.TUN), clampMSS(expr.MetaKeyIIFNAME, cfg.TUN))
		}
		out = append(out, baseChain{
			chain: &nftables.Chain{Name: "forward", Type: nftables.ChainTypeFilter,
				Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityMangle, Policy: &accept},
			rules: rules,
		})
	}
	input := overlayInput(cfg)
	if cfg.Stealth {
		input = append(input, stealth(cfg)...)
	}
	out = append(out, baseChain{
		chain: &nftables.Chain{Name: "input", Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept},
		rules: input,
	})
	return out
}

// overlayInput drops what comes in through TUN for this host but not for
// its overlay addresses (the node address, its site prefix, tun.ipv4): on
// a node that forwards (a gateway, an exit), the host's LAN and public
// addresses lie inside what it offers, yet they are the host's, and the
// services listening on every address must not become reachable from
// the overlay through them. The input hook sees only packets for this
// host, so no list of its addresses is needed, and the rule keeps up as
// they change.
func overlayInput(cfg Config) [][]expr.Any {
	fromTUN := ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, cfg.TUN)
	drop := []expr.Any{&expr.Counter{}, verdict(expr.VerdictDrop)}
	v6 := slices.Concat(nfproto(unix.NFPROTO_IPV6), fromTUN, addr(daddr, expr.CmpOpNeq, netip.PrefixFrom(cfg.NodeAddr, 128)))
	if cfg.Site.IsValid() {
		v6 = append(v6, addr(daddr, expr.CmpOpNeq, cfg.Site)...)
	}
	v4 := slices.Concat(nfproto(unix.NFPROTO_IPV4), fromTUN)
	if cfg.IPv4.IsValid() {
		v4 = append(v4, addr(daddr, expr.CmpOpNeq, netip.PrefixFrom(cfg.IPv4, 32))...)
	}
	// Neighbour discovery reaches no service; a TUN device has none, but
	// an interface standing in for it (tests use a veth) needs it to
	// deliver anything at all.
	nd := slices.Concat(nfproto(unix.NFPROTO_IPV6), fromTUN, l4proto(unix.IPPROTO_ICMPV6), []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: []byte{133}, ToData: []byte{137}},
		verdict(expr.VerdictAccept),
	})
	return [][]expr.Any{append(v4, drop...), nd, append(v6, drop...)}
}

// antiSpoof drops packets that claim an overlay identity but did not come
// through TUN (or lo, where the host's own traffic to itself loops back).
// Only WireGuard, behind TUN, proves that a packet's overlay source is its
// sender's; without these rules a LAN neighbour could send packets from a
// peer's address, or to the node address, through the physical interface,
// and the host's weak-host model would take them.
func antiSpoof(cfg Config) [][]expr.Any {
	notOverlay := slices.Concat(ifname(expr.MetaKeyIIFNAME, expr.CmpOpNeq, cfg.TUN), ifname(expr.MetaKeyIIFNAME, expr.CmpOpNeq, "lo"))
	drop := []expr.Any{&expr.Counter{}, verdict(expr.VerdictDrop)}
	// Devices on the LAN behind this node legitimately send from Site.
	otherSite := addr(saddr, expr.CmpOpEq, identity.SitePrefixSpace)
	if cfg.Site.IsValid() {
		otherSite = append(otherSite, addr(saddr, expr.CmpOpNeq, cfg.Site)...)
	}
	rules := [][]expr.Any{
		slices.Concat(nfproto(unix.NFPROTO_IPV6), addr(saddr, expr.CmpOpEq, identity.OverlayPrefix), notOverlay, drop),
		slices.Concat(nfproto(unix.NFPROTO_IPV6), addr(daddr, expr.CmpOpEq, netip.PrefixFrom(cfg.NodeAddr, 128)), notOverlay, drop),
		slices.Concat(nfproto(unix.NFPROTO_IPV6), otherSite, notOverlay, drop),
	}
	if cfg.IPv4.IsValid() {
		own := netip.PrefixFrom(cfg.IPv4, 32)
		rules = append(rules,
			slices.Concat(nfproto(unix.NFPROTO_IPV4), addr(saddr, expr.CmpOpEq, own), notOverlay, drop),
			slices.Concat(nfproto(unix.NFPROTO_IPV4), addr(daddr, expr.CmpOpEq, own), notOverlay, drop))
	}
	return rules
}

// masquerade rewrites the source of traffic from the overlay into each
// offered prefix. For traffic being forwarded, meta iifname in postrouting
// is the interface it came in on.
func masquerade(cfg Config) [][]expr.Any {
	var prefixes []netip.Prefix
	for _, p := range cfg.Masquerade {
		prefixes = append(prefixes, p.Masked())
	}
	slices.SortFunc(prefixes, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	var rules [][]expr.Any
	for _, p := range slices.Compact(prefixes) {
		fam := byte(unix.NFPROTO_IPV6)
		if p.Addr().Is4() {
			fam = unix.NFPROTO_IPV4
		}
		r := slices.Concat(nfproto(fam),
			ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, cfg.TUN),
			ifname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, cfg.TUN))
		if p.Bits() > 0 {
			r = append(r, addr(daddr, expr.CmpOpEq, p)...)
		}
		rules = append(rules, append(r, &expr.Masq{}))
	}
	return rules
}

// clampMSS is `<key> TUN tcp flags & (syn|rst) == syn tcp option maxseg
// size set rt mtu`. The kernel only ever lowers the MSS; rt mtu is the
// smaller MTU of the routes to the packet's destination and back to its
// source, less the IP and TCP headers, so one rule per direction covers
// both the SYN and the SYN-ACK of a connection through TUN.
func clampMSS(key expr.MetaKey, tun string) []expr.Any {
	const (
		tcpFlagsOffset = 13
		syn, rst       = 0x02, 0x04
		maxseg         = 2 // TCP option kind
	)
	return slices.Concat(
		ifname(key, expr.CmpOpEq, tun),
		l4proto(unix.IPPROTO_TCP),
		[]expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: tcpFlagsOffset, Len: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{syn | rst}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{syn}},
			&expr.Rt{Register: 1, Key: expr.RtTCPMSS},
			&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 2, Size: 2},
			&expr.Exthdr{SourceRegister: 1, Op: expr.ExthdrOpTcpopt, Type: maxseg, Offset: 2, Len: 2},
		})
}

// ndTypes are the ICMPv6 messages IPv6 itself needs on a link: router and
// neighbour discovery, and multicast listener discovery (without MLD
// reports, switches that snoop MLD stop forwarding the solicited-node
// multicast that neighbour discovery uses).
var ndTypes = []byte{
	130, // mld-listener-query
	131, // mld-listener-report
	132, // mld-listener-done
	133, // nd-router-solicit
	134, // nd-router-advert
	135, // nd-neighbor-solicit
	136, // nd-neighbor-advert
	143, // mld2-listener-report
}

// dhcpv6Client is the port DHCPv6 servers answer on, from a link-local
// address; conntrack cannot match the answer to a request sent to a
// multicast group, so it is accepted explicitly.
const dhcpv6Client = 546

// stealth accepts what the host asked for, what comes from lo and TUN,
// tomoe's ports, and what IPv6 needs on a link, and drops the rest:
// unanswered, so that a scan of the host's physical interfaces sees no
// RST and no ICMP error, nothing that says a host is there.
func stealth(cfg Config) [][]expr.Any {
	accept := verdict(expr.VerdictAccept)
	rules := [][]expr.Any{
		{
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binary.NativeEndian.AppendUint32(nil, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED),
				Xor:  make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
			accept,
		},
		append(ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, "lo"), accept),
		append(ifname(expr.MetaKeyIIFNAME, expr.CmpOpEq, cfg.TUN), accept),
	}
	if cfg.UDPPort != 0 {
		rules = append(rules, slices.Concat(l4proto(unix.IPPROTO_UDP), dport(cfg.UDPPort), []expr.Any{accept}))
	}
	for _, p := range sortedPorts(cfg.TCPPorts) {
		rules = append(rules, slices.Concat(l4proto(unix.IPPROTO_TCP), dport(p), []expr.Any{accept}))
	}
	for _, t := range ndTypes {
		rules = append(rules, slices.Concat(nfproto(unix.NFPROTO_IPV6), l4proto(unix.IPPROTO_ICMPV6), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{t}},
			accept,
		}))
	}
	rules = append(rules, slices.Concat(nfproto(unix.NFPROTO_IPV6), l4proto(unix.IPPROTO_UDP),
		addr(saddr, expr.CmpOpEq, netip.MustParsePrefix("fe80::/10")), dport(dhcpv6Client), []expr.Any{accept}))
	return append(rules, []expr.Any{&expr.Counter{}, verdict(expr.VerdictDrop)})
}

func verdict(k expr.VerdictKind) *expr.Verdict { return &expr.Verdict{Kind: k} }

// ifname compares the input or output interface name with name, as `nft`
// does: the name NUL-padded to IFNAMSIZ, so that "tomoe0" does not match
// "tomoe01".
func ifname(key expr.MetaKey, op expr.CmpOp, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: b},
	}
}

// nfproto matches the packet's family, which payload matches on network
// header fields need in an inet table.
func nfproto(family byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
	}
}

func l4proto(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// dport matches the TCP or UDP destination port; l4proto must precede it.
func dport(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
	}
}

type addrField int

const (
	saddr addrField = iota
	daddr
)

// addr matches the source or destination address against p (op Eq: in p,
// Neq: not in p), as nft does: a byte-aligned prefix loads only the bytes
// it covers, any other loads the whole address and masks it. nfproto for
// p's family must precede it; p must not be /0.
func addr(f addrField, op expr.CmpOp, p netip.Prefix) []expr.Any {
	var offset uint32
	switch {
	case p.Addr().Is4() && f == saddr:
		offset = 12
	case p.Addr().Is4():
		offset = 16
	case f == saddr:
		offset = 8
	default:
		offset = 24
	}
	want := p.Masked().Addr().AsSlice()
	if p.Bits()%8 == 0 {
		n := p.Bits() / 8
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(n)},
			&expr.Cmp{Op: op, Register: 1, Data: want[:n]},
		}
	}
	n := len(want)
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(n)},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(n), Mask: net.CIDRMask(p.Bits(), 8*n), Xor: make([]byte, n)},
		&expr.Cmp{Op: op, Register: 1, Data: want},
	}
}
