// Package names answers DNS for the overlay: the names this node knows
// (its static peers' names, the names in the certificates of its peers and
// its own) under the zone "tomoe.", as AAAA records of node addresses and A
// records of overlay IPv4 addresses. It is an authoritative server for that
// zone only, never a recursive resolver: a query for any other name is
// refused.
//
// Answer is the whole protocol: one query in, at most one answer out, no
// larger than the transport allows (512 bytes over UDP without EDNS), so
// that nothing can use it to amplify. Server serves it over UDP and TCP on
// an address and device of the caller's choosing, with its TCP connections
// bounded in number and in time. Resolved registers the server with
// systemd-resolved as the DNS server of the routing domain "~tomoe" on the
// overlay's interface.
//
// The package imports no other internal package: the node gives it the
// names (Names), the address and the interface.
package names

import (
	"net/netip"
	"strings"

	"golang.org/x/net/dns/dnsmessage"
)

const (
	// Zone is the zone the server answers for.
	Zone = "tomoe."
	// TTL is the time to live of every record, and of the negative
	// answers (the SOA's minimum), in seconds: short, since peers and
	// their certificates come and go.
	TTL = 30
	// MaxRecords bounds the records of one type in an answer.
	MaxRecords = 16

	// udpNoEDNS is the largest answer over UDP to a query without EDNS
	// (RFC 1035 section 4.2.1); udpEDNS the largest to one with it,
	// whatever it offers: the size that avoids fragmentation on any
	// path (DNS flag day 2020), and far beyond what our answers need.
	udpNoEDNS = 512
	udpEDNS   = 1232
	// tcpMax is the largest message DNS over TCP can carry.
	tcpMax = 65535
)

// Record is what a name has: node addresses (AAAA) and overlay IPv4
// addresses (A).
type Record struct {
	IPv6 []netip.Addr
	IPv4 []netip.Addr
}

// Names is where answers come from. Lookup gets a name below the zone in
// lowercase, without the zone and without a trailing dot ("web1",
// "web1.acme"), and reports whether the name exists; a name that exists
// may have no addresses (an empty non-terminal, such as "acme" when
// "web1.acme" exists). Lookup is called from several goroutines at once
// and must not block.
type Names interface {
	Lookup(name string) (Record, bool)
}

// NamesFunc adapts a function to Names.
type NamesFunc func(name string) (Record, bool)

// Lookup calls f.
func (f NamesFunc) Lookup(name string) (Record, bool) { return f(name) }

// rcodeBadVers is EDNS's BADVERS (RFC 6891), which needs the OPT record's
// extended bits.
const rcodeBadVers dnsmessage.RCode = 16

var (
	zoneName = dnsmessage.MustNewName(Zone)
	soa      = dnsmessage.SOAResource{
		NS:      dnsmessage.MustNewName("ns." + Zone),
		MBox:    dnsmessage.MustNewName("hostmaster." + Zone),
		Serial:  1,
		Refresh: TTL, Retry: TTL, Expire: TTL, MinTTL: TTL,
	}
)

// Answer returns the response to the DNS message query, or nil when it
// deserves none (too short to carry an ID, or a response itself, which
// answering could loop). tcp says which transport carried it, for the size
// limit. Every other message gets exactly one response: FORMERR if it does
// not parse, NOTIMP for an opcode other than QUERY, REFUSED for a name
// outside the zone (or a class other than IN), NXDOMAIN for a name in the
// zone that does not exist, else the records (none: NODATA). A response
// that does not fit is sent without records and with the TC bit, which
// tells the client to ask again over TCP.
func Answer(query []byte, names Names, tcp bool) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil
	}
	r := response{hdr: dnsmessage.Header{ID: h.ID, Response: true, OpCode: h.OpCode, RecursionDesired: h.RecursionDesired}}
	if h.OpCode != 0 {
		r.hdr.RCode = dnsmessage.RCodeNotImplemented
		return r.pack(tcp)
	}
	q, err := p.Question()
	if err != nil {
		r.hdr.RCode = dnsmessage.RCodeFormatError
		return r.pack(tcp)
	}
	r.question = &q
	if _, err := p.Question(); err != dnsmessage.ErrSectionDone {
		// More than one question (or a broken second): no server answers
		// those (RFC 9619).
		r.hdr.RCode = dnsmessage.RCodeFormatError
		return r.pack(tcp)
	}
	if err := r.readEDNS(&p); err != nil {
		r.hdr.RCode = dnsmessage.RCodeFormatError
		return r.pack(tcp)
	}
	if r.edns && r.ednsVersion != 0 {
		r.hdr.RCode = rcodeBadVers
		return r.pack(tcp)
	}
	r.answer(names)
	return r.pack(tcp)
}

// response is an answer being made.
type response struct {
	hdr      dnsmessage.Header
	question *dnsmessage.Question // nil: none to echo

	// The query's EDNS: whether it had an OPT record, its version and
	// the UDP payload size it offers.
	edns        bool
	ednsVersion uint8
	ednsSize    int

	answers []dnsmessage.Resource
	soa     bool // an SOA in the authority section (negative answers)
}

