package testnet

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	whoamiPort = 3478
	// answerTimeout bounds every wait for a packet that should come.
	answerTimeout = 3 * time.Second
	// silence is how long a packet that should not come is waited for.
	silence = 500 * time.Millisecond
)

// datagram is a packet a udpSocket received.
type datagram struct {
	from netip.AddrPort
	data string
}

// udpSocket is a UDP socket opened inside a namespace, with a goroutine
// delivering what it receives on in.
type udpSocket struct {
	conn *net.UDPConn
	in   chan datagram
}

// listenUDP opens a socket on an ephemeral port of all ns's addresses.
func listenUDP(t *testing.T, ns *Netns) *udpSocket {
	t.Helper()
	var c *net.UDPConn
	var err error
	ns.Do(func() { c, err = net.ListenUDP("udp4", &net.UDPAddr{}) })
	if err != nil {
		t.Fatalf("listen udp in %s: %v", ns.Name, err)
	}
	s := &udpSocket{conn: c, in: make(chan datagram, 256)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			// Drop when nobody reads, as a full socket buffer would.
			select {
			case s.in <- datagram{from: netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), data: string(buf[:n])}:
			default:
			}
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return s
}

func (s *udpSocket) send(t *testing.T, to netip.AddrPort, data string) {
	t.Helper()
	if _, err := s.conn.WriteToUDPAddrPort([]byte(data), to); err != nil {
		t.Fatalf("send to %v: %v", to, err)
	}
}

// heard reports whether data arrives from `from` within d, discarding
// anything else. Packets already queued are looked at even when d is 0.
func (s *udpSocket) heard(from netip.AddrPort, data string, d time.Duration) bool {
	timeout := time.After(d)
	for {
		var dg datagram
		select {
		case dg = <-s.in:
		default:
			select {
			case dg = <-s.in:
			case <-timeout:
				return false
			}
		}
		if dg.from == from && dg.data == data {
			return true
		}
	}
}

// drain empties in and returns the senders of what was in it.
func (s *udpSocket) drain() map[netip.AddrPort]bool {
	from := map[netip.AddrPort]bool{}
	for {
		select {
		case dg := <-s.in:
			from[dg.from] = true
		default:
			return from
		}
	}
}

