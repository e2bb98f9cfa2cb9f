package e2e

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/tomoe-net/tomoe/internal/testnet"
)

// countUDPInto installs in ns a counter of UDP packets to port leaving
// through interface ifname, and returns a function that reads it.
func countUDPInto(t *testing.T, ns *testnet.Netns, ifname string, port uint16) func() uint64 {
	t.Helper()
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: "probe"}
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, ifname)
	var err error
	var chain *nftables.Chain
	ns.Do(func() {
		c, cerr := nftables.New()
		if cerr != nil {
			err = cerr
			return
		}
		c.AddTable(table)
		chain = c.AddChain(&nftables.Chain{Name: "out", Table: table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter})
		c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
			&expr.Counter{},
		}})
		err = c.Flush()
	})
	if err != nil {
		t.Fatalf("nftables counter in %s: %v", ns.Name, err)
	}
	return func() uint64 {
		var packets uint64
		ns.Do(func() {
			c, cerr := nftables.New()
			if cerr != nil {
				err = cerr
				return
			}
			rules, rerr := c.GetRules(table, chain)
			if rerr != nil {
				err = rerr
				return
			}
			for _, r := range rules {
				for _, e := range r.Exprs {
					if ctr, ok := e.(*expr.Counter); ok {
						packets += ctr.Packets
					}
				}
			}
		})
		if err != nil {
			t.Fatalf("read the nftables counter in %s: %v", ns.Name, err)
		}
		return packets
	}
}

// With an exit route installed, a kernel-mode node still looks up its
// peers' endpoint names outside the tunnel: the DNS server here is
// reachable only through the host's main default route, which the exit
// route overrides for everything but tomoe's marked sockets, and the exit
// node itself cannot reach it.
func TestEndpointLookupBypassesExitRoute(t *testing.T) {
	parallel(t, 10*time.Second)
	testnet.RequireRoot(t)
	lan := testnet.NewLAN(t, "c", "exit", "p", "dns")
	cH, dnsH := lan.Hosts["c"], lan.Hosts["dns"]
	dnsAddr := netip.MustParseAddr("198.51.100.53")
	dnsH.Run("ip", "addr", "add", dnsAddr.String()+"/32", "dev", "lo")
	cH.Run("ip", "route", "add", "default", "via", dnsH.IPv4.String())
	var pc net.PacketConn
	var err error
	dnsH.Do(func() { pc, err = net.ListenPacket("udp", netip.AddrPortFrom(dnsAddr, 53).String()) })
	if err != nil {
		t.Fatal(err)
	}
	dns := testnet.ServeDNS(t, pc, map[string]netip.Addr{"p.tomoe.test.": lan.Hosts["p"].IPv4})
	resolvConf(t, cH.Netns, dnsAddr.String())

	c := &kernelNode{nodeDir: newNodeDir(t, "c"), host: cH}
	exit := &kernelNode{nodeDir: newNodeDir(t, "exit"), host: lan.Hosts["exit"]}
	p := &kernelNode{nodeDir: newNodeDir(t, "p"), host: lan.Hosts["p"]}
	exit.body = offerBlock("0.0.0.0/0", true) + allowBlock(c.addr(), "tcp", "7")
	p.body = allowBlock(c.addr(), "tcp", "7")
	c.tun = "ipv4 = \"10.99.0.2\"\n"
	c.body = peerBlock(exit.nodeDir, exit.endpoint()) + peerBlock(p.nodeDir, "p.tomoe.test:4610") + acceptBlock(exit.addr(), "0.0.0.0/0")
	for _, k := range []*kernelNode{exit, p, c} {
		k.start(t)
		k.listenTCP(t, 7)
	}
	talk := func(to *kernelNode) error {
		conn, err := c.dialTCP(to.addr(), 7, 10*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		return testnet.RoundTrip(conn, "hello "+to.name, 5*time.Second)
	}
	// A session with the exit node brings its offer.
	if err := talk(exit); err != nil {
		t.Fatalf("c -> exit:7: %v", err)
	}
	testnet.WaitFor(t, 15*time.Second, "c to install the exit route", func() bool { return tableHas(cH.Netns, "-4", "default") })
	if out := cH.Run("ip", "route", "get", dnsAddr.String()); !strings.Contains(out, "dev tomoe0") {
		t.Fatalf("setup: unmarked packets to the DNS server do not take the exit route:\n%s", out)
	}
	if out := cH.Run("ip", "route", "get", dnsAddr.String(), "mark", fmt.Sprintf("%#x", 0x4610)); !strings.Contains(out, "dev eth0") {
		t.Fatalf("setup: marked packets to the DNS server do not take the main table's route:\n%s", out)
	}
	intoTUN := countUDPInto(t, cH.Netns, "tomoe0", 53)

	// Reaching p makes c look up p's endpoint name.
	if err := talk(p); err != nil {
		t.Errorf("c -> p:7 (endpoint p.tomoe.test): %v", err)
	}
	if n := intoTUN(); n != 0 {
		t.Errorf("%d DNS packets entered tomoe0 (the exit route)", n)
	}
	from := dns.Sources()
	if len(from) == 0 {
		t.Error("the DNS server got no query")
	}
	for _, a := range from {
		if a != cH.IPv4 {
			t.Errorf("the DNS server got a query from %s, want c's own %s", a, cH.IPv4)
		}
	}
}
