package peers

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/tomoe-net/tomoe/internal/identity"
)

func key(i int) identity.PublicKey {
	return identity.PrivateKeyFromBytes([32]byte{1: byte(i), 2: byte(i >> 8), 3: byte(i >> 16), 4: 7}).Public()
}

func newPeer(i int, static bool) *Peer {
	k := key(i)
	return &Peer{Key: k, Addr: k.Address(), Static: static, Site: static}
}

// TestIndexes: a peer is found by each index while it is in the table and
// by none after Remove, which queues its key once.
func TestIndexes(t *testing.T) {
	tb := New(Limits{})
	tb.Lock()
	defer tb.Unlock()
	s := newPeer(1, true)
	s.Endpoint = netip.MustParseAddrPort("192.0.2.1:4610")
	d := newPeer(2, false)
	tb.Insert(s)
	tb.Insert(d)
	if tb.Get(s.Key) != s || tb.ByAddr(s.Addr) != s || tb.BySite(s.Key.SitePrefix()) != s || tb.ByEndpoint(s.Endpoint) != s {
		t.Fatal("a static peer is not found by every index")
	}
	if tb.Get(d.Key) != d || tb.ByAddr(d.Addr) != d || tb.BySite(d.Key.SitePrefix()) != nil {
		t.Fatal("a dynamic peer without its site prefix is indexed wrongly")
	}
	if tb.Len() != 2 || tb.Dynamic() != 1 {
		t.Fatalf("len %d dynamic %d, want 2 and 1", tb.Len(), tb.Dynamic())
	}
	moved := netip.MustParseAddrPort("192.0.2.9:4610")
	tb.SetEndpoint(s, moved)
	if tb.ByEndpoint(moved) != s || tb.ByEndpoint(netip.MustParseAddrPort("192.0.2.1:4610")) != nil {
		t.Fatal("SetEndpoint did not reindex the static peer")
	}
	tb.Remove(d)
	tb.Remove(d) // twice: no effect
	if tb.Get(d.Key) != nil || tb.ByAddr(d.Addr) != nil || tb.Dynamic() != 0 || tb.Len() != 1 {
		t.Fatal("a removed peer is still indexed or counted")
	}
	select {
	case <-tb.Forgotten():
	default:
		t.Fatal("Remove did not signal")
	}
	if f := tb.TakeForgotten(); len(f) != 1 || f[0] != d.Key {
		t.Fatalf("forgotten %v, want [%v]", f, d.Key)
	}
	if f := tb.TakeForgotten(); len(f) != 0 {
		t.Fatalf("forgotten again: %v", f)
	}
	n := 0
	for p := range tb.All() {
		if p != s {
			t.Fatalf("All yields %v", p.Key)
		}
		n++
	}
	if n != 1 {
		t.Fatalf("All yields %d peers", n)
	}
}

// TestWildcardQuota: the quota's four refusals, room made by removing the
// oldest unanswered peer, and the per-source count following Mark, Unmark
// and Remove.
func TestWildcardQuota(t *testing.T) {
	now := time.Unix(1000, 0)
	src := netip.MustParseAddr("198.51.100.1")
	other := netip.MustParseAddr("198.51.100.2")
	tb := New(Limits{MaxWildcard: 3, MaxWildcardPerSource: 2, WildcardRate: rate.Every(time.Second), WildcardBurst: 10, MaxDynamic: 100})
	tb.Lock()
	defer tb.Unlock()
	var ps []*Peer
	add := func(i int, from netip.Addr) *Peer {
		t.Helper()
		if why := tb.AdmitWildcard(from, now); why != "" {
			t.Fatalf("peer %d refused: %s", i, why)
		}
		p := newPeer(i, false)
		tb.Insert(p)
		tb.Mark(p, from)
		ps = append(ps, p)
		return p
	}
	add(1, src)
	add(2, src)
	if why := tb.AdmitWildcard(src, now); why != RefusedSource {
		t.Fatalf("a third peer from one source: %q, want %q", why, RefusedSource)
	}
	add(3, other)
	if why := tb.AdmitWildcard(netip.MustParseAddr("198.51.100.3"), now); why != RefusedQuotaFull {
		t.Fatalf("a fourth peer: %q, want %q", why, RefusedQuotaFull)
	}
	if tb.WildcardCount() != 3 || tb.WildcardFrom(src) != 2 {
		t.Fatalf("count %d from src %d", tb.WildcardCount(), tb.WildcardFrom(src))
	}
	// Peer 1 answered: the oldest unanswered is peer 2.
	tb.Answered(ps[0])
	if u := tb.Unanswered(); u != ps[1] {
		t.Fatalf("oldest unanswered is %v, want peer 2", u)
	}
	tb.Remove(ps[1])
	if tb.WildcardCount() != 2 || tb.WildcardFrom(src) != 1 || tb.Unanswered() != ps[2] {
		t.Fatal("Remove did not give back the quota")
	}
	// The node wants peer 3 now.
	tb.Unmark(ps[2])
	if ps[2].Wildcard() || tb.WildcardFrom(other) != 0 || tb.Unanswered() != nil {
		t.Fatal("Unmark did not take the peer out of the quota")
	}
	// The rate: ten in a burst, then one a second.
	tb.SetLimits(Limits{MaxWildcard: 100, MaxWildcardPerSource: 100, WildcardRate: rate.Every(time.Second), WildcardBurst: 2, MaxDynamic: 100})
	for i := range 2 {
		if why := tb.AdmitWildcard(netip.Addr{}, now); why != "" {
			t.Fatalf("burst %d refused: %s", i, why)
		}
	}
	if why := tb.AdmitWildcard(netip.Addr{}, now); why != RefusedRate {
		t.Fatalf("over the rate: %q, want %q", why, RefusedRate)
	}
	if why := tb.AdmitWildcard(netip.Addr{}, now.Add(time.Second)); why != "" {
		t.Fatalf("a second later: %q", why)
	}
	// Dynamic peers over the limit refuse everything.
	tb.SetLimits(Limits{MaxDynamic: tb.Dynamic()})
	if why := tb.AdmitWildcard(netip.Addr{}, now.Add(time.Hour)); why != RefusedDynamic {
		t.Fatalf("dynamic full: %q, want %q", why, RefusedDynamic)
	}
}

