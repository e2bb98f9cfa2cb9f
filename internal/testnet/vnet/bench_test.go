package vnet

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"

	"golang.zx2c4.com/wireguard/conn"
)

// benchPath is a sender Bind and a receiver Bind, and how to reach the
// receiver.
type benchPath struct {
	send *Bind
	to   conn.Endpoint
	recv conn.ReceiveFunc
}

func openBind(b *testing.B, h *Host, port uint16) (*Bind, conn.ReceiveFunc) {
	bind := h.NewBind()
	fns, _, err := bind.Open(port)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { bind.Close() })
	return bind, fns[0]
}

// newBenchPath builds the path kind in w: "lan" (two hosts on one
// network), "nat" (a host behind a NAT to a public one) or "nat-nat" (two
// hosts behind NATs of their own, after a punch).
func newBenchPath(b *testing.B, w *World, kind string, i int) benchPath {
	internet := w.networks["internet"]
	if internet == nil {
		internet = must(w.NewNetwork("internet", netip.MustParsePrefix("100.64.0.0/10")))
	}
	site := func(name string) *Host {
		lan := must(w.NewNetwork(name+"-lan", netip.MustParsePrefix("10.0.0.0/24")))
		must(w.NewNAT(name+"-nat", lan, internet, NATConfig{}))
		return must(lan.AddHost(name))
	}
	var from, to *Host
	switch kind {
	case "lan":
		lan := must(w.NewNetwork(fmt.Sprint("lan", i), netip.MustParsePrefix("10.0.0.0/24")))
		from, to = must(lan.AddHost(fmt.Sprint("a", i))), must(lan.AddHost(fmt.Sprint("b", i)))
	case "nat":
		from, to = site(fmt.Sprint("a", i)), must(internet.AddHost(fmt.Sprint("b", i)))
	case "nat-nat":
		from, to = site(fmt.Sprint("a", i)), site(fmt.Sprint("b", i))
	}
	sb, _ := openBind(b, from, 4610)
	rb, recv := openBind(b, to, 4610)
	toEP := &conn.StdNetEndpoint{AddrPort: netip.AddrPortFrom(to.Addr(), 4610)}
	if kind == "nat-nat" {
		// Both send once to the other's public mapping (the ports are
		// kept): the second opens the way for the first.
		fromPub := w.nats[from.Name()+"-nat"].Public()
		toEP.AddrPort = netip.AddrPortFrom(w.nats[to.Name()+"-nat"].Public(), 4610)
		sb.Send([][]byte{{0}}, toEP)
		rb.Send([][]byte{{0}}, &conn.StdNetEndpoint{AddrPort: netip.AddrPortFrom(fromPub, 4610)})
	}
	return benchPath{send: sb, to: toEP, recv: recv}
}

const benchBatch = 16

// run sends n packets of size bytes along p in batches, receiving each
// batch on the same goroutine: the cost of the path itself, without
// scheduling.
func (p benchPath) run(b *testing.B, n, size int) {
	bufs := make([][]byte, benchBatch)
	rbufs := make([][]byte, benchBatch)
	for i := range bufs {
		bufs[i] = make([]byte, size)
		rbufs[i] = make([]byte, 2048)
	}
	sizes, eps := make([]int, benchBatch), make([]conn.Endpoint, benchBatch)
	for sent := 0; sent < n; sent += benchBatch {
		k := min(benchBatch, n-sent)
		if err := p.send.Send(bufs[:k], p.to); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < k; {
			m, err := p.recv(rbufs, sizes, eps)
			if err != nil {
				b.Fatal(err)
			}
			got += m
		}
	}
}

// BenchmarkPath is the cost of one 1400-byte datagram from Bind to Bind:
// ns/op is per packet.
func BenchmarkPath(b *testing.B) {
	for _, kind := range []string{"lan", "nat", "nat-nat"} {
		b.Run(kind, func(b *testing.B) {
			w := New(Config{SocketQueue: 4 * benchBatch})
			defer w.Close()
			p := newBenchPath(b, w, kind, 0)
			p.run(b, 1000, 1400) // warm the pools and the NAT
			before := w.Stats()
			b.ReportAllocs()
			b.SetBytes(1400)
			b.ResetTimer()
			p.run(b, b.N, 1400)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
			if st := w.Stats(); st != before {
				b.Fatalf("drops: %+v, before the timed run %+v", st, before)
			}
		})
	}
}

// BenchmarkPathParallel runs 64 paths at once, one goroutine each, as
// many nodes of a simulation would: it shows whether the switch
// serialises them. ns/op is per packet over all goroutines.
func BenchmarkPathParallel(b *testing.B) {
	const paths = 64
	for _, kind := range []string{"lan", "nat", "nat-nat"} {
		b.Run(kind, func(b *testing.B) {
			w := New(Config{SocketQueue: 4 * benchBatch})
			defer w.Close()
			ps := make([]benchPath, paths)
			for i := range ps {
				ps[i] = newBenchPath(b, w, kind, i)
				ps[i].run(b, 100, 1400)
			}
			b.ReportAllocs()
			b.SetBytes(1400)
			b.ResetTimer()
			var wg sync.WaitGroup
			for i, p := range ps {
				n := b.N / paths
				if i < b.N%paths {
					n++
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					p.run(b, n, 1400)
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
		})
	}
}
