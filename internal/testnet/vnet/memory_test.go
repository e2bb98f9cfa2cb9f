package vnet

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
)

// TestMemoryCosts measures what the pieces of a 10,000-node simulation
// cost in heap, logs it (go test -v -run Memory) and fails if a piece
// grows far past today's figures.
func TestMemoryCosts(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 10,000 hosts")
	}
	const n = 10000
	heap := func() float64 {
		runtime.GC() // twice: the packet pools' victim caches go in the second
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return float64(m.HeapAlloc)
	}
	w := New(Config{})
	defer w.Close()
	internet := must(w.NewNetwork("internet", netip.MustParsePrefix("100.64.0.0/10")))
	hosts := make([]*Host, n)
	before := heap()
	for i := range hosts {
		hosts[i] = must(internet.AddHost(fmt.Sprint("h", i)))
	}
	host := (heap() - before) / n

	before = heap()
	binds := make([]*Bind, n)
	for i, h := range hosts {
		binds[i] = h.NewBind()
		if _, _, err := binds[i].Open(4610); err != nil {
			t.Fatal(err)
		}
	}
	bind := (heap() - before) / n

	before = heap()
	for i := range n / 10 {
		lan := must(w.NewNetwork(fmt.Sprint("lan", i), netip.MustParsePrefix("10.0.0.0/24")))
		must(w.NewNAT(fmt.Sprint("nat", i), lan, internet, NATConfig{}))
	}
	site := (heap() - before) / (n / 10)

	// One inside socket sending to n remotes through a symmetric NAT: a
	// mapping and a filter entry each.
	lan := must(w.NewNetwork("big", netip.MustParsePrefix("10.0.0.0/24")))
	nat := must(w.NewNAT("bignat", lan, internet, NATConfig{Mapping: AddressAndPortDependentMapping}))
	c := must(must(lan.AddHost("h")).ListenUDP(4610))
	before = heap()
	for i := range n {
		c.WriteToUDPAddrPort([]byte{1}, netip.AddrPortFrom(hosts[0].Addr(), uint16(1+i)))
	}
	if nat.Mappings() != n {
		t.Fatalf("%d mappings, want %d", nat.Mappings(), n)
	}
	mapping := (heap() - before) / n

	t.Logf("heap per host %.0f B, per open Bind %.0f B, per site (network + NAT) %.0f B, per mapping %.0f B", host, bind, site, mapping)
	for _, c := range []struct {
		what       string
		got, limit float64
	}{{"host", host, 2048}, {"bind", bind, 1024}, {"site", site, 4096}, {"mapping", mapping, 1024}} {
		if c.got > c.limit {
			t.Errorf("a %s costs %.0f B, over %.0f", c.what, c.got, c.limit)
		}
	}
}
