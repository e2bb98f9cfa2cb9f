package vnet

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/clock"
)

// The mapping behaviours, classified as RFC 4787 section 4.1 (and a STUN
// client) would: one inside socket sends to two ports of one server and to
// a second server, and the servers compare what they see.
func TestNATMapping(t *testing.T) {
	for _, tc := range []struct {
		mapping                 Mapping
		samePortOtherServerPort bool // s1:7000 and s1:7001 see one mapping
		sameOtherServer         bool // s1 and s2 see one mapping
	}{
		{EndpointIndependentMapping, true, true},
		{AddressDependentMapping, true, false},
		{AddressAndPortDependentMapping, false, false},
	} {
		t.Run(tc.mapping.String(), func(t *testing.T) {
			s := newSite(t, newWorld(t, Config{}), NATConfig{Mapping: tc.mapping})
			a := udp(t, s.a, 5000)
			s1a, s1b, s2 := udp(t, s.s1, 7000), udp(t, s.s1, 7001), udp(t, s.s2, 7000)
			o1, o1b, o2 := observed(t, a, s1a), observed(t, a, s1b), observed(t, a, s2)
			if o1.Addr() != s.nat.Public() {
				t.Fatalf("s1 saw %v, want the NAT's public address %v", o1, s.nat.Public())
			}
			if o1.Port() != 5000 {
				t.Errorf("first mapping %v: the inside port 5000 was free and should be kept", o1)
			}
			if got := o1 == o1b; got != tc.samePortOtherServerPort {
				t.Errorf("s1:7000 saw %v, s1:7001 saw %v: same = %v, want %v", o1, o1b, got, tc.samePortOtherServerPort)
			}
			if got := o1 == o2; got != tc.sameOtherServer {
				t.Errorf("s1 saw %v, s2 saw %v: same = %v, want %v", o1, o2, got, tc.sameOtherServer)
			}
			// Every mapping leads back to the inside socket from where
			// it was made.
			for _, c := range []struct {
				from *UDPConn
				to   netip.AddrPort
			}{{s1a, o1}, {s1b, o1b}, {s2, o2}} {
				if !reaches(t, c.from, c.to, a) {
					t.Errorf("%v -> %v: the reply did not get back in", c.from.LocalAddrPort(), c.to)
				}
			}
		})
	}
}

// The filtering behaviours (RFC 4787 section 5): after the inside socket
// sent to s1:7000, who can reach its mapping?
func TestNATFiltering(t *testing.T) {
	for _, tc := range []struct {
		filtering          Filtering
		samePort, samehost bool // s1:7000 always can
		other              bool // s2
	}{
		{EndpointIndependentFiltering, true, true, true},
		{AddressDependentFiltering, true, true, false},
		{AddressAndPortDependentFiltering, true, false, false},
	} {
		t.Run(tc.filtering.String(), func(t *testing.T) {
			s := newSite(t, newWorld(t, Config{}), NATConfig{Filtering: tc.filtering})
			a := udp(t, s.a, 5000)
			s1a, s1b, s2 := udp(t, s.s1, 7000), udp(t, s.s1, 7001), udp(t, s.s2, 7000)
			m := observed(t, a, s1a)
			if got := reaches(t, s1a, m, a); got != tc.samePort {
				t.Errorf("from s1:7000: %v, want %v", got, tc.samePort)
			}
			if got := reaches(t, s1b, m, a); got != tc.samehost {
				t.Errorf("from s1:7001: %v, want %v", got, tc.samehost)
			}
			if got := reaches(t, s2, m, a); got != tc.other {
				t.Errorf("from s2:7000: %v, want %v", got, tc.other)
			}
			// Nothing gets in where no mapping is, whatever the filter.
			if reaches(t, s1a, netip.AddrPortFrom(m.Addr(), m.Port()+1), a) {
				t.Error("a packet to an unmapped port got in")
			}
			if st := s.w.Stats(); st.NATFiltered == 0 {
				t.Errorf("stats %+v: the unmapped probe should count as NATFiltered", st)
			}
		})
	}
}

