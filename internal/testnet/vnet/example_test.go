package vnet_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/tomoe-net/tomoe/internal/testnet/vnet"
)

// Two sites behind NATs and a public bridge host, as the NAT lab builds
// them: one site's NAT is endpoint-independent, the other's symmetric,
// and a third blocks UDP and reaches the bridge over TCP.
func Example() {
	w := vnet.New(vnet.Config{Seed: 1})
	defer w.Close()
	internet, _ := w.NewNetwork("internet", netip.MustParsePrefix("203.0.113.0/24"))
	bridge, _ := internet.AddHost("bridge") // 203.0.113.1

	site := func(name string, n byte, cfg vnet.NATConfig) *vnet.Host {
		lan, _ := w.NewNetwork(name+"-lan", netip.PrefixFrom(netip.AddrFrom4([4]byte{10, n, 0, 0}), 24))
		cfg.Public = netip.AddrFrom4([4]byte{203, 0, 113, 10 + n})
		w.NewNAT(name+"-rt", lan, internet, cfg) // gateway 10.n.0.1
		h, _ := lan.AddHost(name)                // 10.n.0.2
		h.Link().Set(vnet.LinkConfig{Delay: 5 * time.Millisecond, Loss: 0})
		return h
	}
	eim := site("eim", 1, vnet.NATConfig{})
	sym := site("sym", 2, vnet.NATConfig{Mapping: vnet.AddressAndPortDependentMapping, Ports: vnet.RandomPorts})
	noudp := site("noudp", 3, vnet.NATConfig{BlockUDP: true})

	// The bridge's UDP socket; a tomoe node would use bridge.NewBind()
	// as the inner conn.Bind of its transport.
	srv, _ := bridge.ListenUDP(4610)
	for _, h := range []*vnet.Host{eim, sym} {
		c, _ := h.ListenUDP(4610)
		c.WriteToUDPAddrPort([]byte("register"), srv.LocalAddrPort())
		buf := make([]byte, 64)
		_, from, _ := srv.ReadFromUDPAddrPort(buf)
		fmt.Printf("%s (%s) seen by the bridge from %s\n", h.Name(), h.Addr(), from.Addr())
	}

	// TCP from the UDP-blocked site.
	ln, _ := bridge.Listen("tcp", ":4610")
	c, err := noudp.Dial(context.Background(), "tcp", "203.0.113.1:4610")
	if err != nil {
		fmt.Println(err)
		return
	}
	s, _ := ln.Accept()
	fmt.Println("noudp over TCP, seen from", s.RemoteAddr().(*net.TCPAddr).IP)
	c.Close()
	s.Close()

	// Cut the direct path between the sites, or move a NAT.
	w.NAT("eim-rt").BlockUDPTo(netip.MustParseAddr("203.0.113.12"))
	w.NAT("eim-rt").SetPublicAddr(netip.MustParseAddr("203.0.113.51"))
	// Output:
	// eim (10.1.0.2) seen by the bridge from 203.0.113.11
	// sym (10.2.0.2) seen by the bridge from 203.0.113.12
	// noudp over TCP, seen from 203.0.113.13
}
