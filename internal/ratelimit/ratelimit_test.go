package ratelimit

import (
	"net/netip"
	"sync"
	"testing"
	"time"
)

func TestSource(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "192.0.2.7"},
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::"},
		{"2001:db8:1:2::1", "2001:db8:1:2::"},
		{"2001:db8:1:3::1", "2001:db8:1:3::"},
	} {
		if got := Source(netip.MustParseAddr(c.in)); got != netip.MustParseAddr(c.want) {
			t.Errorf("Source(%s) = %s, want %s", c.in, got, c.want)
		}
	}
}

func TestBurstThenRate(t *testing.T) {
	k := NewKeyed(10, 5, 100) // 10/s, burst 5
	a := netip.MustParseAddr("192.0.2.1")
	now := time.Unix(1000, 0)
	for i := range 5 {
		if !k.Allow(a, now) {
			t.Fatalf("event %d of the burst refused", i)
		}
	}
	if k.Allow(a, now) {
		t.Fatal("sixth event at once allowed")
	}
	if !k.Allow(a, now.Add(100*time.Millisecond)) {
		t.Fatal("refilled event refused after 1/rate")
	}
	if k.Allow(a, now.Add(150*time.Millisecond)) {
		t.Fatal("event allowed before the next refill")
	}
	// Another key has its own budget.
	if !k.Allow(netip.MustParseAddr("192.0.2.2"), now) {
		t.Fatal("a second key shares the first one's budget")
	}
	// A long pause refills to the burst, not beyond.
	later := now.Add(time.Hour)
	n := 0
	for k.Allow(a, later) {
		n++
	}
	if n != 5 {
		t.Fatalf("after an hour %d events at once, want the burst (5)", n)
	}
}

// TestSlash64SharesBudget: every address of one IPv6 /64 draws on one
// budget when keyed by Source (the flood of issue 9 used fresh addresses).
func TestSlash64SharesBudget(t *testing.T) {
	k := NewKeyed(1, 3, 100)
	now := time.Unix(1000, 0)
	allowed := 0
	for i := range 1000 {
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, byte(i >> 8), byte(i)})
		if k.Allow(Source(a), now) {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("1000 addresses of one /64 got %d events, want the burst of one key (3)", allowed)
	}
	if k.Len() != 1 {
		t.Fatalf("table holds %d keys for one /64", k.Len())
	}
}

func TestTableBounded(t *testing.T) {
	k := NewKeyed(1, 1, 64)
	now := time.Unix(1000, 0)
	for i := range 10000 {
		k.Allow(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), now)
	}
	if k.Len() > 64 {
		t.Fatalf("table grew to %d keys, bound 64", k.Len())
	}
	// New keys are refused while the table is full of busy keys...
	if k.Allow(netip.MustParseAddr("192.0.2.200"), now) {
		t.Fatal("a new key was admitted into a table full of busy keys")
	}
	// ...and admitted once the old ones are idle again.
	if !k.Allow(netip.MustParseAddr("192.0.2.200"), now.Add(2*time.Second)) {
		t.Fatal("a new key was refused after the table's keys went idle")
	}
	if k.Len() != 1 {
		t.Fatalf("sweep left %d keys, want only the new one", k.Len())
	}
}

func TestConcurrent(t *testing.T) {
	k := NewKeyed(1000, 10, 128)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			now := time.Unix(1000, 0)
			for i := range 5000 {
				k.Allow(netip.AddrFrom4([4]byte{10, byte(g), 0, byte(i)}), now.Add(time.Duration(i)*time.Microsecond))
			}
		}()
	}
	wg.Wait()
	if k.Len() > 128 {
		t.Fatalf("table grew to %d keys", k.Len())
	}
}

func TestOpenWhenFull(t *testing.T) {
	k := NewKeyedOpen[netip.AddrPort](1, 1, 4)
	now := time.Unix(1000, 0)
	for i := range 4 {
		k.Allow(netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), uint16(i)), now)
	}
	if !k.Allow(netip.MustParseAddrPort("192.0.2.9:1"), now) {
		t.Fatal("a new key was refused by a full table that lets newcomers through")
	}
	if k.Len() != 4 {
		t.Fatalf("the newcomer was tracked: %d keys", k.Len())
	}
	// Tracked keys are still limited.
	if k.Allow(netip.MustParseAddrPort("192.0.2.1:0"), now) {
		t.Fatal("a tracked key over its budget was allowed")
	}
}
