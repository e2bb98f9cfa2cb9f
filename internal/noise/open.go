package noise

import (
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"time"

	"golang.org/x/crypto/curve25519"

	"github.com/tomoe-net/tomoe/internal/identity"
)

var (
	errNotInitiation = errors.New("not a handshake initiation")
	errMAC1          = errors.New("handshake initiation: bad mac1")
	errDecrypt       = errors.New("handshake initiation: does not open with our key")
)

// Timestamp is WireGuard's TAI64N initiation timestamp: 8 bytes of seconds
// (plus 2^62 + 10) and 4 of nanoseconds, big endian, so byte order is time
// order.
type Timestamp [12]byte

// Sub returns t - u.
func (t Timestamp) Sub(u Timestamp) time.Duration {
	secs := int64(binary.BigEndian.Uint64(t[:8]) - binary.BigEndian.Uint64(u[:8]))
	nanos := int64(binary.BigEndian.Uint32(t[8:])) - int64(binary.BigEndian.Uint32(u[8:]))
	return time.Duration(secs)*time.Second + time.Duration(nanos)
}

// Opener recovers the initiator's static public key and timestamp from a
// handshake initiation addressed to us, by running the responder's first
// Noise IK steps. It proves that the sender holds that key: the timestamp
// opens only with DH(initiator static, our static). It costs two X25519
// operations, so callers rate-limit it. It does not check the timestamp
// against replay: that is the caller's (WireGuard only remembers it while
// the peer is in the device).
type Opener struct {
	priv    [32]byte
	pub     [32]byte
	mac1Key [32]byte
	hash0   [32]byte // HASH(initialHash || our public key)
}

// NewOpener returns an Opener for initiations to the holder of k.
func NewOpener(k identity.PrivateKey) *Opener {
	o := &Opener{priv: k.Raw(), pub: k.Public()}
	o.mac1Key = MAC1Key(o.pub)
	o.hash0 = mixHash(initialHash, o.pub[:])
	return o
}

// CheckMAC1 verifies the message's mac1, which only someone who knows our
// public key can compute. It is cheap and runs before any X25519.
func (o *Opener) CheckMAC1(msg []byte) bool {
	if len(msg) != InitiationSize {
		return false
	}
	sum := MAC(o.mac1Key[:], msg[:OffMAC1])
	return subtle.ConstantTimeCompare(sum[:], msg[OffMAC1:OffMAC2]) == 1
}

// Open returns the initiator's static key and timestamp, and how many
// X25519 operations it spent (for the flood counters).
func (o *Opener) Open(msg []byte) (pub identity.PublicKey, ts Timestamp, x25519 int, err error) {
	if len(msg) != InitiationSize || binary.LittleEndian.Uint32(msg[:4]) != TypeInitiation {
		return pub, ts, 0, errNotInitiation
	}
	if !o.CheckMAC1(msg) {
		return pub, ts, 0, errMAC1
	}
	ephemeral := msg[offEphemeral:offStatic]
	chainKey := kdf1(initialChainKey[:], ephemeral)
	h := mixHash(o.hash0, ephemeral)

	ss, err := curve25519.X25519(o.priv[:], ephemeral)
	if err != nil {
		return pub, ts, 1, errDecrypt
	}
	var key [32]byte
	chainKey, key = kdf2(chainKey[:], ss)
	static, err := aeadOpen(key, msg[offStatic:offTimestamp], h[:])
	if err != nil {
		return pub, ts, 1, errDecrypt
	}
	h = mixHash(h, msg[offStatic:offTimestamp])

	ss, err = curve25519.X25519(o.priv[:], static)
	if err != nil {
		return pub, ts, 2, errDecrypt
	}
	_, key = kdf2(chainKey[:], ss)
	plain, err := aeadOpen(key, msg[offTimestamp:OffMAC1], h[:])
	if err != nil || len(plain) != len(ts) {
		return pub, ts, 2, errDecrypt
	}
	copy(pub[:], static)
	copy(ts[:], plain)
	return pub, ts, 2, nil
}
