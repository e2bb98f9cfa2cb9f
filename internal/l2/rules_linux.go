//go:build linux

package l2

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the name of this package's nftables tables: inet tomoe-l2
// (which VXLAN packets reach the tunnels) and bridge tomoe-l2 (broadcast
// limits and TCP MSS clamping on the segments' bridges).
const TableName = "tomoe-l2"

const vxlanPort = 4789

// rules are the installed tables.
type rules struct {
	conn   *nftables.Conn
	tables []*nftables.Table
}

// installRules replaces the tables (a crashed run's included) with those
// for segs, in one batch.
func installRules(tun string, segs []Segment) (*rules, error) {
	conn, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("l2: nftables: %w", err)
	}
	r := &rules{conn: conn, tables: []*nftables.Table{
		{Name: TableName, Family: nftables.TableFamilyINet},
		{Name: TableName, Family: nftables.TableFamilyBridge},
	}}
	for _, t := range r.tables {
		conn.AddTable(t)
		conn.DelTable(t)
		conn.AddTable(t)
	}
	accept := nftables.ChainPolicyAccept
	// Before tomoe's own input chain and anything else at filter priority.
	input := conn.AddChain(&nftables.Chain{Name: "input", Table: r.tables[0], Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityFilter - 1), Policy: &accept})
	forward := conn.AddChain(&nftables.Chain{Name: "forward", Table: r.tables[1], Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	for _, s := range segs {
		for _, rule := range tunnelRules(tun, s) {
			conn.AddRule(&nftables.Rule{Table: r.tables[0], Chain: input, Exprs: rule})
		}
		for _, rule := range bridgeRules(s) {
			conn.AddRule(&nftables.Rule{Table: r.tables[1], Chain: forward, Exprs: rule})
		}
	}
	if err := conn.Flush(); err != nil {
		conn.CloseLasting()
		return nil, fmt.Errorf("l2: install nftables tables %s: %w", TableName, err)
	}
	return r, nil
}

func (r *rules) close() error {
	defer r.conn.CloseLasting()
	for _, t := range r.tables {
		r.conn.AddTable(t)
		r.conn.DelTable(t)
	}
	if err := r.conn.Flush(); err != nil {
		return fmt.Errorf("l2: delete nftables tables %s: %w", TableName, err)
	}
	return nil
}

// tunnelRules accept each tunnel's VXLAN packets only from its far end
// through the TUN interface, to this node's address, and drop every other
// packet with one of the segment's VXLAN IDs: the kernel's VXLAN socket
// listens on every address and does not check a packet's source, so
// without them a LAN neighbour (or another member) could inject frames.
func tunnelRules(tun string, s Segment) [][]expr.Any {
	var out [][]expr.Any
	for _, t := range s.Tunnels() {
		out = append(out, slices.Concat(
			meta(expr.MetaKeyNFPROTO, []byte{unix.NFPROTO_IPV6}),
			ifname(expr.MetaKeyIIFNAME, tun),
			meta(expr.MetaKeyL4PROTO, []byte{unix.IPPROTO_UDP}),
			payload(expr.PayloadBaseNetworkHeader, 8, t.Remote.AsSlice()),
			payload(expr.PayloadBaseNetworkHeader, 24, s.Self.AsSlice()),
			vxlan(t.VNI),
			[]expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictAccept}}))
	}
	for _, t := range s.Tunnels() {
		out = append(out, slices.Concat(
			meta(expr.MetaKeyL4PROTO, []byte{unix.IPPROTO_UDP}),
			vxlan(t.VNI),
			[]expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}))
	}
	return out
}

// vxlan matches UDP to the VXLAN port with VXLAN ID vni (bytes 4..6 of the
// VXLAN header, after the 8 of UDP).
func vxlan(vni uint32) []expr.Any {
	v := binary.BigEndian.AppendUint32(nil, vni)
	return slices.Concat(
		payload(expr.PayloadBaseTransportHeader, 2, binary.BigEndian.AppendUint16(nil, vxlanPort)),
		payload(expr.PayloadBaseTransportHeader, 12, v[1:]))
}

// bridgeRules limit the broadcast and multicast frames each port sends
// into the segment (one limit per port), and clamp the MSS of TCP SYNs
// crossing the bridge to what the segment's MTU carries, for the hosts on
// an attached LAN, whose MTU is the LAN's.
func bridgeRules(s Segment) [][]expr.Any {
	pps := s.BroadcastPPS
	if pps <= 0 {
		pps = DefaultBroadcastPPS
	}
	ports := []string{}
	for _, t := range s.Tunnels() {
		ports = append(ports, t.Device)
	}
	if s.Attach != "" {
		ports = append(ports, s.Attach)
	}
	var out [][]expr.Any
	for _, p := range ports {
		out = append(out, slices.Concat(
			ifname(expr.MetaKeyIIFNAME, p),
			[]expr.Any{
				// The group bit of the destination MAC: broadcast and multicast.
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 0, Len: 1},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{1}, Xor: []byte{0}},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0}},
				&expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(pps), Over: true, Unit: expr.LimitTimeSecond, Burst: uint32(pps)},
				&expr.Counter{},
				&expr.Verdict{Kind: expr.VerdictDrop},
			}))
	}
	// Every frame the bridge forwards came in through one of its ports
	// (meta ibrname needs a module kernels often lack).
	for _, p := range ports {
		for _, v := range []struct {
			proto  uint16
			header int
		}{{unix.ETH_P_IP, 40}, {unix.ETH_P_IPV6, 60}} {
			out = append(out, clampMSS(p, v.proto, uint16(s.MTU-v.header)))
		}
	}
	return out
}

// clampMSS lowers the MSS option of TCP SYNs (and SYN-ACKs) of protocol
// proto that come in through port to mss, when it is larger.
func clampMSS(port string, proto uint16, mss uint16) []expr.Any {
	const (
		tcpFlagsOffset = 13
		syn, rst       = 0x02, 0x04
		maxseg         = 2
	)
	want := binary.BigEndian.AppendUint16(nil, mss)
	return slices.Concat(
		ifname(expr.MetaKeyIIFNAME, port),
		meta(expr.MetaKeyPROTOCOL, binary.BigEndian.AppendUint16(nil, proto)),
		meta(expr.MetaKeyL4PROTO, []byte{unix.IPPROTO_TCP}),
		[]expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: tcpFlagsOffset, Len: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{syn | rst}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{syn}},
			&expr.Exthdr{DestRegister: 1, Op: expr.ExthdrOpTcpopt, Type: maxseg, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpGt, Register: 1, Data: want},
			&expr.Immediate{Register: 1, Data: want},
			&expr.Exthdr{SourceRegister: 1, Op: expr.ExthdrOpTcpopt, Type: maxseg, Offset: 2, Len: 2},
		})
}

func meta(key expr.MetaKey, want []byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: want},
	}
}

// ifname matches an interface name as nft does: NUL-padded to IFNAMSIZ.
func ifname(key expr.MetaKey, name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return meta(key, b)
}

func payload(base expr.PayloadBase, offset uint32, want []byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: base, Offset: offset, Len: uint32(len(want))},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: want},
	}
}
