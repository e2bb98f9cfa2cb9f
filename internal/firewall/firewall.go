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
package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/tomoe-net/tomoe/internal/identity"
)

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

// validate checks cfg before anything is touched.
func (c Config) validate() error {
	if c.TUN == "" || len(c.TUN) >= unix.IFNAMSIZ {
		return fmt.Errorf("firewall: TUN %q: want an interface name of 1 to %d bytes", c.TUN, unix.IFNAMSIZ-1)
	}
	if c.TUN == "lo" {
		return errors.New(`firewall: TUN cannot be "lo"`)
	}
	if !c.NodeAddr.Is6() || c.NodeAddr.Zone() != "" || !identity.OverlayPrefix.Contains(c.NodeAddr) {
		return fmt.Errorf("firewall: node address %v is not in %v", c.NodeAddr, identity.OverlayPrefix)
	}
	if c.Site.IsValid() {
		if c.Site.Bits() != 64 || c.Site.Masked() != c.Site || !identity.SitePrefixSpace.Contains(c.Site.Addr()) {
			return fmt.Errorf("firewall: site prefix %v is not a /64 in %v", c.Site, identity.SitePrefixSpace)
		}
	}
	if c.IPv4.IsValid() && !c.IPv4.Is4() {
		return fmt.Errorf("firewall: overlay IPv4 address %v is not IPv4", c.IPv4)
	}
	for _, b := range c.Bridges {
		if b == "" || len(b) >= unix.IFNAMSIZ {
			return fmt.Errorf("firewall: bridge %q: want an interface name of 1 to %d bytes", b, unix.IFNAMSIZ-1)
		}
	}
	for _, p := range c.Masquerade {
		if !p.IsValid() || p.Addr().Zone() != "" || p.Addr().Is4In6() {
			return fmt.Errorf("firewall: masquerade prefix %v is not a plain IPv4 or IPv6 prefix", p)
		}
	}
	return nil
}

// Firewall is the installed table.
type Firewall struct {
	mu     sync.Mutex // guards conn, closed, peers
	conn   *nftables.Conn
	closed bool
	peers  map[netip.Addr]bool // the elements of the peers sets
}

// table is tomoe's table; its chains and rules are built by chains.
var table = &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}

// Open installs the ruleset for cfg, replacing a table inet tomoe left
// behind by a tomoe that crashed. It works in the network namespace of the
// calling thread; later calls use the same namespace whatever thread they
// run on.
func Open(cfg Config) (*Firewall, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	conn, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("firewall: open nftables netlink socket: %w", err)
	}
	f := &Firewall{conn: conn}
	if err := f.replace(cfg); err != nil {
		conn.CloseLasting()
		return nil, err
	}
	return f, nil
}

// Update atomically replaces the ruleset with the one for cfg, as when
// offered routes change while the node runs. If it fails, the previous
// ruleset stays in force.
func (f *Firewall) Update(cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errors.New("firewall: update after close")
	}
	return f.replace(cfg)
}

// replace sends one batch that deletes the table (adding it first, which
// is a no-op when it exists, so that the delete cannot fail) and builds it
// anew. The kernel commits the batch as one transaction. This also
// recovers from someone flushing the host's whole ruleset (as a reload of
// nftables.service does), which a batch that flushed our chains would not.
func (f *Firewall) replace(cfg Config) error {
	c := f.conn
	c.AddTable(table)
	c.DelTable(table)
	c.AddTable(table)
	v4, v6 := f.peerElements()
	for i, s := range handshakeSets() {
		elems := [][]nftables.SetElement{v4, v6}[i]
		if err := c.AddSet(s, elems); err != nil {
			return fmt.Errorf("firewall: set %s: %w", s.Name, err)
		}
	}
	for _, ch := range chains(cfg) {
		ch.chain.Table = table
		c.AddChain(ch.chain)
		for _, exprs := range ch.rules {
			c.AddRule(&nftables.Rule{Table: table, Chain: ch.chain, Exprs: exprs})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall: install table inet %s: %w%s", TableName, err, hint(err))
	}
	return nil
}

// Close deletes the table. It is safe to call more than once.
func (f *Firewall) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	defer f.conn.CloseLasting()
	// Adding first makes the delete succeed when the table is gone already.
	f.conn.AddTable(table)
	f.conn.DelTable(table)
	if err := f.conn.Flush(); err != nil {
		return fmt.Errorf("firewall: delete table inet %s: %w", TableName, err)
	}
	return nil
}

// hint explains the errors a host without the needed privileges or
// kernel support produces.
func hint(err error) string {
	switch {
	case errors.Is(err, os.ErrPermission):
		return " (needs root or CAP_NET_ADMIN)"
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOENT), errors.Is(err, unix.EAFNOSUPPORT):
		return " (does the kernel have nf_tables with the nat, masq, ct, rt and exthdr expressions? modprobe nft_chain_nat nft_masq nft_ct nft_rt nft_exthdr)"
	}
	return ""
}

// sortedPorts returns ports without duplicates or zero, in order.
func sortedPorts(ports []uint16) []uint16 {
	out := slices.DeleteFunc(slices.Clone(ports), func(p uint16) bool { return p == 0 })
	slices.Sort(out)
	return slices.Compact(out)
}
