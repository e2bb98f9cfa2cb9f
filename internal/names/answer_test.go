package names

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

var (
	web1v6 = netip.MustParseAddr("fc12:3456::1")
	web1v4 = netip.MustParseAddr("100.64.1.2")
	acmev6 = netip.MustParseAddr("fc99::2")
)

// testNames knows web1 (both families), web1.acme (IPv6 only) and, as an
// empty non-terminal, acme.
var testNames = NamesFunc(func(name string) (Record, bool) {
	switch name {
	case "web1":
		return Record{IPv6: []netip.Addr{web1v6}, IPv4: []netip.Addr{web1v4}}, true
	case "web1.acme":
		return Record{IPv6: []netip.Addr{acmev6}}, true
	case "acme":
		return Record{}, true
	case "many":
		var r Record
		for i := range 40 {
			r.IPv6 = append(r.IPv6, netip.AddrFrom16([16]byte{0xfc, 15: byte(i)}))
			r.IPv4 = append(r.IPv4, netip.AddrFrom4([4]byte{100, 64, 0, byte(i)}))
		}
		return r, true
	}
	return Record{}, false
})

type queryOpts struct {
	class    dnsmessage.Class
	edns     int // UDP size offered; 0: no OPT record
	version  uint8
	opcode   dnsmessage.OpCode
	response bool
}

func query(t testing.TB, name string, typ dnsmessage.Type, o queryOpts) []byte {
	t.Helper()
	if o.class == 0 {
		o.class = dnsmessage.ClassINET
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 0x1234, RecursionDesired: true, OpCode: o.opcode, Response: o.response})
	b.StartQuestions()
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: o.class}); err != nil {
		t.Fatal(err)
	}
	if o.edns > 0 {
		b.StartAdditionals()
		var h dnsmessage.ResourceHeader
		h.SetEDNS0(o.edns, 0, false)
		h.TTL |= uint32(o.version) << 16
		if err := b.OPTResource(h, dnsmessage.OPTResource{}); err != nil {
			t.Fatal(err)
		}
	}
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func parse(t testing.TB, resp []byte) dnsmessage.Message {
	t.Helper()
	var m dnsmessage.Message
	if err := m.Unpack(resp); err != nil {
		t.Fatalf("response does not parse: %v (%x)", err, resp)
	}
	return m
}

func addrsOf(m dnsmessage.Message) []string {
	var out []string
	for _, a := range m.Answers {
		switch b := a.Body.(type) {
		case *dnsmessage.AAAAResource:
			out = append(out, netip.AddrFrom16(b.AAAA).String())
		case *dnsmessage.AResource:
			out = append(out, netip.AddrFrom4(b.A).String())
		}
	}
	return out
}