func TestNATPortAllocation(t *testing.T) {
	t.Run("preserve", func(t *testing.T) {
		s := newSite(t, newWorld(t, Config{}), NATConfig{})
		srv := udp(t, s.s1, 7000)
		if o := observed(t, udp(t, s.a, 5000), srv); o.Port() != 5000 {
			t.Errorf("a:5000 mapped to %v, want port 5000 kept", o)
		}
		// b's socket on the same port cannot have it too.
		if o := observed(t, udp(t, s.b, 5000), srv); o.Port() != 5001 {
			t.Errorf("b:5000 mapped to %v, want the next free port, 5001", o)
		}
	})
	t.Run("sequential", func(t *testing.T) {
		s := newSite(t, newWorld(t, Config{}), NATConfig{Mapping: AddressAndPortDependentMapping, Ports: SequentialPorts})
		a := udp(t, s.a, 5000)
		for i, srv := range []*UDPConn{udp(t, s.s1, 7000), udp(t, s.s1, 7001), udp(t, s.s2, 7000)} {
			if o := observed(t, a, srv); o.Port() != natFirstPort+uint16(i) {
				t.Errorf("mapping %d: %v, want port %d", i, o, natFirstPort+i)
			}
		}
	})
	t.Run("random, seeded", func(t *testing.T) {
		run := func(seed uint64) []uint16 {
			s := newSite(t, newWorld(t, Config{Seed: seed}), NATConfig{Mapping: AddressAndPortDependentMapping, Ports: RandomPorts})
			a := udp(t, s.a, 5000)
			srv := udp(t, s.s1, 7000)
			var ports []uint16
			for i := range 5 {
				o := observed(t, a, srv)
				ports = append(ports, o.Port())
				// A new remote port: a new mapping.
				srv.Close()
				srv = udp(t, s.s1, 7001+uint16(i))
			}
			return ports
		}
		p1, p2, p3 := run(1), run(1), run(2)
		if !equalPorts(p1, p2) {
			t.Errorf("seed 1 gave %v, then %v", p1, p2)
		}
		if equalPorts(p1, p3) {
			t.Errorf("seeds 1 and 2 both gave %v", p1)
		}
		for _, p := range p1 {
			if p < natFirstPort || p == 5000 {
				t.Errorf("ports %v: %d is not a random port of the range", p1, p)
			}
		}
	})
}