// readEDNS finds the query's OPT record, if any, after skipping the
// answer and authority sections.
func (r *response) readEDNS(p *dnsmessage.Parser) error {
	if err := p.SkipAllAnswers(); err != nil {
		return err
	}
	if err := p.SkipAllAuthorities(); err != nil {
		return err
	}
	for {
		h, err := p.AdditionalHeader()
		if err == dnsmessage.ErrSectionDone {
			return nil
		}
		if err != nil {
			return err
		}
		if h.Type == dnsmessage.TypeOPT && !r.edns {
			r.edns = true
			r.ednsVersion = uint8(h.TTL >> 16)
			r.ednsSize = int(h.Class)
		}
		if err := p.SkipAdditional(); err != nil {
			return err
		}
	}
}

// answer fills in the answer to the question.
func (r *response) answer(names Names) {
	q := r.question
	if q.Class != dnsmessage.ClassINET && q.Class != dnsmessage.ClassANY {
		r.hdr.RCode = dnsmessage.RCodeRefused
		return
	}
	name := lowerASCII(q.Name.String())
	var rec Record
	switch {
	case name == Zone:
		// The apex exists and has an SOA, nothing else.
		r.hdr.Authoritative = true
		if q.Type == dnsmessage.TypeSOA || q.Type == dnsmessage.TypeALL {
			r.answers = append(r.answers, dnsmessage.Resource{
				Header: dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: TTL},
				Body:   &soa,
			})
		} else {
			r.soa = true
		}
		return
	case strings.HasSuffix(name, "."+Zone):
		var ok bool
		if rec, ok = names.Lookup(strings.TrimSuffix(name, "."+Zone)); !ok {
			r.hdr.Authoritative = true
			r.hdr.RCode = dnsmessage.RCodeNameError
			r.soa = true
			return
		}
	default:
		// Not ours, and we do not recurse.
		r.hdr.RCode = dnsmessage.RCodeRefused
		return
	}
	r.hdr.Authoritative = true
	hdr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: TTL}
	if q.Type == dnsmessage.TypeAAAA || q.Type == dnsmessage.TypeALL {
		for i, a := range rec.IPv6 {
			if i == MaxRecords {
				break
			}
			if a.Is6() && !a.Is4In6() {
				r.answers = append(r.answers, dnsmessage.Resource{Header: hdr, Body: &dnsmessage.AAAAResource{AAAA: a.As16()}})
			}
		}
	}
	if q.Type == dnsmessage.TypeA || q.Type == dnsmessage.TypeALL {
		for i, a := range rec.IPv4 {
			if i == MaxRecords {
				break
			}
			if a = a.Unmap(); a.Is4() {
				r.answers = append(r.answers, dnsmessage.Resource{Header: hdr, Body: &dnsmessage.AResource{A: a.As4()}})
			}
		}
	}
	if len(r.answers) == 0 {
		r.soa = true // NODATA
	}
}

// limit is the largest response the transport and the query allow.
func (r *response) limit(tcp bool) int {
	switch {
	case tcp:
		return tcpMax
	case r.edns:
		return min(max(r.ednsSize, udpNoEDNS), udpEDNS)
	default:
		return udpNoEDNS
	}
}

// pack builds the response; if it does not fit, it builds it again
// without records and with TC set.
func (r *response) pack(tcp bool) []byte {
	b, err := r.build(true)
	if err == nil && len(b) <= r.limit(tcp) {
		return b
	}
	r.hdr.Truncated = true
	b, err = r.build(false)
	if err != nil || len(b) > r.limit(tcp) {
		// Cannot happen: a header, one question of at most 255 bytes
		// and an OPT record fit in 512. Stay silent rather than
		// send what the limit forbids.
		return nil
	}
	return b
}

// build packs the response, with its records if full.
func (r *response) build(full bool) ([]byte, error) {
	hdr := r.hdr
	rcode := hdr.RCode
	hdr.RCode &= 0xF
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), hdr)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if r.question != nil {
		if err := b.Question(*r.question); err != nil {
			return nil, err
		}
	}
	if full {
		if err := b.StartAnswers(); err != nil {
			return nil, err
		}
		for _, a := range r.answers {
			var err error
			switch body := a.Body.(type) {
			case *dnsmessage.AAAAResource:
				err = b.AAAAResource(a.Header, *body)
			case *dnsmessage.AResource:
				err = b.AResource(a.Header, *body)
			case *dnsmessage.SOAResource:
				err = b.SOAResource(a.Header, *body)
			}
			if err != nil {
				return nil, err
			}
		}
		if r.soa {
			if err := b.StartAuthorities(); err != nil {
				return nil, err
			}
			h := dnsmessage.ResourceHeader{Name: zoneName, Class: dnsmessage.ClassINET, TTL: TTL}
			if err := b.SOAResource(h, soa); err != nil {
				return nil, err
			}
		}
	}
	if r.edns {
		if err := b.StartAdditionals(); err != nil {
			return nil, err
		}
		var h dnsmessage.ResourceHeader
		if err := h.SetEDNS0(udpEDNS, rcode, false); err != nil {
			return nil, err
		}
		if err := b.OPTResource(h, dnsmessage.OPTResource{}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// lowerASCII lowers ASCII letters only: DNS names compare without case
// for ASCII alone (RFC 4343), and other bytes stay as they are.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
