// Package identity owns a node's keys and the addresses derived from them.
//
// It is pure: no sockets, no config, no logging. The derivation of the node
// address and the site prefix from a public key is a contract other programs
// compute too (DESIGN.md "Identity and addresses"):
//
//	H = SHA-512("tomoe-address-v1" || public_key_bytes)
//	node address: fc, H[0:15]            (fc00::/8)
//	site prefix:  03, H[15:22], then ::/64 (0300::/8)
//	IPv4 address in a prefix P of length L <= 30, with h = 32-L host bits:
//	              v = H[22:26] as a big-endian uint32,
//	              P's network address + 1 + (v mod (2^h - 2))
package identity

import (
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	"golang.org/x/crypto/curve25519"
)

// KeySize is the length of a Curve25519 key in bytes.
const KeySize = 32

// addressLabel is the domain-separation label of the address hash (contract).
const addressLabel = "tomoe-address-v1"

// Well-known prefixes of the overlay.
var (
	// OverlayPrefix holds every node address.
	OverlayPrefix = netip.MustParsePrefix("fc00::/8")
	// SitePrefixSpace holds every site prefix.
	SitePrefixSpace = netip.MustParsePrefix("300::/8")
	// DefaultIPv4Prefix is where IPv4 addresses are derived from keys
	// unless a node's config says otherwise (tun.ipv4_prefix): the shared
	// address space of RFC 6598, which LANs rarely use.
	DefaultIPv4Prefix = netip.MustParsePrefix("100.64.0.0/10")
)

// MaxIPv4PrefixBits is the longest prefix IPv4Address derives addresses
// in: a /30 has two host addresses besides its network and broadcast
// addresses, a /31 none.
const MaxIPv4PrefixBits = 30

// PublicKey is a node's permanent Curve25519 public key. It is comparable and
// safe to print; String gives the standard base64 form that `wg pubkey` prints.
type PublicKey [KeySize]byte

// PrivateKey is a node's permanent Curve25519 private key. It is deliberately
// not comparable and never prints its bytes: String, GoString and slog all
// show "[redacted]". Use Base64 only to write the key file or hand it to the
// user who asked for it.
type PrivateKey struct {
	_ [0]func() // not comparable
	k [KeySize]byte
}

var errKeyLength = errors.New("a key is standard base64 of exactly 32 bytes (44 characters ending in '=')")

// GeneratePrivateKey returns a new random private key, clamped as `wg genkey` does.
func GeneratePrivateKey() (PrivateKey, error) {
	var k PrivateKey
	if _, err := rand.Read(k.k[:]); err != nil {
		return PrivateKey{}, fmt.Errorf("generate private key: %w", err)
	}
	k.clamp()
	return k, nil
}

func (k *PrivateKey) clamp() {
	k.k[0] &= 248
	k.k[31] = (k.k[31] & 127) | 64
}

// ParsePrivateKey parses the standard base64 form of a private key, as `wg genkey`
// prints it. Surrounding whitespace is ignored.
func ParsePrivateKey(s string) (PrivateKey, error) {
	b, err := decodeKey(s)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("private key: %w", err)
	}
	var k PrivateKey
	copy(k.k[:], b)
	if k.IsZero() {
		return PrivateKey{}, errors.New("private key: all zero")
	}
	return k, nil
}

// PrivateKeyFromBytes builds a private key from its 32 raw bytes.
func PrivateKeyFromBytes(b [KeySize]byte) PrivateKey {
	return PrivateKey{k: b}
}

// IsZero reports whether k is the zero key (unset).
func (k PrivateKey) IsZero() bool { return k.k == [KeySize]byte{} }

// Public computes the public key of k.
func (k PrivateKey) Public() PublicKey {
	var pub PublicKey
	out, err := curve25519.X25519(k.k[:], curve25519.Basepoint)
	if err != nil {
		// X25519 with the base point fails only for a zero scalar, which
		// clamping and ParsePrivateKey rule out.
		return PublicKey{}
	}
	copy(pub[:], out)
	return pub
}

// Raw returns the key bytes, for the WireGuard library and the Noise
// computations only.
func (k PrivateKey) Raw() [KeySize]byte { return k.k }

// Base64 returns the standard base64 form. Only for writing the key file or
// printing it on the explicit request of `tomoe key generate`.
func (k PrivateKey) Base64() string { return base64.StdEncoding.EncodeToString(k.k[:]) }

// String never reveals the key.
func (k PrivateKey) String() string { return "[redacted]" }

