//go:build linux

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