// serveWhoAmI answers every datagram to h:3478 with its source address as
// h sees it, the way a STUN server tells a client its public endpoint.
func serveWhoAmI(t *testing.T, h *Host) netip.AddrPort {
	t.Helper()
	addr := netip.AddrPortFrom(h.IPv4, whoamiPort)
	var c *net.UDPConn
	var err error
	h.Do(func() { c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(addr)) })
	if err != nil {
		t.Fatalf("whoami server on %v: %v", addr, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			_, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort([]byte(from.String()), from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return addr
}

// whoami asks server for s's public endpoint, resending every 200 ms, and
// reports false if no answer comes within d.
func (s *udpSocket) whoami(t *testing.T, server netip.AddrPort, d time.Duration) (netip.AddrPort, bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		s.send(t, server, "whoami")
		wait := min(200*time.Millisecond, time.Until(deadline))
		timeout := time.After(wait)
	recv:
		for {
			select {
			case dg := <-s.in:
				if dg.from != server {
					continue
				}
				ap, err := netip.ParseAddrPort(dg.data)
				if err != nil {
					t.Fatalf("whoami server %v answered %q: %v", server, dg.data, err)
				}
				return ap, true
			case <-timeout:
				break recv
			}
		}
	}
	return netip.AddrPort{}, false
}

func (s *udpSocket) mustWhoami(t *testing.T, server netip.AddrPort) netip.AddrPort {
	t.Helper()
	ap, ok := s.whoami(t, server, answerTimeout)
	if !ok {
		t.Fatalf("no answer from whoami server %v within %v", server, answerTimeout)
	}
	return ap
}

// newNATLab builds a lab with two public whoami servers, "stun1" and
// "stun2", and the given sites, numbered in name order.
func newNATLab(t *testing.T, sites map[string]NATKind) (lab *NATLab, stun1, stun2 netip.AddrPort) {
	t.Helper()
	RequireRoot(t)
	RequireNftables(t)
	lab = NewNATLab(t)
	stun1 = serveWhoAmI(t, lab.AddHost("stun1"))
	stun2 = serveWhoAmI(t, lab.AddHost("stun2"))
	for _, name := range slices.Sorted(maps.Keys(sites)) {
		lab.AddSite(name, sites[name])
	}
	return lab, stun1, stun2
}

// Behind an endpoint-independent NAT one socket has one public endpoint,
// whoever asks.
func TestNATEndpointIndependentMapping(t *testing.T) {
	t.Parallel()
	lab, stun1, stun2 := newNATLab(t, map[string]NATKind{"eim": EndpointIndependent})
	site := lab.Sites["eim"]
	s := listenUDP(t, site.Host.Netns)
	got1 := s.mustWhoami(t, stun1)
	got2 := s.mustWhoami(t, stun2)
	if got1.Addr() != site.Public {
		t.Errorf("stun1 saw %v, want the router's public address %v", got1, site.Public)
	}
	if got1 != got2 {
		t.Errorf("stun1 saw %v but stun2 saw %v; an endpoint-independent mapping gives both the same", got1, got2)
	}
}

// Behind a symmetric NAT each destination sees its own public port, and
// the mapping stays put for a destination.
func TestNATSymmetricMapping(t *testing.T) {
	t.Parallel()
	lab, stun1, stun2 := newNATLab(t, map[string]NATKind{"sym": Symmetric})
	site := lab.Sites["sym"]
	s := listenUDP(t, site.Host.Netns)
	got1 := s.mustWhoami(t, stun1)
	got2 := s.mustWhoami(t, stun2)
	if got1.Addr() != site.Public || got2.Addr() != site.Public {
		t.Errorf("servers saw %v and %v, want the router's public address %v", got1, got2, site.Public)
	}
	if got1.Port() == got2.Port() {
		t.Errorf("stun1 and stun2 both saw port %d; a symmetric NAT maps each destination to its own port", got1.Port())
	}
	if again := s.mustWhoami(t, stun1); again != got1 {
		t.Errorf("stun1 saw %v, then %v; the mapping for one destination should stay", got1, again)
	}
}

// A UDP-blocking router lets TCP out but no UDP.
func TestNATUDPBlocked(t *testing.T) {
	t.Parallel()
	lab, stun1, _ := newNATLab(t, map[string]NATKind{"fw": UDPBlocked})
	site := lab.Sites["fw"]
	s := listenUDP(t, site.Host.Netns)
	if got, ok := s.whoami(t, stun1, silence); ok {
		t.Errorf("UDP got through a UDP-blocking router: stun1 saw %v", got)
	}

	pub := lab.Hosts["stun1"]
	var ln net.Listener
	var err error
	pub.Do(func() { ln, err = net.Listen("tcp4", netip.AddrPortFrom(pub.IPv4, 8000).String()) })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go Echo(ln)
	var c net.Conn
	site.Host.Do(func() { c, err = net.DialTimeout("tcp4", ln.Addr().String(), answerTimeout) })
	if err != nil {
		t.Fatalf("TCP from behind a UDP-blocking router: %v", err)
	}
	defer c.Close()
	if err := RoundTrip(c, "tcp still works", answerTimeout); err != nil {
		t.Fatalf("TCP round trip from behind a UDP-blocking router: %v", err)
	}
}

// Nothing from the internet gets in unless it answers a flow started
// inside, and the router drops it without an ICMP error: not at the port
// mapped for another destination, not at the host's own port, not at a
// closed port, and not when a neighbour routes the private subnet through
// the router.
func TestNATDropsUnsolicited(t *testing.T) {
	t.Parallel()
	for _, kind := range []NATKind{EndpointIndependent, Symmetric} {
		t.Run(kind.String(), func(t *testing.T) {
			t.Parallel()
			lab, stun1, _ := newNATLab(t, map[string]NATKind{"site": kind})
			site := lab.Sites["site"]
			s := listenUDP(t, site.Host.Netns)
			mapped := s.mustWhoami(t, stun1) // opens a flow to stun1 only
			port := uint16(s.conn.LocalAddr().(*net.UDPAddr).Port)

			prober := lab.Hosts["stun2"]
			subnet := netip.PrefixFrom(site.Private, 24).Masked()
			prober.Run("ip", "route", "add", subnet.String(), "via", site.Public.String())
			targets := []netip.AddrPort{
				mapped,
				netip.AddrPortFrom(site.Public, port),
				netip.AddrPortFrom(site.Public, 9),
				netip.AddrPortFrom(site.Private, port),
			}
			froms := make([]netip.AddrPort, len(targets))
			errs := make([]error, len(targets))
			var wg sync.WaitGroup
			for i, target := range targets {
				var c *net.UDPConn
				var err error
				prober.Do(func() { c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(target)) })
				if err != nil {
					t.Fatal(err)
				}
				from := c.LocalAddr().(*net.UDPAddr).AddrPort()
				froms[i] = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
				wg.Go(func() {
					defer c.Close()
					for range 3 {
						c.Write([]byte("probe"))
					}
					// A connected UDP socket reports an ICMP port
					// unreachable as ECONNREFUSED on its next read.
					c.SetReadDeadline(time.Now().Add(silence))
					_, errs[i] = c.Read(make([]byte, 1500))
				})
			}
			wg.Wait()
			got := s.drain()
			for i, target := range targets {
				if !errors.Is(errs[i], os.ErrDeadlineExceeded) {
					t.Errorf("probe of %v: read returned %v, want silence (no reply, no ICMP error)", target, errs[i])
				}
				if got[froms[i]] {
					t.Errorf("unsolicited probe to %v reached the host behind the NAT", target)
				}
			}
			// The flow the host started still works.
			if again := s.mustWhoami(t, stun1); again != mapped {
				t.Errorf("stun1 saw %v, then %v", mapped, again)
			}
		})
	}
}

