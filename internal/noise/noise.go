// Package noise holds the parts of WireGuard's handshake (Noise IK, the
// whitepaper's section 5.4) that tomoe needs outside wireguard-go: opening
// a handshake initiation as the responder would, far enough to learn who
// sent it and when (the Bind does this before WireGuard sees the message),
// and building one as an initiator would (tests and the flood benchmark).
// It adds no cryptography: the constructions and constants are
// WireGuard's, checked against wireguard-go in the tests.
package noise

import (
	"crypto/hmac"
	"hash"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
)

// WireGuard message types (the first byte; the next three are zero) and
// sizes.
const (
	TypeInitiation = 1
	TypeResponse   = 2
	TypeCookie     = 3
	TypeTransport  = 4

	InitiationSize = 148
	ResponseSize   = 92
	CookieSize     = 64
	TransportMin   = 32
)

// Offsets in an initiation.
const (
	offSender    = 4
	offEphemeral = 8
	offStatic    = 40
	offTimestamp = 88
	OffMAC1      = 116
	OffMAC2      = 132
)

// The Noise parameters WireGuard fixes.
const (
	construction = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
	identifier   = "WireGuard v1 zx2c4 Jason@zx2c4.com"
	labelMAC1    = "mac1----"
	labelCookie  = "cookie--"
)

var (
	initialChainKey = blake2s.Sum256([]byte(construction))
	initialHash     = mixHash(initialChainKey, []byte(identifier))
)

// MAC is WireGuard's MAC: keyed BLAKE2s-128.
func MAC(key, data []byte) [16]byte {
	mac, _ := blake2s.New128(key)
	mac.Write(data)
	var sum [16]byte
	mac.Sum(sum[:0])
	return sum
}

// MAC1Key is the key of mac1 in messages to the holder of pub.
func MAC1Key(pub [32]byte) [32]byte {
	return blake2s.Sum256(append([]byte(labelMAC1), pub[:]...))
}

func cookieKey(pub [32]byte) [32]byte {
	return blake2s.Sum256(append([]byte(labelCookie), pub[:]...))
}

func mixHash(h [32]byte, data []byte) [32]byte {
	d, _ := blake2s.New256(nil)
	d.Write(h[:])
	d.Write(data)
	var out [32]byte
	d.Sum(out[:0])
	return out
}

func newBlake2s() hash.Hash {
	h, _ := blake2s.New256(nil)
	return h
}

func hmacBlake2s(key []byte, in ...[]byte) [32]byte {
	mac := hmac.New(newBlake2s, key)
	for _, b := range in {
		mac.Write(b)
	}
	var out [32]byte
	mac.Sum(out[:0])
	return out
}

// kdf1 and kdf2 are WireGuard's HKDF over HMAC-BLAKE2s.
func kdf1(key, input []byte) [32]byte {
	prk := hmacBlake2s(key, input)
	return hmacBlake2s(prk[:], []byte{1})
}

func kdf2(key, input []byte) (t1, t2 [32]byte) {
	prk := hmacBlake2s(key, input)
	t1 = hmacBlake2s(prk[:], []byte{1})
	t2 = hmacBlake2s(prk[:], t1[:], []byte{2})
	return t1, t2
}

var zeroNonce [chacha20poly1305.NonceSize]byte

func aeadOpen(key [32]byte, sealed, ad []byte) ([]byte, error) {
	aead, err := chacha20poly1305.New(key[:])
	if err != nil {
		return nil, err
	}
	return aead.Open(nil, zeroNonce[:], sealed, ad)
}

func aeadSeal(dst []byte, key [32]byte, plain, ad []byte) []byte {
	aead, _ := chacha20poly1305.New(key[:])
	return aead.Seal(dst, zeroNonce[:], plain, ad)
}
