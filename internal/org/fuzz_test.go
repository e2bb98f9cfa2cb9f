package org

import (
	"bytes"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
)

func sprintf(format string, a ...any) string { return fmt.Sprintf(format, a...) }

func fuzzSigner(f *testing.F) *Signer {
	s, err := Init("acme", filepath.Join(f.TempDir(), "acme.key"))
	if err != nil {
		f.Fatal(err)
	}
	return s
}

func FuzzParseCert(f *testing.F) {
	s := fuzzSigner(f)
	c, err := s.SignCert(CertRequest{Node: identity.PublicKey{1}, Name: "web1.acme", Groups: []string{"a", "b"},
		IPv4: []netip.Addr{netip.MustParseAddr("100.64.1.1")}, TTL: time.Hour}, t0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(c.Binary())
	f.Add([]byte(certMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeCert(b)
		if err != nil {
			return
		}
		if !bytes.Equal(d.Binary(), b) {
			t.Fatalf("re-encoding differs")
		}
		p, err := ParseCert(d.Text())
		if err != nil || !bytes.Equal(p.Binary(), b) {
			t.Fatalf("text round trip: %v", err)
		}
		_ = d.Verify(s.Public(), t0)
	})
}

func FuzzParseCRL(f *testing.F) {
	s := fuzzSigner(f)
	l, err := s.Revoke([]uint64{1, 5}, []identity.PublicKey{{1}, {2}}, t0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(l.Binary())
	f.Add([]byte(crlMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeCRL(b)
		if err != nil {
			return
		}
		if !bytes.Equal(d.Binary(), b) {
			t.Fatalf("re-encoding differs")
		}
		p, err := ParseCRL(d.Text())
		if err != nil || !bytes.Equal(p.Binary(), b) {
			t.Fatalf("text round trip: %v", err)
		}
		_ = d.Verify(s.Public())
	})
}

func FuzzParsePolicyDoc(f *testing.F) {
	s := fuzzSigner(f)
	d, err := s.SignPolicy([]PolicyRule{{Action: "allow", From: "group:a", To: "web1.acme", Ports: "80"}},
		[]PolicyTest{{From: "x.acme", Groups: []string{"a"}, Port: 80, Expect: "allow"}}, t0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(d.Binary())
	f.Add([]byte(policyMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodePolicyDoc(b)
		if err != nil {
			return
		}
		if !bytes.Equal(d.Binary(), b) {
			t.Fatalf("re-encoding differs")
		}
		p, err := ParsePolicyDoc(d.Text())
		if err != nil || !bytes.Equal(p.Binary(), b) {
			t.Fatalf("text round trip: %v", err)
		}
		_ = d.Verify(s.Public())
	})
}

func FuzzParseJoinQuery(f *testing.F) {
	s := fuzzSigner(f)
	q, err := s.SignJoinQuery(JoinReject, identity.PublicKey{1}, identity.PublicKey{2}, t0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(q.Binary())
	f.Add([]byte(joinQueryMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeJoinQuery(b)
		if err != nil {
			return
		}
		if !bytes.Equal(d.Binary(), b) {
			t.Fatalf("re-encoding differs")
		}
		p, err := ParseJoinQuery(d.Text())
		if err != nil || !bytes.Equal(p.Binary(), b) {
			t.Fatalf("text round trip: %v", err)
		}
		_ = d.Verify(t0)
	})
}