// punch has a and b send to each other's public endpoint every 50 ms
// until each hears the other or d passes. Payloads carry phase, so
// stragglers from an earlier phase do not count.
func punch(t *testing.T, a, b *udpSocket, aPub, bPub netip.AddrPort, phase string, d time.Duration) (aHeard, bHeard bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && !(aHeard && bHeard) {
		a.send(t, bPub, phase)
		b.send(t, aPub, phase)
		wait := min(50*time.Millisecond, time.Until(deadline))
		aHeard = a.heard(bPub, phase, wait) || aHeard
		bHeard = b.heard(aPub, phase, 0) || bHeard
	}
	return aHeard, bHeard
}

// Two endpoint-independent sites punch a hole to each other; blocking the
// direct path at one router cuts it both ways while the public server
// stays reachable, and unblocking it restores it.
func TestNATHolePunchAndBlock(t *testing.T) {
	t.Parallel()
	lab, stun1, _ := newNATLab(t, map[string]NATKind{"alice": EndpointIndependent, "bob": EndpointIndependent})
	alice, bob := lab.Sites["alice"], lab.Sites["bob"]
	a := listenUDP(t, alice.Host.Netns)
	b := listenUDP(t, bob.Host.Netns)
	aPub := a.mustWhoami(t, stun1)
	bPub := b.mustWhoami(t, stun1)

	if aHeard, bHeard := punch(t, a, b, aPub, bPub, "punch", answerTimeout); !aHeard || !bHeard {
		t.Fatalf("hole punching %v <-> %v: alice heard bob %v, bob heard alice %v", aPub, bPub, aHeard, bHeard)
	}

	alice.BlockUDPTo(bob.Public)
	if aHeard, bHeard := punch(t, a, b, aPub, bPub, "blocked", silence); aHeard || bHeard {
		t.Errorf("after alice's router blocked %v: alice heard bob %v, bob heard alice %v; want neither", bob.Public, aHeard, bHeard)
	}
	if got := a.mustWhoami(t, stun1); got != aPub {
		t.Errorf("with bob blocked stun1 saw alice at %v, want %v", got, aPub)
	}

	alice.UnblockUDPTo(bob.Public)
	if aHeard, bHeard := punch(t, a, b, aPub, bPub, "unblocked", answerTimeout); !aHeard || !bHeard {
		t.Fatalf("after unblocking: alice heard bob %v, bob heard alice %v; want both", aHeard, bHeard)
	}
}

