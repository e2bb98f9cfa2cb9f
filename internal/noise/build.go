package noise

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// TimestampOf is t as WireGuard stamps initiations (TAI64N).
func TimestampOf(t time.Time) Timestamp {
	var ts Timestamp
	binary.BigEndian.PutUint64(ts[:8], uint64(t.Unix())+(1<<62)+10)
	binary.BigEndian.PutUint32(ts[8:], uint32(t.Nanosecond()))
	return ts
}

// Initiation builds the first handshake message from the holder of from to
// the holder of to, stamped ts, with sender index sender and a valid mac1
// (mac2 zero: see SetMAC2). It is what a WireGuard initiator sends; tomoe
// itself lets wireguard-go do that, and uses this in tests and to measure
// floods.
func Initiation(from identity.PrivateKey, to identity.PublicKey, ts Timestamp, sender uint32) ([]byte, error) {
	var eph [32]byte
	if _, err := rand.Read(eph[:]); err != nil {
		return nil, err
	}
	ephPub, err := curve25519.X25519(eph[:], curve25519.Basepoint)
	if err != nil {
		return nil, err
	}
	msg := make([]byte, InitiationSize)
	binary.LittleEndian.PutUint32(msg[:4], TypeInitiation)
	binary.LittleEndian.PutUint32(msg[offSender:], sender)
	copy(msg[offEphemeral:offStatic], ephPub)

	chainKey := kdf1(initialChainKey[:], ephPub)
	h := mixHash(mixHash(initialHash, to[:]), ephPub)
	ss, err := curve25519.X25519(eph[:], to[:])
	if err != nil {
		return nil, err
	}
	var key [32]byte
	chainKey, key = kdf2(chainKey[:], ss)
	pub := from.Public()
	aeadSeal(msg[offStatic:offStatic], key, pub[:], h[:])
	h = mixHash(h, msg[offStatic:offTimestamp])

	priv := from.Raw()
	ss, err = curve25519.X25519(priv[:], to[:])
	if err != nil {
		return nil, err
	}
	_, key = kdf2(chainKey[:], ss)
	aeadSeal(msg[offTimestamp:offTimestamp], key, ts[:], h[:])

	k := MAC1Key(to)
	mac1 := MAC(k[:], msg[:OffMAC1])
	copy(msg[OffMAC1:OffMAC2], mac1[:])
	return msg, nil
}

// Cookie is what a cookie reply carries: the key of mac2 for messages from
// the address it was sent to, for a while.
type Cookie [16]byte

// OpenCookieReply decrypts a cookie reply from the holder of from to an
// initiation msg we sent (its mac1 is the reply's associated data).
func OpenCookieReply(reply []byte, from identity.PublicKey, msg []byte) (Cookie, error) {
	var c Cookie
	if len(reply) != CookieSize || binary.LittleEndian.Uint32(reply[:4]) != TypeCookie || len(msg) != InitiationSize {
		return c, errors.New("not a cookie reply to this initiation")
	}
	k := cookieKey(from)
	aead, _ := chacha20poly1305.NewX(k[:])
	plain, err := aead.Open(nil, reply[8:32], reply[32:64], msg[OffMAC1:OffMAC2])
	if err != nil || len(plain) != len(c) {
		return c, errors.New("cookie reply does not open")
	}
	copy(c[:], plain)
	return c, nil
}

// SetMAC2 puts the mac2 of cookie into msg (after its mac1 is set).
func SetMAC2(msg []byte, c Cookie) {
	mac2 := MAC(c[:], msg[:OffMAC2])
	copy(msg[OffMAC2:], mac2[:])
}
