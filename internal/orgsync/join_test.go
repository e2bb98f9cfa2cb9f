package orgsync

import (
	"bytes"
	"strings"
	"testing"

	cert "github.com/tomoe-net/tomoe/internal/org"
)

func joinMsgs() []Msg {
	groups := make([]string, MaxJoinGroups)
	for i := range groups {
		groups[i] = strings.Repeat(string(rune('a'+i%26)), MaxJoinGroupsBytes/MaxJoinGroups)
	}
	big := Join{Created: 1700000000, Name: strings.Repeat("n", MaxJoinName), Groups: groups}
	item := big
	item.Node, item.State = org(5), JoinPending
	return []Msg{
		{Type: TypeJoin, Org: org(1), Join: Join{Created: 1, Name: "web1.acme", Groups: []string{"dev", "web"}}},
		{Type: TypeJoin, Org: org(1), Join: big},
		{Type: TypeJoin, Org: org(1), Join: Join{Created: 7, Withdraw: true}},
		{Type: TypeJoinAck, Org: org(2), Echo: 99, Status: JoinHeld},
		{Type: TypeJoinAck, Org: org(2), Echo: 99, Status: JoinRefused, Join: Join{Node: org(4)}, Text: strings.Repeat("x", MaxJoinText)},
		{Type: TypeJoinQuery, Data: bytes.Repeat([]byte{3}, MaxJoinQuery)},
		{Type: TypeJoinCert, Data: bytes.Repeat([]byte{4}, MaxCert)},
		{Type: TypeJoinItem, Org: org(3), Echo: 5},
		{Type: TypeJoinItem, Org: org(3), Echo: 5, Index: 255, Total: 256, Join: item},
		{Type: TypeJoinItem, Org: org(3), Echo: 5, Index: 0, Total: 1, Join: Join{Node: org(6), Created: 3, State: JoinDeclined, Name: "x.acme"}},
	}
}

func TestJoinMessagesRoundTrip(t *testing.T) {
	for _, m := range joinMsgs() {
		b, err := m.Marshal()
		if err != nil {
			t.Fatalf("%+v: %v", m, err)
		}
		if len(b) > MaxMessage || len(b) > 1232 {
			t.Fatalf("type %d: %d bytes, more than one minimum-MTU datagram", m.Type, len(b))
		}
		got, err := Unmarshal(b)
		if err != nil {
			t.Fatalf("type %d: unmarshal: %v", m.Type, err)
		}
		if !got.Equal(&m) {
			t.Fatalf("round trip: got %+v, want %+v", got, m)
		}
		for i := range len(b) {
			if _, err := Unmarshal(b[:i]); err == nil {
				t.Fatalf("type %d truncated to %d bytes: accepted", m.Type, i)
			}
		}
		if _, err := Unmarshal(append(b, 0)); err == nil {
			t.Fatalf("type %d: trailing byte accepted", m.Type)
		}
	}
}

func TestJoinMarshalRefusesOutOfBounds(t *testing.T) {
	bad := []Msg{
		{Type: TypeJoin, Org: org(1), Join: Join{Created: 1}},                                                       // no name
		{Type: TypeJoin, Org: org(1), Join: Join{Created: 1, Name: strings.Repeat("n", MaxJoinName+1)}},             // long name
		{Type: TypeJoin, Org: org(1), Join: Join{Created: 1, Name: "a.b", Groups: make([]string, MaxJoinGroups+1)}}, // groups
		{Type: TypeJoin, Org: org(1), Join: Join{Created: 1, Name: "a.b", Groups: []string{""}}},                    // empty group
		{Type: TypeJoin, Org: org(1), Join: Join{Created: 1, Name: "a.b", State: JoinPending}},                      // state in a request
		{Type: TypeJoin, Org: org(1), Join: Join{Created: 1, Withdraw: true, Name: "a.b"}},                          // withdrawal with a name
		{Type: TypeJoinAck, Status: 0},
		{Type: TypeJoinAck, Status: joinStatusMax + 1},
		{Type: TypeJoinAck, Status: JoinHeld, Text: strings.Repeat("x", MaxJoinText+1)},
		{Type: TypeJoinQuery},
		{Type: TypeJoinQuery, Data: make([]byte, MaxJoinQuery+1)},
		{Type: TypeJoinCert, Data: make([]byte, MaxCert+1)},
		{Type: TypeJoinItem, Index: 1},
		{Type: TypeJoinItem, Index: 1, Total: 1, Join: Join{State: JoinPending, Name: "a.b"}},
		{Type: TypeJoinItem, Index: 0, Total: 1, Join: Join{Name: "a.b"}},
		{Type: TypeJoinItem, Index: 0, Total: 1, Join: Join{State: JoinPending, Withdraw: true, Name: "a.b"}},
	}
	for _, m := range bad {
		if _, err := m.Marshal(); err == nil {
			t.Errorf("%+v: marshalled", m)
		}
	}
	// A flag byte other than withdraw, or a status out of range, is malformed.
	good := Msg{Type: TypeJoin, Org: org(1), Join: Join{Created: 1, Name: "a.b"}}
	b, _ := good.Marshal()
	b[2+32+8] = 2
	if _, err := Unmarshal(b); err == nil {
		t.Fatal("unknown join flag accepted")
	}
}

// The limits of a request are the certificate's (package org), which
// this leaf does not import; a signed query fits MaxJoinQuery.
func TestJoinLimitsAreTheCertificates(t *testing.T) {
	if MaxJoinName != cert.MaxCertNameLen || MaxJoinGroups != cert.MaxGroups || MaxJoinGroupsBytes != cert.MaxGroupsBytes {
		t.Fatalf("join limits %d/%d/%d, certificate limits %d/%d/%d", MaxJoinName, MaxJoinGroups, MaxJoinGroupsBytes, cert.MaxCertNameLen, cert.MaxGroups, cert.MaxGroupsBytes)
	}
	if cert.JoinQueryBinary > MaxJoinQuery {
		t.Fatalf("a signed query is %d bytes, over MaxJoinQuery %d", cert.JoinQueryBinary, MaxJoinQuery)
	}
}
