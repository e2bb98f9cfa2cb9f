package org

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"slices"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// MaxRevoked bounds a revocation list: serials and keys together.
const MaxRevoked = 16384

const (
	crlMagic      = "tomoe-crl-v1\x00"
	crlTextPrefix = "tomoe-crl:"
	crlFixed      = len(crlMagic) + 32 + 8 + 8 + 4 + 4
	maxCRLBinary  = crlFixed + MaxRevoked*32 + ed25519.SignatureSize
)

// CRL is an organisation's signed revocation list. Each list holds every
// revocation of the earlier ones, and versions only grow, so a node keeps
// the highest version it has verified.
//
// A CRL from ParseCRL or DecodeCRL is canonical but unchecked until Verify.
type CRL struct {
	Org     PublicKey
	Version uint64 // 1 for the first list
	Issued  time.Time
	Serials []uint64             // sorted, unique, non-zero
	Keys    []identity.PublicKey // sorted by bytes, unique, non-zero

	body []byte
	sig  []byte
}

func (l *CRL) check() error {
	if l.Org.IsZero() {
		return fmt.Errorf("organisation key is unset")
	}
	if l.Version == 0 {
		return fmt.Errorf("version 0: versions start at 1")
	}
	if l.Issued.Unix() < 0 {
		return fmt.Errorf("issued %s: before 1970", fmtTime(l.Issued))
	}
	if n := len(l.Serials) + len(l.Keys); n > MaxRevoked {
		return fmt.Errorf("%d revocations: at most %d in one list", n, MaxRevoked)
	}
	for i, v := range l.Serials {
		if v == 0 {
			return fmt.Errorf("serial zero")
		}
		if i > 0 && l.Serials[i-1] >= v {
			return fmt.Errorf("serials not sorted and unique at %s", serialString(v))
		}
	}
	for i, k := range l.Keys {
		if k.IsZero() {
			return fmt.Errorf("zero node key")
		}
		if i > 0 && bytes.Compare(l.Keys[i-1][:], k[:]) >= 0 {
			return fmt.Errorf("keys not sorted and unique at %s", k)
		}
	}
	return nil
}

func (l *CRL) encodeBody() ([]byte, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	w := writer{b: make([]byte, 0, crlFixed+8*len(l.Serials)+32*len(l.Keys))}
	w.raw([]byte(crlMagic))
	w.key(l.Org)
	w.u64(l.Version)
	w.time(l.Issued)
	w.u32(uint32(len(l.Serials)))
	for _, v := range l.Serials {
		w.u64(v)
	}
	w.u32(uint32(len(l.Keys)))
	for _, k := range l.Keys {
		w.key(k)
	}
	return w.b, nil
}

