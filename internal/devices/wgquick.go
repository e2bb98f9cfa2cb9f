package devices

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// Profile is what a device's wg-quick configuration says: the device's
// own key and address, and its home node as its one peer.
type Profile struct {
	// Name is the device's name, written as a comment.
	Name       string
	PrivateKey identity.PrivateKey
	// MTU is the home node's TUN MTU (0: left to the app): the home
	// forwards the device's packets into its own tunnels.
	MTU int
	// DNS servers for the device; empty: no DNS line (the app keeps the
	// system's resolver).
	DNS []netip.Addr
	// Home is the home node's public key and Endpoint ("host:port") where
	// the device reaches it.
	Home     identity.PublicKey
	Endpoint string
	// AllowedIPs are what the device sends to its home: the overlay
	// (fc00::/8) and the routes the home accepted.
	AllowedIPs []netip.Prefix
	// Keepalive in seconds: a phone behind NAT keeps its path open.
	Keepalive int
}

// DefaultKeepalive is PersistentKeepalive of a device's profile.
const DefaultKeepalive = 25

// WGQuick renders p as a wg-quick configuration file (the format the
// WireGuard apps import, by file or QR code).
func (p Profile) WGQuick() string {
	var b strings.Builder
	if p.Name != "" {
		fmt.Fprintf(&b, "# tomoe device %s: its address is derived from its key\n", p.Name)
	}
	b.WriteString("[Interface]\n")
	fmt.Fprintf(&b, "PrivateKey = %s\n", p.PrivateKey.Base64())
	fmt.Fprintf(&b, "Address = %s\n", netip.PrefixFrom(p.PrivateKey.Public().Address(), 128))
	if p.MTU > 0 {
		fmt.Fprintf(&b, "MTU = %d\n", p.MTU)
	}
	if len(p.DNS) > 0 {
		dns := make([]string, len(p.DNS))
		for i, a := range p.DNS {
			dns[i] = a.String()
		}
		fmt.Fprintf(&b, "DNS = %s\n", strings.Join(dns, ", "))
	}
	b.WriteString("\n[Peer]\n")
	fmt.Fprintf(&b, "PublicKey = %s\n", p.Home)
	fmt.Fprintf(&b, "Endpoint = %s\n", p.Endpoint)
	allowed := make([]string, len(p.AllowedIPs))
	for i, a := range p.AllowedIPs {
		allowed[i] = a.String()
	}
	fmt.Fprintf(&b, "AllowedIPs = %s\n", strings.Join(allowed, ", "))
	if p.Keepalive > 0 {
		fmt.Fprintf(&b, "PersistentKeepalive = %d\n", p.Keepalive)
	}
	return b.String()
}