// GoString never reveals the key.
func (k PrivateKey) GoString() string { return "identity.PrivateKey{[redacted]}" }

// LogValue never reveals the key.
func (k PrivateKey) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// MarshalText refuses, so that a private key can never end up in JSON or logs by accident.
func (k PrivateKey) MarshalText() ([]byte, error) {
	return nil, errors.New("refusing to marshal a private key")
}

// ParsePublicKey parses the standard base64 form of a public key.
func ParsePublicKey(s string) (PublicKey, error) {
	b, err := decodeKey(s)
	if err != nil {
		return PublicKey{}, fmt.Errorf("public key: %w", err)
	}
	var k PublicKey
	copy(k[:], b)
	if k.IsZero() {
		return PublicKey{}, errors.New("public key: all zero")
	}
	return k, nil
}

func decodeKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("empty; " + errKeyLength.Error())
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != KeySize {
		return nil, fmt.Errorf("%q is not valid: %w", truncate(s, 60), errKeyLength)
	}
	return b, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// IsZero reports whether k is the zero key (unset).
func (k PublicKey) IsZero() bool { return k == PublicKey{} }

// String returns the standard base64 form.
func (k PublicKey) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// ShortString returns the first 8 base64 characters, for logs and tables.
func (k PublicKey) ShortString() string { return k.String()[:8] }

// MarshalText encodes the key as standard base64.
func (k PublicKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText decodes standard base64.
func (k *PublicKey) UnmarshalText(b []byte) error {
	p, err := ParsePublicKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

func (k PublicKey) hash() [sha512.Size]byte {
	h := sha512.New()
	h.Write([]byte(addressLabel))
	h.Write(k[:])
	var out [sha512.Size]byte
	h.Sum(out[:0])
	return out
}

// Address returns the node address of k: 0xfc followed by H[0:15].
func (k PublicKey) Address() netip.Addr {
	h := k.hash()
	var a [16]byte
	a[0] = 0xfc
	copy(a[1:], h[0:15])
	return netip.AddrFrom16(a)
}

// SitePrefix returns the site /64 of k: 0x03 followed by H[15:22], then ::/64.
func (k PublicKey) SitePrefix() netip.Prefix {
	h := k.hash()
	var a [16]byte
	a[0] = 0x03
	copy(a[1:8], h[15:22])
	return netip.PrefixFrom(netip.AddrFrom16(a), 64)
}

// IPv4Address returns k's IPv4 address in prefix p: with v = H[22:26] as
// a big-endian uint32 and h = 32 - p.Bits() host bits, p's network
// address + 1 + (v mod (2^h - 2)), so never p's network or broadcast
// address. p must be an IPv4 prefix of at most MaxIPv4PrefixBits bits
// without host bits (CheckIPv4Prefix).
//
// 2^h - 2 addresses make collisions likely in small prefixes (in a /24,
// 1 in 254 for two keys; the default /10 holds 4 million): two keys with
// the same address are a collision to report, never an identity.
func (k PublicKey) IPv4Address(p netip.Prefix) (netip.Addr, error) {
	if err := CheckIPv4Prefix(p); err != nil {
		return netip.Addr{}, err
	}
	h := k.hash()
	v := uint64(binary.BigEndian.Uint32(h[22:26]))
	hostBits := 32 - p.Bits()
	host := 1 + v%(1<<hostBits-2)
	base := binary.BigEndian.Uint32(p.Addr().AsSlice())
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], base+uint32(host))
	return netip.AddrFrom4(a), nil
}

// CheckIPv4Prefix reports why IPv4 addresses cannot be derived in p.
func CheckIPv4Prefix(p netip.Prefix) error {
	switch {
	case !p.IsValid() || !p.Addr().Is4():
		return fmt.Errorf("%v is not an IPv4 prefix", p)
	case p.Bits() > MaxIPv4PrefixBits:
		return fmt.Errorf("%v is longer than /%d: it has no room for derived addresses besides its network and broadcast address", p, MaxIPv4PrefixBits)
	case p.Masked() != p:
		return fmt.Errorf("%v has host bits set (did you mean %v?)", p, p.Masked())
	}
	return nil
}

// IsNodeAddress reports whether a lies in fc00::/8, where node addresses live.
func IsNodeAddress(a netip.Addr) bool {
	return a.Is6() && !a.Is4In6() && a.As16()[0] == 0xfc
}

// IsSiteAddress reports whether a lies in 0300::/8, where site prefixes live.
func IsSiteAddress(a netip.Addr) bool {
	return a.Is6() && !a.Is4In6() && a.As16()[0] == 0x03
}
