package node

import (
	"net/netip"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/tomoe-net/tomoe/internal/node/peers"
)

// TestWildcardRateRefusalEvictsNobody: a newcomer over the rate of new
// wildcard peers is refused before the quota makes room for it, so a
// flood above the rate cannot push out, one per initiation, the peers
// still in their first handshake (the rate bounds those evictions too).
func TestWildcardRateRefusalEvictsNobody(t *testing.T) {
	alice := prepare(t, "alice")
	alice.start(t, allowDoc("*", "tcp", "7"))
	alice.peers.Lock()
	alice.peers.SetLimits(peers.Limits{MaxWildcard: 2, MaxWildcardPerSource: 2, WildcardRate: rate.Every(time.Hour), WildcardBurst: 2})
	alice.peers.Unlock()
	src := netip.MustParseAddrPort("192.0.2.1:4610")
	first, second := newKey(t).Public(), newKey(t).Public()
	if !alice.Admit(first, src, netip.MustParseAddr("192.0.2.1")) || !alice.Admit(second, src, netip.MustParseAddr("192.0.2.2")) {
		t.Fatal("the burst's two wildcard peers were refused")
	}
	// The quota is full of peers that never answered, and the rate has
	// no token left: the newcomer is refused, and nobody makes room.
	if alice.Admit(newKey(t).Public(), src, netip.MustParseAddr("192.0.2.3")) {
		t.Fatal("a newcomer over the rate was admitted")
	}
	alice.peers.Lock()
	defer alice.peers.Unlock()
	if alice.peers.Get(first) == nil || alice.peers.Get(second) == nil {
		t.Fatalf("a newcomer refused for the rate evicted an unanswered peer (first kept %v, second kept %v)",
			alice.peers.Get(first) != nil, alice.peers.Get(second) != nil)
	}
}
