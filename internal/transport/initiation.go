package transport

import (
	"crypto/hmac"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"hash"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// WireGuard message layout (whitepaper section 5.4). The first byte is the
// message type; the next three are zero.
const (
	msgInitiation = 1
	msgResponse   = 2
	msgCookie     = 3
	msgTransport  = 4

	initiationSize = 148
	responseSize   = 92
	cookieSize     = 64
	transportMin   = 32

	offEphemeral = 8
	offStatic    = 40
	offTimestamp = 88
	offMAC1      = 116
	offMAC2      = 132
)

// The Noise parameters WireGuard fixes.
const (
	noiseConstruction = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
	wgIdentifier      = "WireGuard v1 zx2c4 Jason@zx2c4.com"
	labelMAC1         = "mac1----"
)

var (
	initialChainKey = blake2s.Sum256([]byte(noiseConstruction))
	initialHash     = func() [32]byte {
		h, _ := blake2s.New256(nil)
		h.Write(initialChainKey[:])
		h.Write([]byte(wgIdentifier))
		var out [32]byte
		h.Sum(out[:0])
		return out
	}()
)

var (
	errNotInitiation = errors.New("not a handshake initiation")
	errMAC1          = errors.New("handshake initiation: bad mac1")
	errDecrypt       = errors.New("handshake initiation: does not open with our key")
)

// initiationOpener recovers the initiator's static public key from a
// handshake initiation addressed to us, by running the responder's first
// Noise IK steps. It proves that the sender holds that key: the timestamp
// opens only with DH(initiator static, our static). It costs two X25519
// operations, so callers rate-limit it. It does not check the timestamp
// against replay: WireGuard does that when it consumes the message.
type initiationOpener struct {
	priv    [32]byte
	pub     [32]byte
	mac1Key [32]byte
	hash0   [32]byte // HASH(initialHash || our public key)
}

func newInitiationOpener(k identity.PrivateKey) *initiationOpener {
	o := &initiationOpener{priv: k.Raw(), pub: k.Public()}
	h, _ := blake2s.New256(nil)
	h.Write([]byte(labelMAC1))
	h.Write(o.pub[:])
	h.Sum(o.mac1Key[:0])
	o.hash0 = mixHash(initialHash, o.pub[:])
	return o
}

// checkMAC1 verifies the message's mac1, which only someone who knows our
// public key can compute. It is cheap and runs before any X25519.
func (o *initiationOpener) checkMAC1(msg []byte) bool {
	sum := macOf(o.mac1Key[:], msg[:offMAC1])
	return subtle.ConstantTimeCompare(sum[:], msg[offMAC1:offMAC2]) == 1
}

// macOf is WireGuard's MAC: keyed BLAKE2s-128.
func macOf(key, data []byte) [16]byte {
	mac, _ := blake2s.New128(key)
	mac.Write(data)
	var sum [16]byte
	mac.Sum(sum[:0])
	return sum
}

// open returns the initiator's static key.
func (o *initiationOpener) open(msg []byte) (identity.PublicKey, error) {
	if len(msg) != initiationSize || binary.LittleEndian.Uint32(msg[:4]) != msgInitiation {
		return identity.PublicKey{}, errNotInitiation
	}
	if !o.checkMAC1(msg) {
		return identity.PublicKey{}, errMAC1
	}
	ephemeral := msg[offEphemeral:offStatic]
	chainKey := kdf1(initialChainKey[:], ephemeral)
	h := mixHash(o.hash0, ephemeral)

	ss, err := curve25519.X25519(o.priv[:], ephemeral)
	if err != nil {
		return identity.PublicKey{}, errDecrypt
	}
	var key [32]byte
	chainKey, key = kdf2(chainKey[:], ss)
	static, err := aeadOpen(key, msg[offStatic:offTimestamp], h[:])
	if err != nil {
		return identity.PublicKey{}, errDecrypt
	}
	h = mixHash(h, msg[offStatic:offTimestamp])

	ss, err = curve25519.X25519(o.priv[:], static)
	if err != nil {
		return identity.PublicKey{}, errDecrypt
	}
	_, key = kdf2(chainKey[:], ss)
	if _, err := aeadOpen(key, msg[offTimestamp:offMAC1], h[:]); err != nil {
		return identity.PublicKey{}, errDecrypt
	}
	var pub identity.PublicKey
	copy(pub[:], static)
	return pub, nil
}

func aeadOpen(key [32]byte, sealed, ad []byte) ([]byte, error) {
	aead, err := chacha20poly1305.New(key[:])
	if err != nil {
		return nil, err
	}
	var nonce [chacha20poly1305.NonceSize]byte
	return aead.Open(nil, nonce[:], sealed, ad)
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
