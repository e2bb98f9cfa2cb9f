package node

import (
	"fmt"
	"net/netip"
	"testing"

	"golang.org/x/time/rate"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// BenchmarkAdmitAndForget measures one admission of a key that only "*"
// lets in, and its eviction, with N peers in the device already: the cost
// must not grow with N (issue 9: it used to recount and recompute over
// every peer).
func BenchmarkAdmitAndForget(b *testing.B) {
	for _, n := range []int{100, 8000} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			q := maxWildcardPeers
			maxWildcardPeers = n + 10
			defer func() { maxWildcardPeers = q }()
			t := &testing.T{}
			tn := prepare(t, "bench")
			tn.start(t, allowDoc("*", "any", ""))
			defer tn.Close()
			tn.peers.Lock()
			l := tn.peers.Limits()
			l.WildcardRate, l.WildcardBurst = rate.Inf, 1
			tn.peers.SetLimits(l)
			tn.peers.Unlock()
			keys := make([]identity.PublicKey, n+b.N)
			for i := range keys {
				keys[i] = identity.PrivateKeyFromBytes([32]byte{byte(i), byte(i >> 8), byte(i >> 16), byte(i >> 24), 1}).Public()
			}
			src := netip.MustParseAddrPort("192.0.2.1:4610")
			for _, k := range keys[:n] {
				if !tn.Admit(k, netip.AddrPort{}, netip.AddrFrom4([4]byte{10, 0, byte(len(k) >> 8), k[0]})) {
					b.Fatal("setup admission refused")
				}
			}
			b.ResetTimer()
			for i := range b.N {
				k := keys[n+i]
				if !tn.Admit(k, src, src.Addr()) {
					b.Fatal("admission refused")
				}
				tn.peers.Lock()
				tn.forgetLocked(tn.peers.Get(k), "bench")
				tn.peers.Unlock()
			}
		})
	}
}