// sendTTL sends data to `to` with the IP TTL ttl.
func (s *udpSocket) sendTTL(t *testing.T, to netip.AddrPort, data string, ttl int) {
	t.Helper()
	rc, err := s.conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	set := func(v int) {
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, v) }); err != nil || serr != nil {
			t.Fatalf("IP_TTL %d: %v %v", v, err, serr)
		}
	}
	set(ttl)
	defer set(64)
	s.send(t, to, data)
}

// Two endpoint-independent routers without an input firewall, one behind
// a transit router: a datagram that reaches a router before its site has
// sent anything to the sender takes the port the hole needs (conntrack
// holds it as a flow to the router), and the pair cannot punch; a
// datagram with TTL 2 first, from each side, opens each side's mapping
// and dies at the transit hop, and then they can.
func TestNATNoInputFirewall(t *testing.T) {
	t.Parallel()
	RequireRoot(t)
	RequireNftables(t)
	lab := NewNATLab(t)
	stun1 := serveWhoAmI(t, lab.AddHost("stun1"))
	alice := lab.AddSiteWith("alice", EndpointIndependent, SiteOptions{NoInputFirewall: true})
	bob := lab.AddSiteWith("bob", EndpointIndependent, SiteOptions{NoInputFirewall: true, Transit: true})

	t.Run("an early probe spoils the hole", func(t *testing.T) {
		a := listenUDP(t, alice.Host.Netns)
		b := listenUDP(t, bob.Host.Netns)
		aPub, bPub := a.mustWhoami(t, stun1), b.mustWhoami(t, stun1)
		a.send(t, bPub, "early")
		// Conntrack confirms the stray flow when bob's router takes the
		// datagram in; an answer from stun1 after it has crossed that
		// router too is no proof it has, so wait for the router to say.
		WaitFor(t, answerTimeout, "bob's router to hold alice's early probe", func() bool {
			out, _ := bob.Router.Try("cat", "/proc/net/nf_conntrack")
			return strings.Contains(out, "src="+aPub.Addr().String()) && strings.Contains(out, fmt.Sprintf("sport=%d dport=%d", aPub.Port(), bPub.Port()))
		})
		if aHeard, bHeard := punch(t, a, b, aPub, bPub, "punch", silence*4); aHeard || bHeard {
			t.Fatalf("alice heard bob %v, bob heard alice %v; the router without an input firewall should have spoiled the hole", aHeard, bHeard)
		}
	})

	t.Run("a TTL 2 opener from each side first", func(t *testing.T) {
		a := listenUDP(t, alice.Host.Netns)
		b := listenUDP(t, bob.Host.Netns)
		aPub, bPub := a.mustWhoami(t, stun1), b.mustWhoami(t, stun1)
		a.sendTTL(t, bPub, "opener", 2)
		b.sendTTL(t, aPub, "opener", 2)
		if aHeard, bHeard := punch(t, a, b, aPub, bPub, "punch", answerTimeout); !aHeard || !bHeard {
			t.Fatalf("after openers: alice heard bob %v, bob heard alice %v; want both", aHeard, bHeard)
		}
	})
}
