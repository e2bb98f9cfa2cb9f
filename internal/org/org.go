// Package org owns organisations: an organisation's Ed25519 signing key,
// the membership certificates it signs (binding a node's X25519 key to a
// name, groups and IPv4 addresses), its signed revocation lists and its
// signed policy documents. Nodes verify all of them offline against the
// organisation's public key; no server is trusted, only the signature.
//
// It is pure apart from the signer's key and state files: no sockets, no
// config, no logging.
//
// Wire format (a contract, DESIGN.md "Organisations"): every signed object
// is body || signature, where body begins with a magic string naming the
// kind and version ("tomoe-cert-v1\x00", "tomoe-crl-v1\x00",
// "tomoe-policy-v1\x00") and the signature is Ed25519 over the whole body,
// so the magic doubles as the signing domain. Fields follow in a fixed
// order: fixed-size keys raw, strings and lists with a length or count
// prefix, integers big-endian, times as int64 unix seconds. Decoders are
// strict: an accepted encoding is the only one its value has, so
// re-encoding a decoded value gives the same bytes.
package org

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Sentinel errors; the errors returned wrap them with a readable message.
var (
	ErrWrongOrg     = errors.New("signed by another organisation")
	ErrBadSignature = errors.New("bad signature")
	ErrExpired      = errors.New("expired")
	ErrNotYetValid  = errors.New("not yet valid")
	ErrRevoked      = errors.New("revoked")
)

// ClockSkew is how far apart the clocks of the signer and a verifier may be:
// a certificate is accepted from NotBefore-ClockSkew to NotAfter+ClockSkew.
const ClockSkew = 5 * time.Minute

// publicKeyPrefix starts the text form of an organisation's public key.
const publicKeyPrefix = "tomoe-org:"

// PublicKey is an organisation's Ed25519 public key. Its text form is
// "tomoe-org:" followed by the standard base64 of its 32 bytes, so that it
// cannot be mistaken for a node's WireGuard key.
type PublicKey [ed25519.PublicKeySize]byte

// ParsePublicKey parses the text form of an organisation key; surrounding
// whitespace is ignored.
func ParsePublicKey(s string) (PublicKey, error) {
	s = strings.TrimSpace(s)
	rest, ok := strings.CutPrefix(s, publicKeyPrefix)
	if !ok {
		if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) == 32 {
			return PublicKey{}, fmt.Errorf("organisation key %q: this looks like a node's WireGuard key; an organisation key is %q followed by 44 base64 characters, as `tomoe org public` prints it", truncate(s, 60), publicKeyPrefix)
		}
		return PublicKey{}, fmt.Errorf("organisation key %q: expected %q followed by 44 base64 characters, as `tomoe org public` prints it", truncate(s, 60), publicKeyPrefix)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(rest)
	if err != nil || len(b) != len(PublicKey{}) {
		return PublicKey{}, fmt.Errorf("organisation key %q: after %q expect standard base64 of exactly 32 bytes (44 characters ending in '=')", truncate(s, 60), publicKeyPrefix)
	}
	var k PublicKey
	copy(k[:], b)
	if k.IsZero() {
		return PublicKey{}, errors.New("organisation key: all zero")
	}
	return k, nil
}

// String returns the text form, "tomoe-org:" + base64.
func (k PublicKey) String() string {
	return publicKeyPrefix + base64.StdEncoding.EncodeToString(k[:])
}

// MarshalText encodes the text form.
func (k PublicKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText decodes the text form (see ParsePublicKey).
func (k *PublicKey) UnmarshalText(b []byte) error {
	p, err := ParsePublicKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// IsZero reports whether k is unset.
func (k PublicKey) IsZero() bool { return k == PublicKey{} }

// Name limits.
const (
	MaxOrgNameLen  = 63
	MaxGroupLen    = 63
	MaxCertNameLen = 128
)

// ValidOrgName checks an organisation name: 1-63 characters of [a-z0-9-],
// starting with a letter or digit.
func ValidOrgName(s string) error {
	if s == "" || len(s) > MaxOrgNameLen {
		return fmt.Errorf("organisation name %q: must be 1-%d characters of a-z, 0-9 and '-'", truncate(s, 80), MaxOrgNameLen)
	}
	if s[0] == '-' {
		return fmt.Errorf("organisation name %q: must start with a letter or digit", s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isLowerAlnum(c) && c != '-' {
			return fmt.Errorf("organisation name %q: character %q not allowed; use a-z, 0-9 and '-'", s, c)
		}
	}
	return nil
}

// ValidGroup checks a group name: 1-63 characters of [a-z0-9._-].
func ValidGroup(s string) error {
	if s == "" || len(s) > MaxGroupLen {
		return fmt.Errorf("group %q: must be 1-%d characters of a-z, 0-9, '.', '_' and '-'", truncate(s, 80), MaxGroupLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isLowerAlnum(c) && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("group %q: character %q not allowed; use a-z, 0-9, '.', '_' and '-'", s, c)
		}
	}
	return nil
}

// ValidCertName checks the name a certificate gives a node in organisation
// org: 1-128 characters of [a-z0-9@._+-] whose last label (after the last
// '.' or '@') is the organisation's name, as in "alice@sales.acme" or
// "web1.acme". The organisation name alone is not a member name. This makes
// names unambiguous across the organisations a node trusts.
func ValidCertName(org, name string) error {
	if name == "" || len(name) > MaxCertNameLen {
		return fmt.Errorf("name %q: must be 1-%d characters of a-z, 0-9, '@', '.', '_', '+' and '-'", truncate(name, 80), MaxCertNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isLowerAlnum(c) && !strings.ContainsRune("@._+-", rune(c)) {
			return fmt.Errorf("name %q: character %q not allowed; use a-z, 0-9, '@', '.', '_', '+' and '-'", name, c)
		}
	}
	i := strings.LastIndexAny(name, ".@")
	if i <= 0 || name[i+1:] != org {
		return fmt.Errorf("name %q: must end in \".%s\" or \"@%s\" (a name within organisation %q), e.g. \"web1.%s\"", name, org, org, org, org)
	}
	for j := 0; j < len(name); j++ {
		if (name[j] == '.' || name[j] == '@') && (j == 0 || name[j-1] == '.' || name[j-1] == '@') {
			return fmt.Errorf("name %q: empty label before %q; labels between '.' and '@' need at least one character", name, name[j:])
		}
	}
	return nil
}

func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

// SerialString formats a certificate serial as 16 lowercase hex digits.
func serialString(v uint64) string { return fmt.Sprintf("%016x", v) }

// ParseSerial parses a certificate serial: 1-16 hex digits (as SerialString
// prints 16), non-zero.
func ParseSerial(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 16 {
		return 0, fmt.Errorf("serial %q: expected 16 hex digits, as `tomoe cert show` prints it", truncate(s, 60))
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("serial %q: expected 16 hex digits, as `tomoe cert show` prints it", s)
	}
	if v == 0 {
		return 0, fmt.Errorf("serial %q: zero is never a serial", s)
	}
	return v, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// fmtTime formats a time for messages.
func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
