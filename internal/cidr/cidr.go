// Package cidr is prefix arithmetic that netip lacks: what is left of a
// prefix once others are taken out of it. It is pure.
package cidr

import "net/netip"

// Subtract returns p without the holes, as few prefixes as splitting p in
// halves gives, in address order. Holes of the other family, or that do
// not overlap p, are ignored; a hole that contains p leaves nothing.
func Subtract(p netip.Prefix, holes []netip.Prefix) []netip.Prefix {
	overlap := false
	for _, h := range holes {
		if h.Addr().BitLen() != p.Addr().BitLen() || !h.Overlaps(p) {
			continue
		}
		if h.Bits() <= p.Bits() {
			return nil // p lies inside a hole
		}
		overlap = true
	}
	if !overlap {
		return []netip.Prefix{p}
	}
	lo, hi := halves(p)
	return append(Subtract(lo, holes), Subtract(hi, holes)...)
}

// halves splits p into its two halves.
func halves(p netip.Prefix) (netip.Prefix, netip.Prefix) {
	bits := p.Bits() + 1
	lo := netip.PrefixFrom(p.Addr(), bits)
	b := p.Addr().AsSlice()
	i := p.Bits() / 8
	b[i] |= 0x80 >> (p.Bits() % 8)
	a, _ := netip.AddrFromSlice(b)
	return lo, netip.PrefixFrom(a, bits)
}