// TestReportDenial: once a minute per key, and a bounded rate over all
// keys however many there are.
func TestReportDenial(t *testing.T) {
	tb := New(Limits{})
	tb.Lock()
	defer tb.Unlock()
	now := time.Unix(1000, 0)
	if !tb.ReportDenial(key(1), now) || tb.ReportDenial(key(1), now.Add(time.Second)) {
		t.Fatal("one key is reported more than once a minute")
	}
	if !tb.ReportDenial(key(1), now.Add(deniedEvery+time.Second)) {
		t.Fatal("one key is not reported again after a minute")
	}
	later := now.Add(time.Hour)
	reported := 0
	for i := range 1000 {
		if tb.ReportDenial(key(100+i), later) {
			reported++
		}
	}
	if reported != deniedLogBurst {
		t.Fatalf("%d reports at one instant from 1000 keys, want the burst %d", reported, deniedLogBurst)
	}
}

// BenchmarkInsertRemove: the table's cost does not grow with its size.
func BenchmarkInsertRemove(b *testing.B) {
	for _, size := range []int{100, 10000} {
		b.Run("peers="+strconv.Itoa(size), func(b *testing.B) {
			tb := New(Limits{MaxWildcard: size + 10, MaxWildcardPerSource: size + 10, WildcardRate: rate.Inf, MaxDynamic: size + 10})
			tb.Lock()
			defer tb.Unlock()
			for i := range size {
				p := newPeer(i, false)
				tb.Insert(p)
				tb.Mark(p, netip.Addr{})
			}
			extra := newPeer(size+1, false)
			b.ResetTimer()
			for range b.N {
				tb.AdmitWildcard(netip.Addr{}, time.Time{})
				tb.Insert(extra)
				tb.Mark(extra, netip.Addr{})
				tb.Remove(extra)
				tb.TakeForgotten()
			}
		})
	}
}

// TestWildcardRateBeforeQuota: with the quota full and the rate spent, a
// newcomer is refused for the rate, so the caller makes no room for it;
// with a token left, the full quota is reported (the token spent).
func TestWildcardRateBeforeQuota(t *testing.T) {
	now := time.Unix(1000, 0)
	tb := New(Limits{MaxWildcard: 1, MaxWildcardPerSource: 10, WildcardRate: rate.Every(time.Hour), WildcardBurst: 2, MaxDynamic: 100})
	tb.Lock()
	defer tb.Unlock()
	if why := tb.AdmitWildcard(netip.Addr{}, now); why != "" {
		t.Fatalf("first: %q", why)
	}
	p := newPeer(1, false)
	tb.Insert(p)
	tb.Mark(p, netip.Addr{})
	if why := tb.AdmitWildcard(netip.Addr{}, now); why != RefusedQuotaFull {
		t.Fatalf("quota full, a token left: %q, want %q", why, RefusedQuotaFull)
	}
	if why := tb.AdmitWildcard(netip.Addr{}, now); why != RefusedRate {
		t.Fatalf("quota full, rate spent: %q, want %q", why, RefusedRate)
	}
}