func TestAnswer(t *testing.T) {
	tests := []struct {
		name  string
		qname string
		typ   dnsmessage.Type
		opts  queryOpts
		rcode dnsmessage.RCode
		addrs []string
		soa   bool // negative answer with the zone's SOA
	}{
		{"AAAA", "web1.tomoe.", dnsmessage.TypeAAAA, queryOpts{}, dnsmessage.RCodeSuccess, []string{web1v6.String()}, false},
		{"A", "web1.tomoe.", dnsmessage.TypeA, queryOpts{}, dnsmessage.RCodeSuccess, []string{web1v4.String()}, false},
		{"ANY", "web1.tomoe.", dnsmessage.TypeALL, queryOpts{}, dnsmessage.RCodeSuccess, []string{web1v6.String(), web1v4.String()}, false},
		{"case-insensitive", "WeB1.ToMoE.", dnsmessage.TypeAAAA, queryOpts{}, dnsmessage.RCodeSuccess, []string{web1v6.String()}, false},
		{"certificate name", "web1.acme.tomoe.", dnsmessage.TypeAAAA, queryOpts{}, dnsmessage.RCodeSuccess, []string{acmev6.String()}, false},
		{"no IPv4: NODATA", "web1.acme.tomoe.", dnsmessage.TypeA, queryOpts{}, dnsmessage.RCodeSuccess, nil, true},
		{"other type: NODATA", "web1.tomoe.", dnsmessage.TypeMX, queryOpts{}, dnsmessage.RCodeSuccess, nil, true},
		{"empty non-terminal: NODATA", "acme.tomoe.", dnsmessage.TypeAAAA, queryOpts{}, dnsmessage.RCodeSuccess, nil, true},
		{"unknown in zone: NXDOMAIN", "nope.tomoe.", dnsmessage.TypeAAAA, queryOpts{}, dnsmessage.RCodeNameError, nil, true},
		{"below a name: NXDOMAIN", "x.web1.tomoe.", dnsmessage.TypeAAAA, queryOpts{}, dnsmessage.RCodeNameError, nil, true},
		{"apex NODATA", "tomoe.", dnsmessage.TypeAAAA, queryOpts{}, dnsmessage.RCodeSuccess, nil, true},
		{"other zone: REFUSED", "example.com.", dnsmessage.TypeA, queryOpts{}, dnsmessage.RCodeRefused, nil, false},
		{"zone as a label elsewhere: REFUSED", "web1.tomoe.example.", dnsmessage.TypeA, queryOpts{}, dnsmessage.RCodeRefused, nil, false},
		{"lookalike: REFUSED", "web1.notomoe.", dnsmessage.TypeA, queryOpts{}, dnsmessage.RCodeRefused, nil, false},
		{"root: REFUSED", ".", dnsmessage.TypeNS, queryOpts{}, dnsmessage.RCodeRefused, nil, false},
		{"class CH: REFUSED", "web1.tomoe.", dnsmessage.TypeA, queryOpts{class: dnsmessage.ClassCHAOS}, dnsmessage.RCodeRefused, nil, false},
		{"opcode NOTIFY: NOTIMP", "web1.tomoe.", dnsmessage.TypeA, queryOpts{opcode: 4}, dnsmessage.RCodeNotImplemented, nil, false},
		{"EDNS", "web1.tomoe.", dnsmessage.TypeAAAA, queryOpts{edns: 4096}, dnsmessage.RCodeSuccess, []string{web1v6.String()}, false},
		{"EDNS version 1: BADVERS", "web1.tomoe.", dnsmessage.TypeAAAA, queryOpts{edns: 4096, version: 1}, rcodeBadVers, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := query(t, tt.qname, tt.typ, tt.opts)
			for _, tcp := range []bool{false, true} {
				m := parse(t, Answer(q, testNames, tcp))
				rcode := m.Header.RCode
				var opt *dnsmessage.ResourceHeader
				for i := range m.Additionals {
					if m.Additionals[i].Header.Type == dnsmessage.TypeOPT {
						opt = &m.Additionals[i].Header
					}
				}
				if opt != nil {
					rcode = opt.ExtendedRCode(rcode)
				}
				if (opt != nil) != (tt.opts.edns > 0) {
					t.Errorf("OPT in the answer: %v, in the query: %v", opt != nil, tt.opts.edns > 0)
				}
				if m.Header.ID != 0x1234 || !m.Header.Response || !m.Header.RecursionDesired || m.Header.RecursionAvailable || m.Header.Truncated {
					t.Errorf("header %+v", m.Header)
				}
				if rcode != tt.rcode {
					t.Errorf("rcode %v, want %v", rcode, tt.rcode)
				}
				if tt.rcode != dnsmessage.RCodeNotImplemented && (len(m.Questions) != 1 || m.Questions[0].Name.String() != tt.qname) {
					t.Errorf("question not echoed: %v", m.Questions)
				}
				if got := addrsOf(m); !slices.Equal(got, tt.addrs) {
					t.Errorf("addresses %v, want %v", got, tt.addrs)
				}
				for _, a := range m.Answers {
					if a.Header.TTL != TTL {
						t.Errorf("TTL %d, want %d", a.Header.TTL, TTL)
					}
				}
				hasSOA := len(m.Authorities) == 1 && m.Authorities[0].Header.Type == dnsmessage.TypeSOA
				if hasSOA != tt.soa {
					t.Errorf("SOA in authority: %v, want %v (%v)", hasSOA, tt.soa, m.Authorities)
				}
				ours := tt.rcode == dnsmessage.RCodeSuccess || tt.rcode == dnsmessage.RCodeNameError
				if m.Header.Authoritative != ours {
					t.Errorf("authoritative: %v", m.Header.Authoritative)
				}
			}
		})
	}
}

func TestAnswerApexSOA(t *testing.T) {
	m := parse(t, Answer(query(t, "TOMOE.", dnsmessage.TypeSOA, queryOpts{}), testNames, false))
	if m.Header.RCode != dnsmessage.RCodeSuccess || len(m.Answers) != 1 || m.Answers[0].Header.Type != dnsmessage.TypeSOA {
		t.Fatalf("apex SOA: %+v", m)
	}
}