func equalPorts(a, b []uint16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Hairpinning: a and b, behind one NAT, reach each other through the
// public address, and punch through its filtering as two sites would.
func TestNATHairpin(t *testing.T) {
	for _, hairpin := range []bool{true, false} {
		t.Run(map[bool]string{true: "on", false: "off"}[hairpin], func(t *testing.T) {
			s := newSite(t, newWorld(t, Config{}), NATConfig{Hairpin: hairpin})
			a, b := udp(t, s.a, 5000), udp(t, s.b, 6000)
			srv := udp(t, s.s1, 3478)
			ma, mb := observed(t, a, srv), observed(t, b, srv)
			// a's first packet is filtered by b's mapping (b never sent
			// to a's), but opens a's mapping to b's.
			if reaches(t, a, mb, b) {
				t.Fatal("a reached b's mapping before b sent to a's")
			}
			from := ma
			send(t, b, ma, "punch")
			got, msg, ok := poll(a)
			if ok != hairpin {
				t.Fatalf("b -> a's mapping arrived: %v, want %v", ok, hairpin)
			}
			if !hairpin {
				return
			}
			if msg != "punch" || got != mb {
				t.Errorf("a got %q from %v, want \"punch\" from b's mapping %v", msg, got, mb)
			}
			if !reaches(t, a, mb, b) {
				t.Errorf("a (%v) -> b's mapping: lost after both sent", from)
			}
		})
	}
}

// UDP blocked: no datagram passes either way, TCP does.
func TestNATBlockUDP(t *testing.T) {
	s := newSite(t, newWorld(t, Config{}), NATConfig{BlockUDP: true})
	a, srv := udp(t, s.a, 5000), udp(t, s.s1, 7000)
	send(t, a, srv.LocalAddrPort(), "x")
	if _, _, ok := poll(srv); ok {
		t.Fatal("UDP went through a NAT that blocks it")
	}
	ln := must(s.s1.Listen("tcp", ":443"))
	defer ln.Close()
	c, err := s.a.Dial(context.Background(), "tcp", "203.0.113.1:443")
	if err != nil {
		t.Fatalf("TCP through a UDP-blocking NAT: %v", err)
	}
	c.Close()
	if s.w.Stats().Blocked == 0 {
		t.Error("the datagram was not counted as blocked")
	}
}

// BlockUDPTo cuts one remote, established flows included, and can be
// undone (testnet.Site.BlockUDPTo's twin).
func TestNATBlockUDPTo(t *testing.T) {
	s := newSite(t, newWorld(t, Config{}), NATConfig{})
	a, s1, s2 := udp(t, s.a, 5000), udp(t, s.s1, 7000), udp(t, s.s2, 7000)
	m := observed(t, a, s1)
	observed(t, a, s2)
	s.nat.BlockUDPTo(s.s1.Addr())
	if reaches(t, a, s1.LocalAddrPort(), s1) || reaches(t, s1, m, a) {
		t.Fatal("UDP passed to or from a blocked address")
	}
	if !reaches(t, s2, m, a) {
		t.Fatal("blocking s1 cut s2")
	}
	s.nat.UnblockUDPTo(s.s1.Addr())
	if !reaches(t, s1, m, a) {
		t.Fatal("the established flow did not come back after the unblock")
	}
}

// A mapping lives MappingTimeout after its last packet; then its filter
// closes and a new one is made.
func TestNATMappingTimeout(t *testing.T) {
	clk := clock.NewManual(time.Unix(1e9, 0))
	s := newSite(t, newWorld(t, Config{Clock: clk}), NATConfig{Ports: SequentialPorts, MappingTimeout: time.Minute})
	a, srv := udp(t, s.a, 5000), udp(t, s.s1, 7000)
	m := observed(t, a, srv)
	clk.Advance(50 * time.Second)
	if !reaches(t, srv, m, a) { // refreshes it
		t.Fatal("reply lost within the timeout")
	}
	clk.Advance(50 * time.Second)
	if !reaches(t, srv, m, a) {
		t.Fatal("an admitted reply did not refresh the mapping")
	}
	clk.Advance(time.Minute)
	if reaches(t, srv, m, a) {
		t.Fatal("reply got in after the mapping expired")
	}
	if m2 := observed(t, a, srv); m2 == m {
		t.Fatalf("after expiry the socket kept mapping %v; want a new sequential port", m)
	}
	clk.Advance(3 * time.Minute) // a sweep runs: the tables shrink
	send(t, udp(t, s.b, 6000), srv.LocalAddrPort(), "x")
	if n := s.nat.Mappings(); n != 1 {
		t.Errorf("%d mappings after the sweep, want only b's new one", n)
	}
}

// SetPublicAddr forgets every mapping: the remote sees the new address,
// the old mapping leads nowhere.
func TestNATSetPublicAddr(t *testing.T) {
	s := newSite(t, newWorld(t, Config{}), NATConfig{})
	a, srv := udp(t, s.a, 5000), udp(t, s.s1, 7000)
	old := observed(t, a, srv)
	moved := netip.MustParseAddr("203.0.113.51")
	if err := s.nat.SetPublicAddr(moved); err != nil {
		t.Fatal(err)
	}
	if reaches(t, srv, old, a) {
		t.Fatal("the old public address still leads in")
	}
	if o := observed(t, a, srv); o.Addr() != moved {
		t.Fatalf("after the move s1 sees %v, want %v", o, moved)
	}
	if err := s.nat.SetPublicAddr(s.s1.Addr()); err == nil {
		t.Fatal("moved onto a host's address")
	}
}

// The no-input-firewall router: an unsolicited packet to a public port
// makes conntrack remember that flow, and the inside socket's own flow to
// that remote must then leave from another port (Linux masquerade avoids
// the clash of reply tuples).
func TestNATNoInputFirewall(t *testing.T) {
	clk := clock.NewManual(time.Unix(1e9, 0))
	for _, noInput := range []bool{false, true} {
		t.Run(map[bool]string{false: "input firewall", true: "no input firewall"}[noInput], func(t *testing.T) {
			s := newSite(t, newWorld(t, Config{Clock: clk}), NATConfig{NoInputFirewall: noInput})
			a := udp(t, s.a, 4610)
			bridge, peer := udp(t, s.s1, 3478), udp(t, s.s2, 4610)
			m := observed(t, a, bridge) // what the bridge tells the peer
			if reaches(t, peer, m, a) {
				t.Fatal("unsolicited probe got in")
			}
			o := observed(t, a, peer)
			if !noInput {
				if o != m {
					t.Fatalf("a's flow to the peer left from %v, want its mapping %v", o, m)
				}
				if !reaches(t, peer, m, a) {
					t.Fatal("the peer's probe to the mapping did not get in after a sent to it")
				}
				return
			}
			if o == m {
				t.Fatalf("a's flow to the peer left from the clashing port %v", m)
			}
			if reaches(t, peer, m, a) {
				t.Fatal("the peer's probes to the observed mapping got in")
			}
			if !reaches(t, peer, o, a) {
				t.Fatal("the peer could not answer the port a's flow really left from")
			}
			// Others still see the mapping.
			if o3 := observed(t, a, udp(t, s.s3, 9)); o3 != m {
				t.Errorf("a third remote saw %v, want %v", o3, m)
			}
			// Once the unsolicited flow expires, a new remote sending the
			// same way is no longer pushed off the port.
			late := udp(t, s.s2, 4611)
			if reaches(t, late, m, a) {
				t.Fatal("unsolicited probe got in")
			}
			clk.Advance(31 * time.Second)
			observed(t, a, bridge) // keep the mapping alive
			if o := observed(t, a, late); o != m {
				t.Errorf("after the unsolicited flow expired a's flow left from %v, want %v", o, m)
			}
		})
	}
}

// The bug class NoInputFirewall exists for: two sites behind "easy" NATs
// (endpoint-independent mapping) probe the endpoints a bridge observed.
// The first probe reaches the other router before that side has sent;
// with an input firewall the second side's probe opens the way, without
// one it leaves from another port and neither side ever hears the other.
func TestNATEasyPairWithoutInputFirewall(t *testing.T) {
	for _, noInput := range []bool{false, true} {
		t.Run(map[bool]string{false: "input firewall", true: "no input firewall"}[noInput], func(t *testing.T) {
			w := newWorld(t, Config{})
			internet := must(w.NewNetwork("internet", internetPrefix))
			bh := must(internet.AddHost("bridge"))
			mk := func(name string, octet byte) *Host {
				lan := must(w.NewNetwork(name+"-lan", netip.PrefixFrom(netip.AddrFrom4([4]byte{10, octet, 0, 0}), 24)))
				must(w.NewNAT(name+"-nat", lan, internet, NATConfig{NoInputFirewall: noInput}))
				return must(lan.AddHost(name))
			}
			ha, hb := mk("a", 1), mk("b", 2)
			a, b, bridge := udp(t, ha, 4610), udp(t, hb, 4610), udp(t, bh, 4610)
			ea, eb := observed(t, a, bridge), observed(t, b, bridge)
			if ea.Port() != 4610 || eb.Port() != 4610 {
				t.Fatalf("observed %v and %v, want ports kept", ea, eb)
			}
			// a probes first: its probe is filtered at b's router.
			if reaches(t, a, eb, b) {
				t.Fatal("a's first probe got in")
			}
			// Then b, and a again, a few rounds.
			direct := false
			for range 3 {
				if reaches(t, b, ea, a) {
					direct = true
				}
				if reaches(t, a, eb, b) {
					direct = true
				}
			}
			if direct == noInput {
				t.Fatalf("direct = %v, want %v", direct, !noInput)
			}
		})
	}
}

// Packets lose a TTL at each router: a NAT forwarding either way, and the
// hops a network was given. A packet with TTL 1 dies at its own NAT
// before it is mapped; one with TTL 2 opens its NAT's mapping and dies at
// the first router beyond it. That is the opener that saves the easy
// pair above: sent by each side first, it leaves each side's mapping
// ready for the other's probes without reaching the other router. With
// no router between the NATs the opener reaches the far one and spoils
// the hole as a probe would.
func TestTTL(t *testing.T) {
	for _, hops := range []uint8{0, 1} {
		t.Run(fmt.Sprintf("%d hops between the NATs", hops), func(t *testing.T) {
			w := newWorld(t, Config{})
			internet := must(w.NewNetwork("internet", internetPrefix))
			internet.SetHops(hops)
			bh := must(internet.AddHost("bridge"))
			nats := map[string]*NAT{}
			mk := func(name string, octet byte) *Host {
				lan := must(w.NewNetwork(name+"-lan", netip.PrefixFrom(netip.AddrFrom4([4]byte{10, octet, 0, 0}), 24)))
				nats[name] = must(w.NewNAT(name+"-nat", lan, internet, NATConfig{NoInputFirewall: true}))
				return must(lan.AddHost(name))
			}
			ha, hb := mk("a", 1), mk("b", 2)
			a, b, bridge := udp(t, ha, 4610), udp(t, hb, 4610), udp(t, bh, 4610)
			ea, eb := observed(t, a, bridge), observed(t, b, bridge)

			if err := a.s.sendTTL(eb, []byte("ttl 1"), 1); err != nil {
				t.Fatal(err)
			}
			if st := w.Stats(); st.TTLExpired != 1 || nats["a"].Mappings() != 1 {
				t.Fatalf("TTL 1: %d expired, a's NAT holds %d mappings; want 1 and only the bridge's", st.TTLExpired, nats["a"].Mappings())
			}
			for _, c := range []struct {
				from *UDPConn
				to   netip.AddrPort
			}{{a, eb}, {b, ea}} {
				if err := c.from.s.sendTTL(c.to, []byte("opener"), 2); err != nil {
					t.Fatal(err)
				}
			}
			want := uint64(1)
			if hops > 0 {
				want = 3
			}
			if st := w.Stats(); st.TTLExpired != want {
				t.Fatalf("%d packets died of their TTL, want %d", st.TTLExpired, want)
			}
			direct := reaches(t, a, eb, b) && reaches(t, b, ea, a)
			if direct != (hops > 0) {
				t.Fatalf("direct after the openers = %v, want %v", direct, hops > 0)
			}
		})
	}
}
