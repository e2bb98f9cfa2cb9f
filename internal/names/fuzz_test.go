package names

import (
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// FuzzDNSAnswer feeds arbitrary bytes to the query handler: it must not
// panic, must answer nothing it cannot take an ID from, and must keep
// every answer within the transport's limit (no amplification).
func FuzzDNSAnswer(f *testing.F) {
	f.Add(query(f, "web1.tomoe.", dnsmessage.TypeAAAA, queryOpts{}), false)
	f.Add(query(f, "many.tomoe.", dnsmessage.TypeALL, queryOpts{}), false)
	f.Add(query(f, "many.tomoe.", dnsmessage.TypeALL, queryOpts{edns: 700}), false)
	f.Add(query(f, "example.com.", dnsmessage.TypeA, queryOpts{edns: 4096, version: 3}), true)
	f.Add([]byte{0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1}, false)
	f.Fuzz(func(t *testing.T, msg []byte, tcp bool) {
		resp := Answer(msg, testNames, tcp)
		if resp == nil {
			return
		}
		if len(msg) < 12 {
			t.Fatalf("answered a %d-byte message", len(msg))
		}
		limit := udpEDNS
		if tcp {
			limit = tcpMax
		}
		if len(resp) > limit {
			t.Fatalf("%d-byte answer, more than %d", len(resp), limit)
		}
		var m dnsmessage.Message
		if err := m.Unpack(resp); err != nil {
			t.Fatalf("answer does not parse: %v", err)
		}
		if !m.Header.Response || m.Header.ID != uint16(msg[0])<<8|uint16(msg[1]) {
			t.Fatalf("answer header %+v", m.Header)
		}
		if !tcp && len(m.Additionals) == 0 && len(resp) > udpNoEDNS {
			t.Fatalf("%d bytes over UDP without EDNS", len(resp))
		}
	})
}
