package org

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// Certificate limits. A certificate travels in one UDP datagram, so its
// binary form must stay well under 1,100 bytes: with every field at its
// limit it is MaxCertBinary bytes (TestCertWorstCaseSize).
const (
	MaxGroups      = 32
	MaxGroupsBytes = 480 // sum of the group names' lengths
	MaxIPv4        = 8
	MaxTTL         = 10 * 365 * 24 * time.Hour
	MaxCertBinary  = len(certMagic) + 32 + 1 + MaxOrgNameLen + 32 + 1 + MaxCertNameLen +
		1 + MaxGroups + MaxGroupsBytes + 1 + 4*MaxIPv4 + 8 + 8 + 8 + ed25519.SignatureSize
)

const (
	certMagic      = "tomoe-cert-v1\x00"
	certTextPrefix = "tomoe-cert:"
)

// Cert is a membership certificate: organisation Org (named OrgName) says
// that the node with WireGuard key Node is Name, a member of Groups, with
// the overlay IPv4 addresses IPv4, from NotBefore to NotAfter.
//
// A Cert from ParseCert or DecodeCert is syntactically valid and canonical
// but its signature is unchecked until Verify. Changing its fields makes
// Verify fail; it keeps the bytes that were signed.
type Cert struct {
	Org       PublicKey
	OrgName   string
	Node      identity.PublicKey // the node's X25519 WireGuard key
	Name      string
	Groups    []string     // sorted, unique
	IPv4      []netip.Addr // sorted, unique, IPv4 only, at most MaxIPv4
	Serial    uint64       // random, non-zero
	NotBefore time.Time    // second precision, UTC
	NotAfter  time.Time

	body []byte // the signed body, as decoded or signed
	sig  []byte
}

// CertRequest is what an organisation's admin asks SignCert to certify.
type CertRequest struct {
	Node      identity.PublicKey
	Name      string
	Groups    []string     // any order; duplicates are dropped
	IPv4      []netip.Addr // any order; duplicates are dropped
	TTL       time.Duration
	NotBefore time.Time // zero: now
}

// SignCert validates req and returns a certificate signed by s with a
// random serial, valid from req.NotBefore (or now) for req.TTL, both
// truncated to the second.
func (s *Signer) SignCert(req CertRequest, now time.Time) (*Cert, error) {
	if req.Node.IsZero() {
		return nil, fmt.Errorf("sign certificate: node key is unset")
	}
	if req.TTL <= 0 || req.TTL > MaxTTL {
		return nil, fmt.Errorf("sign certificate: lifetime %s: must be positive and at most 10 years (87600h)", req.TTL)
	}
	nb := req.NotBefore
	if nb.IsZero() {
		nb = now
	}
	nb = nb.UTC().Truncate(time.Second)
	c := &Cert{
		Org:       s.Public(),
		OrgName:   s.name,
		Node:      req.Node,
		Name:      req.Name,
		Groups:    slices.Compact(slices.Sorted(slices.Values(req.Groups))),
		IPv4:      slices.Compact(slices.SortedFunc(slices.Values(unmapAll(req.IPv4)), netip.Addr.Compare)),
		NotBefore: nb,
		NotAfter:  nb.Add(req.TTL).Truncate(time.Second),
	}
	if !c.NotAfter.After(c.NotBefore) {
		return nil, fmt.Errorf("sign certificate: lifetime %s is under a second", req.TTL)
	}
	for c.Serial == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("sign certificate: serial: %w", err)
		}
		c.Serial = binary.BigEndian.Uint64(b[:])
	}
	body, err := c.encodeBody()
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	c.body = body
	c.sig = ed25519.Sign(s.key, body)
	return c, nil
}

// unmapAll turns IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) into IPv4.
func unmapAll(as []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, len(as))
	for i, a := range as {
		out[i] = a.Unmap()
	}
	return out
}

// check validates every field the way SignCert and the decoder require.
func (c *Cert) check() error {
	if c.Org.IsZero() {
		return fmt.Errorf("organisation key is unset")
	}
	if err := ValidOrgName(c.OrgName); err != nil {
		return err
	}
	if c.Node.IsZero() {
		return fmt.Errorf("node key is unset")
	}
	if err := ValidCertName(c.OrgName, c.Name); err != nil {
		return err
	}
	if len(c.Groups) > MaxGroups {
		return fmt.Errorf("%d groups: at most %d", len(c.Groups), MaxGroups)
	}
	total := 0
	for i, g := range c.Groups {
		if err := ValidGroup(g); err != nil {
			return err
		}
		if i > 0 && c.Groups[i-1] >= g {
			return fmt.Errorf("groups not sorted and unique at %q", g)
		}
		total += len(g)
	}
	if total > MaxGroupsBytes {
		return fmt.Errorf("group names total %d characters: at most %d", total, MaxGroupsBytes)
	}
	if len(c.IPv4) > MaxIPv4 {
		return fmt.Errorf("%d IPv4 addresses: at most %d", len(c.IPv4), MaxIPv4)
	}
	for i, a := range c.IPv4 {
		if !a.Is4() {
			return fmt.Errorf("address %s: only IPv4 addresses go in a certificate (IPv6 ones derive from the node key)", a)
		}
		if a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return fmt.Errorf("address %s: not a unicast address", a)
		}
		if i > 0 && c.IPv4[i-1].Compare(a) >= 0 {
			return fmt.Errorf("IPv4 addresses not sorted and unique at %s", a)
		}
	}
	if c.Serial == 0 {
		return fmt.Errorf("serial is zero")
	}
	nb, na := c.NotBefore.Unix(), c.NotAfter.Unix()
	if nb < 0 || na <= nb || na-nb > int64(MaxTTL/time.Second) {
		return fmt.Errorf("validity %s to %s: must be a positive span of at most 10 years after 1970", fmtTime(c.NotBefore), fmtTime(c.NotAfter))
	}
	return nil
}

