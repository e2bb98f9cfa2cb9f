package org

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
)

func TestJoinQuery(t *testing.T) {
	s, err := Init("acme", filepath.Join(t.TempDir(), "acme.key"))
	if err != nil {
		t.Fatal(err)
	}
	other, _ := Init("evil", filepath.Join(t.TempDir(), "evil.key"))
	via := identity.PublicKey{7}
	q, err := s.SignJoinQuery(JoinList, via, identity.PublicKey{}, t0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseJoinQuery(q.Text())
	if err != nil {
		t.Fatal(err)
	}
	if p.Op != JoinList || p.Org != s.Public() || p.Via != via || !p.Time.Equal(t0) || p.Nonce != q.Nonce {
		t.Fatalf("parsed %+v", p)
	}
	if err := p.Verify(t0.Add(4 * time.Minute)); err != nil {
		t.Fatal(err)
	}
	for _, now := range []time.Time{t0.Add(6 * time.Minute), t0.Add(-6 * time.Minute)} {
		if err := p.Verify(now); !errors.Is(err, ErrStale) {
			t.Fatalf("at %v: %v, want stale", now, err)
		}
	}
	// Changed fields, another organisation's signature: bad signature.
	p.Via = identity.PublicKey{8}
	if err := p.Verify(t0); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("changed via: %v", err)
	}
	forged, _ := other.SignJoinQuery(JoinList, via, identity.PublicKey{}, t0)
	b := forged.Binary()
	pk := s.Public()
	copy(b[len(joinQueryMagic)+1:len(joinQueryMagic)+33], pk[:])
	f, err := DecodeJoinQuery(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Verify(t0); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("another organisation's signature under acme's key: %v", err)
	}
	// Malformed: list naming a node, reject naming none, wrong length.
	if _, err := s.SignJoinQuery(JoinList, via, identity.PublicKey{1}, t0); err == nil {
		t.Fatal("list query naming a node signed")
	}
	if _, err := s.SignJoinQuery(JoinReject, via, identity.PublicKey{}, t0); err == nil {
		t.Fatal("reject query naming no node signed")
	}
	if _, err := DecodeJoinQuery(q.Binary()[:10]); err == nil {
		t.Fatal("truncated query decoded")
	}
	if _, err := ParseJoinQuery("tomoe-cert:AAAA"); err == nil {
		t.Fatal("wrong prefix parsed")
	}
}