// DecodeCRL decodes the binary form strictly; it allocates no more than
// the input's length justifies. It does not check the signature.
func DecodeCRL(b []byte) (*CRL, error) {
	if len(b) > maxCRLBinary {
		return nil, fmt.Errorf("revocation list: %d bytes is longer than any valid list", len(b))
	}
	body, sig, err := splitSigned(b, crlMagic, "revocation list")
	if err != nil {
		return nil, err
	}
	r := reader{b: body[len(crlMagic):]}
	l := &CRL{}
	l.Org = r.key("organisation key")
	l.Version = r.u64("version")
	l.Issued = r.time("issued")
	if n := r.u32("serial count"); r.err == nil && n > 0 {
		if n > MaxRevoked || int(n) > len(r.b)/8 {
			r.fail("serial count %d: more than the list holds", n)
		} else {
			l.Serials = make([]uint64, n)
			for i := range l.Serials {
				l.Serials[i] = r.u64("serial")
			}
		}
	}
	if n := r.u32("key count"); r.err == nil && n > 0 {
		if n > MaxRevoked || int(n) > len(r.b)/32 {
			r.fail("key count %d: more than the list holds", n)
		} else {
			l.Keys = make([]identity.PublicKey, n)
			for i := range l.Keys {
				l.Keys[i] = r.key("node key")
			}
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d bytes after the last field", len(r.b))
	}
	if r.err != nil {
		return nil, fmt.Errorf("revocation list: %w", r.err)
	}
	again, err := l.encodeBody()
	if err != nil {
		return nil, fmt.Errorf("revocation list: %w", err)
	}
	if !bytes.Equal(again, body) {
		return nil, fmt.Errorf("revocation list: %w", errNotCanonical)
	}
	l.body = cloneBytes(body)
	l.sig = cloneBytes(sig)
	return l, nil
}

// ParseCRL parses the text form ("tomoe-crl:" + base64url); surrounding
// whitespace is ignored. It does not check the signature.
func ParseCRL(text string) (*CRL, error) {
	b, err := decodeText(text, crlTextPrefix, "revocation list", maxCRLBinary)
	if err != nil {
		return nil, err
	}
	return DecodeCRL(b)
}

// Binary returns the binary form: the signed body and the signature.
func (l *CRL) Binary() []byte {
	out := make([]byte, 0, len(l.body)+len(l.sig))
	return append(append(out, l.body...), l.sig...)
}

// Text returns the one-line text form, "tomoe-crl:" + base64url.
func (l *CRL) Text() string { return encodeText(crlTextPrefix, l.Binary()) }

// Verify checks that org signed l (ErrWrongOrg) over its fields as they
// are now (ErrBadSignature). Whether l is newer than the list a node has is
// the node's to compare (Version).
func (l *CRL) Verify(org PublicKey) error {
	if l.Org != org {
		return fmt.Errorf("revocation list version %d is from organisation %s, not %s: %w", l.Version, l.Org, org, ErrWrongOrg)
	}
	body, err := l.encodeBody()
	if err != nil || !bytes.Equal(body, l.body) || !verifySig(org, l.body, l.sig) {
		return fmt.Errorf("revocation list version %d: %w: not signed by %s as it stands", l.Version, ErrBadSignature, org)
	}
	return nil
}

// Revokes reports whether l lists c's serial or its node key.
func (l *CRL) Revokes(c *Cert) bool {
	_, found := slices.BinarySearch(l.Serials, c.Serial)
	return found || l.RevokesKey(c.Node)
}

// RevokesKey reports whether l lists node key k.
func (l *CRL) RevokesKey(k identity.PublicKey) bool {
	_, found := slices.BinarySearchFunc(l.Keys, k, func(a, b identity.PublicKey) int { return bytes.Compare(a[:], b[:]) })
	return found
}

// Revoke signs a new revocation list holding every earlier revocation
// (kept in the state file beside the key) and serials and keys, with the
// next version (1 for the first list). Revoking nothing new still makes a
// new version: a refresh for nodes that refuse a list older than their
// crl_max_age. The state is saved before the list is returned.
func (s *Signer) Revoke(serials []uint64, keys []identity.PublicKey, now time.Time) (*CRL, error) {
	st, path, err := s.loadState()
	if err != nil {
		return nil, err
	}
	for _, v := range serials {
		if v == 0 {
			return nil, fmt.Errorf("revoke: serial zero is never a certificate's")
		}
	}
	for _, k := range keys {
		if k.IsZero() {
			return nil, fmt.Errorf("revoke: node key is all zero")
		}
	}
	cmpKey := func(a, b identity.PublicKey) int { return bytes.Compare(a[:], b[:]) }
	l := &CRL{
		Org:     s.Public(),
		Version: st.CRLVersion + 1,
		Issued:  now.UTC().Truncate(time.Second),
		Serials: slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(st.Serials), serials...)))),
		Keys:    slices.Compact(slices.SortedFunc(slices.Values(append(slices.Clone(st.Keys), keys...)), cmpKey)),
	}
	body, err := l.encodeBody()
	if err != nil {
		return nil, fmt.Errorf("revoke: %w", err)
	}
	l.body = body
	l.sig = ed25519.Sign(s.key, body)
	st.CRLVersion, st.Serials, st.Keys = l.Version, l.Serials, l.Keys
	if err := saveState(path, st); err != nil {
		return nil, fmt.Errorf("revoke: %w", err)
	}
	return l, nil
}
