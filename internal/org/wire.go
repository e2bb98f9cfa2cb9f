package org

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
)

// reader decodes a body field by field; the first error sticks and later
// reads return zero values, so decoders check r.err once per step.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}

func (r *reader) bytes(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.fail("truncated at %s", what)
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8(what string) int {
	b := r.bytes(1, what)
	if b == nil {
		return 0
	}
	return int(b[0])
}

func (r *reader) u32(what string) uint32 {
	b := r.bytes(4, what)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

func (r *reader) u64(what string) uint64 {
	b := r.bytes(8, what)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func (r *reader) time(what string) time.Time {
	return time.Unix(int64(r.u64(what)), 0).UTC()
}

func (r *reader) key(what string) (k [32]byte) {
	copy(k[:], r.bytes(32, what))
	return k
}

func (r *reader) key4(what string) (a [4]byte) {
	copy(a[:], r.bytes(4, what))
	return a
}

// str8 reads a string with a one-byte length prefix.
func (r *reader) str8(what string) string { return string(r.bytes(r.u8(what), what)) }

// writer appends fields in the same encoding reader reads.
type writer struct{ b []byte }

func (w *writer) u8(v int)     { w.b = append(w.b, byte(v)) }
func (w *writer) u32(v uint32) { w.b = binary.BigEndian.AppendUint32(w.b, v) }
func (w *writer) u64(v uint64) { w.b = binary.BigEndian.AppendUint64(w.b, v) }
func (w *writer) time(t time.Time) {
	w.u64(uint64(t.Unix()))
}
func (w *writer) raw(b []byte)   { w.b = append(w.b, b...) }
func (w *writer) str8(s string)  { w.u8(len(s)); w.b = append(w.b, s...) }
func (w *writer) key(k [32]byte) { w.b = append(w.b, k[:]...) }

// splitSigned splits body || signature and checks the body's magic.
func splitSigned(b []byte, magic, what string) (body, sig []byte, err error) {
	if len(b) < len(magic)+ed25519.SignatureSize {
		return nil, nil, fmt.Errorf("%s: %d bytes is too short", what, len(b))
	}
	if string(b[:len(magic)]) != magic {
		return nil, nil, fmt.Errorf("%s: wrong magic: not a %s (or a newer version this tomoe cannot read)", what, what)
	}
	n := len(b) - ed25519.SignatureSize
	return b[:n:n], b[n:], nil
}

// decodeText decodes prefix + base64url (no padding) after trimming
// whitespace; maxBinary bounds the decoded size before decoding.
func decodeText(text, prefix, what string, maxBinary int) ([]byte, error) {
	s := strings.TrimSpace(text)
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return nil, fmt.Errorf("%s: expected text starting with %q, got %q", what, prefix, truncate(s, 40))
	}
	if base64.RawURLEncoding.DecodedLen(len(rest)) > maxBinary {
		return nil, fmt.Errorf("%s: %d characters is longer than any valid %s", what, len(s), what)
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("%s: after %q expect unpadded base64url (A-Z a-z 0-9 - _): %v; was the text cut or changed in copying?", what, prefix, err)
	}
	return b, nil
}

func encodeText(prefix string, b []byte) string {
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// verifySig checks sig over body with org's key.
func verifySig(org PublicKey, body, sig []byte) bool {
	return len(sig) == ed25519.SignatureSize && ed25519.Verify(ed25519.PublicKey(org[:]), body, sig)
}

var errNotCanonical = errors.New("not in canonical form")

func cloneBytes(b []byte) []byte { return append([]byte(nil), b...) }
