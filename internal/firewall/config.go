// Package firewall owns tomoe's nftables rules in kernel mode: one table,
// inet tomoe, that nothing else writes to. It holds
//
//   - anti-spoofing in prerouting: overlay-sourced packets, and packets for
//     the node address, must come in through the TUN interface, since only
//     there has WireGuard proved who sent them;
//   - in input, the overlay reaches only this host's overlay addresses:
//     a node that forwards (a gateway, an exit) must not expose its LAN
//     and public addresses, and what listens on them, to its peers;
//   - masquerading of traffic from the overlay into offered routes;
//   - TCP MSS clamping on traffic forwarded through the TUN interface;
//   - stealth mode: no answer (no RST, no ICMP error) to unsolicited
//     traffic on the physical interfaces except tomoe's own ports;
//   - a limit on handshake initiations to tomoe's port, except from its
//     peers' addresses (handshakes.go).
//
// Every change is one netlink batch, which the kernel applies atomically:
// there is never a moment with half a ruleset. The table is removed by
// Close; a table left behind by a crash is replaced by Open.
//
// nftables is Linux's: elsewhere (other.go) Open says so, and the config
// refuses what needs the firewall there (listen.stealth, routes.offer).
package firewall

import "net/netip"

// TableName is the name of tomoe's table (family inet).
const TableName = "tomoe"

// Config is the ruleset to install.
type Config struct {
	// TUN is the overlay interface name.
	TUN string
	// NodeAddr is this node's address in fc00::/8.
	NodeAddr netip.Addr
	// IPv4 is this node's IPv4 address on the overlay (tun.ipv4), if
	// any: like NodeAddr, it may only come and go through TUN.
	IPv4 netip.Addr
	// Site is this node's site /64 in 0300::/8: devices on the LAN behind
	// this node use it, so it is accepted from every interface. When it is
	// unset, all of 0300::/8 must come in through TUN.
	Site netip.Prefix
	// Masquerade lists offered route prefixes (IPv4 or IPv6) whose traffic
	// from the overlay leaves with this host's address on the outgoing
	// interface. 0.0.0.0/0 and ::/0 make an exit node.
	Masquerade []netip.Prefix
	// ForwardTUNOnly drops forwarded packets that neither come from nor go
	// to TUN: set when tomoe turned forwarding on, so that the host does
	// not start routing between its other interfaces.
	ForwardTUNOnly bool
	// Bridges are the virtual Ethernet segments' bridges (internal/l2):
	// with ForwardTUNOnly, frames they bridge still pass (br_netfilter
	// hands bridged IP packets to the forward hook, in and out through
	// the bridge).
	Bridges []string
	// ClampMSS clamps the MSS option of TCP SYNs forwarded into or out of
	// TUN to what the route's MTU allows, so TCP through the overlay does
	// not depend on path MTU discovery.
	ClampMSS bool
	// Stealth drops unsolicited inbound traffic on every interface but lo
	// and TUN, except UDPPort and TCPPorts, without an answer.
	Stealth bool
	// UDPPort is tomoe's UDP port, accepted when Stealth (0: none).
	UDPPort uint16
	// TCPPorts are further TCP ports accepted when Stealth, such as the
	// bridge's.
	TCPPorts []uint16
	// HandshakeRate, if not 0, drops WireGuard handshake initiations to
	// UDPPort beyond this many a second (plus HandshakeBurst), except from
	// the addresses SetPeers lists.
	HandshakeRate uint32
}
