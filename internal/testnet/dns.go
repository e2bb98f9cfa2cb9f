package testnet

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// DNSServer answers A queries for a few names over UDP, with no records for
// anything else, and remembers where the queries came from. It is stopped
// when the test ends.
type DNSServer struct {
	names map[string]netip.Addr // lower case, with the final dot

	mu   sync.Mutex // guards from
	from []netip.Addr
}

// ServeDNS serves pc (opened by the caller, in whatever namespace) with
// the A records names ("host.example." -> an IPv4 address).
func ServeDNS(t testing.TB, pc net.PacketConn, names map[string]netip.Addr) *DNSServer {
	t.Helper()
	s := &DNSServer{names: map[string]netip.Addr{}}
	for n, a := range names {
		s.names[strings.ToLower(n)] = a
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if ua, ok := from.(*net.UDPAddr); ok {
				s.mu.Lock()
				s.from = append(s.from, ua.AddrPort().Addr().Unmap())
				s.mu.Unlock()
			}
			if reply, ok := s.answer(buf[:n]); ok {
				pc.WriteTo(reply, from)
			}
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return s
}

func (s *DNSServer) answer(query []byte) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired})
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	if a, ok := s.names[strings.ToLower(q.Name.String())]; ok && q.Type == dnsmessage.TypeA && a.Is4() {
		b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: a.As4()})
	}
	msg, err := b.Finish()
	return msg, err == nil
}

// Sources returns the source addresses of the queries so far.
func (s *DNSServer) Sources() []netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]netip.Addr(nil), s.from...)
}