func (c *Cert) encodeBody() ([]byte, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	w := writer{b: make([]byte, 0, MaxCertBinary)}
	w.raw([]byte(certMagic))
	w.key(c.Org)
	w.str8(c.OrgName)
	w.key(c.Node)
	w.str8(c.Name)
	w.u8(len(c.Groups))
	for _, g := range c.Groups {
		w.str8(g)
	}
	w.u8(len(c.IPv4))
	for _, a := range c.IPv4 {
		b := a.As4()
		w.raw(b[:])
	}
	w.u64(c.Serial)
	w.time(c.NotBefore)
	w.time(c.NotAfter)
	return w.b, nil
}

// DecodeCert decodes the binary form (body || 64-byte signature) strictly:
// exact lengths, no trailing bytes, valid and canonical fields. It does not
// check the signature (see Verify).
func DecodeCert(b []byte) (*Cert, error) {
	if len(b) > MaxCertBinary {
		return nil, fmt.Errorf("certificate: %d bytes is longer than any valid certificate (%d)", len(b), MaxCertBinary)
	}
	body, sig, err := splitSigned(b, certMagic, "certificate")
	if err != nil {
		return nil, err
	}
	r := reader{b: body[len(certMagic):]}
	c := &Cert{}
	c.Org = r.key("organisation key")
	c.OrgName = r.str8("organisation name")
	c.Node = r.key("node key")
	c.Name = r.str8("name")
	if n := r.u8("group count"); n > 0 && n <= MaxGroups {
		c.Groups = make([]string, n)
		for i := range c.Groups {
			c.Groups[i] = r.str8("group")
		}
	} else if n > MaxGroups {
		r.fail("%d groups: at most %d", n, MaxGroups)
	}
	if n := r.u8("address count"); n > 0 && n <= MaxIPv4 {
		c.IPv4 = make([]netip.Addr, n)
		for i := range c.IPv4 {
			c.IPv4[i] = netip.AddrFrom4(r.key4("IPv4 address"))
		}
	} else if n > MaxIPv4 {
		r.fail("%d IPv4 addresses: at most %d", n, MaxIPv4)
	}
	c.Serial = r.u64("serial")
	c.NotBefore = r.time("not before")
	c.NotAfter = r.time("not after")
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d bytes after the last field", len(r.b))
	}
	if r.err != nil {
		return nil, fmt.Errorf("certificate: %w", r.err)
	}
	again, err := c.encodeBody()
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	if !bytes.Equal(again, body) {
		return nil, fmt.Errorf("certificate: %w", errNotCanonical)
	}
	c.body = cloneBytes(body)
	c.sig = cloneBytes(sig)
	return c, nil
}

// ParseCert parses the text form ("tomoe-cert:" + base64url); surrounding
// whitespace is ignored. Like DecodeCert it does not check the signature.
func ParseCert(text string) (*Cert, error) {
	b, err := decodeText(text, certTextPrefix, "certificate", MaxCertBinary)
	if err != nil {
		return nil, err
	}
	return DecodeCert(b)
}

// Binary returns the binary form: the signed body and the signature.
func (c *Cert) Binary() []byte {
	out := make([]byte, 0, len(c.body)+len(c.sig))
	return append(append(out, c.body...), c.sig...)
}

// Text returns the one-line text form, "tomoe-cert:" + base64url.
func (c *Cert) Text() string { return encodeText(certTextPrefix, c.Binary()) }

// Fingerprint is the SHA-256 of the signed body (not of the signature).
func (c *Cert) Fingerprint() [32]byte { return sha256.Sum256(c.body) }

// SerialString returns the serial as 16 lowercase hex digits.
func (c *Cert) SerialString() string { return serialString(c.Serial) }

// Verify checks, in this order, that org signed c (ErrWrongOrg), that the
// signature holds over the fields as they are now (ErrBadSignature), and
// that now lies within NotBefore-ClockSkew (ErrNotYetValid) and
// NotAfter+ClockSkew (ErrExpired). Revocation is the caller's (CRL.Revokes).
func (c *Cert) Verify(org PublicKey, now time.Time) error {
	if c.Org != org {
		return fmt.Errorf("certificate %q is from organisation %q (%s), not %s: %w", c.Name, c.OrgName, c.Org, org, ErrWrongOrg)
	}
	body, err := c.encodeBody()
	if err != nil || !bytes.Equal(body, c.body) || !verifySig(org, c.body, c.sig) {
		return fmt.Errorf("certificate %q (serial %s): %w: not signed by %s as it stands", c.Name, c.SerialString(), ErrBadSignature, org)
	}
	if now.Before(c.NotBefore.Add(-ClockSkew)) {
		return fmt.Errorf("certificate %q (serial %s) is %w: valid from %s (now %s)", c.Name, c.SerialString(), ErrNotYetValid, fmtTime(c.NotBefore), fmtTime(now))
	}
	if now.After(c.NotAfter.Add(ClockSkew)) {
		return fmt.Errorf("certificate %q (serial %s) %w at %s (now %s); sign a new one with `tomoe cert sign`", c.Name, c.SerialString(), ErrExpired, fmtTime(c.NotAfter), fmtTime(now))
	}
	return nil
}