// A response never exceeds 512 bytes over UDP without EDNS, nor the
// offered size (at most 1232) with it: one that would is sent without
// records and with TC, and the same query over TCP gets them all.
func TestAnswerTruncates(t *testing.T) {
	for _, tt := range []struct {
		edns, limit int
		tc          bool
	}{{0, 512, true}, {600, 600, true}, {100, 512, true}, {4096, 1232, false}} {
		resp := Answer(query(t, "many.tomoe.", dnsmessage.TypeALL, queryOpts{edns: tt.edns}), testNames, false)
		if len(resp) > tt.limit {
			t.Errorf("edns %d: %d bytes, more than %d", tt.edns, len(resp), tt.limit)
		}
		m := parse(t, resp)
		if m.Header.Truncated != tt.tc {
			t.Errorf("edns %d: TC %v, want %v", tt.edns, m.Header.Truncated, tt.tc)
		}
		if tt.tc && (len(m.Answers) != 0 || len(m.Questions) != 1) {
			t.Errorf("edns %d: truncated answer has %d records, %d questions", tt.edns, len(m.Answers), len(m.Questions))
		}
		if !tt.tc && len(m.Answers) != 2*MaxRecords {
			t.Errorf("edns %d: %d records, want %d (MaxRecords of each type)", tt.edns, len(m.Answers), 2*MaxRecords)
		}
	}
	m := parse(t, Answer(query(t, "many.tomoe.", dnsmessage.TypeALL, queryOpts{}), testNames, true))
	if m.Header.Truncated || len(m.Answers) != 2*MaxRecords {
		t.Errorf("over TCP: TC %v, %d records", m.Header.Truncated, len(m.Answers))
	}
}

func TestAnswerMalformed(t *testing.T) {
	good := query(t, "web1.tomoe.", dnsmessage.TypeAAAA, queryOpts{})
	twoQuestions := func() []byte {
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 0x1234})
		b.StartQuestions()
		q := dnsmessage.Question{Name: dnsmessage.MustNewName("web1.tomoe."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}
		b.Question(q)
		b.Question(q)
		m, _ := b.Finish()
		return m
	}()
	noQuestion := binary.BigEndian.AppendUint16(nil, 0x1234)
	noQuestion = append(noQuestion, make([]byte, 10)...)
	dotInLabel := slices.Clone(good)
	dotInLabel[12+3] = '.' // "we.1"
	tests := []struct {
		name string
		msg  []byte
		nil_ bool // no answer at all
	}{
		{"empty", nil, true},
		{"short header", good[:11], true},
		{"a response", query(t, "web1.tomoe.", dnsmessage.TypeA, queryOpts{response: true}), true},
		{"header only", good[:12], false},
		{"cut in the question", good[:len(good)-3], false},
		{"no question", noQuestion, false},
		{"two questions", twoQuestions, false},
		{"dot in a label", dotInLabel, false},
		{"trailing garbage count", func() []byte { b := slices.Clone(good); b[11] = 5; return b }(), false},
	}
	for _, tt := range tests {
		resp := Answer(tt.msg, testNames, false)
		if tt.nil_ {
			if resp != nil {
				t.Errorf("%s: answered %x", tt.name, resp)
			}
			continue
		}
		m := parse(t, resp)
		if m.Header.RCode != dnsmessage.RCodeFormatError || m.Header.ID != 0x1234 || len(m.Answers) != 0 {
			t.Errorf("%s: %+v, want FORMERR with the query's ID", tt.name, m.Header)
		}
	}
}

func TestLowerASCII(t *testing.T) {
	for in, want := range map[string]string{"": "", "abc": "abc", "AbC.TOMOE.": "abc.tomoe.", "\xc3\x89X": "\xc3\x89x", "\xffA": "\xffa"} {
		if got := lowerASCII(in); got != want {
			t.Errorf("lowerASCII(%q) = %q, want %q", in, got, want)
		}
	}
}

// BenchmarkAnswer is the cost of one query: what a local program can make
// the node spend per datagram.
func BenchmarkAnswer(b *testing.B) {
	q := query(b, "web1.tomoe.", dnsmessage.TypeAAAA, queryOpts{edns: 1232})
	b.ReportAllocs()
	for b.Loop() {
		Answer(q, testNames, false)
	}
	b.ReportMetric(float64(len(q)), "query-bytes")
	b.ReportMetric(float64(len(Answer(q, testNames, false))), "answer-bytes")
}
