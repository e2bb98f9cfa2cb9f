// Package keyenc owns the node's private key encrypted at rest: the three
// forms a key file may take (the plain base64 line, an age file encrypted
// with a passphrase, a systemd credential), telling them apart, encrypting
// a key into them, and opening a key file from the sources a node has (a
// passphrase file, systemd's $CREDENTIALS_DIRECTORY, systemd-creds, a
// terminal).
//
// A decrypted key lives only in memory: nothing here writes it to disk or
// logs it. Buffers that held a passphrase or the decrypted key line are
// zeroed after use; the age library and identity.PrivateKey keep copies
// that Go gives no way to wipe, so this is damage limitation, not a
// guarantee.
//
// The formats are standard ones, so a user can recover the key without
// tomoe: `age -d FILE` opens a passphrase-encrypted key, and
// `systemd-creds decrypt --name=tomoe-key FILE -` a credential.
package keyenc

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"

	"filippo.io/age"
	"filippo.io/age/armor"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// Format is what a key file holds.
type Format uint8

const (
	// Unknown is anything else; it is read as a plain key, whose parser
	// says what is wrong.
	Unknown Format = iota
	// Plain is the key's base64 line, as `tomoe key generate` prints it.
	Plain
	// Age is an age file (binary, or armored as tomoe writes it)
	// encrypted with a passphrase (age's scrypt recipient).
	Age
	// SystemdCred is a systemd credential: the base64 text that
	// `systemd-creds encrypt` writes, longer than a key.
	SystemdCred
)

func (f Format) String() string {
	switch f {
	case Plain:
		return "plain"
	case Age:
		return "age (passphrase)"
	case SystemdCred:
		return "systemd credential"
	}
	return "unknown"
}

// ageIntro starts every binary age file (age-encryption.org/v1).
const ageIntro = "age-encryption.org/v1\n"

// minCredential is the fewest bytes a systemd credential decodes to: its
// header alone (a 16-byte key-type ID and four 4-byte sizes) is 32 bytes,
// then come the IV, the name and times, the ciphertext and a 16-byte tag.
// A key decodes to 32, so anything this long is not one.
const minCredential = 64

// Detect tells what b, a key file's contents, holds. It looks only at the
// form (no decryption) and never fails: any bytes give a Format.
func Detect(b []byte) Format {
	if bytes.HasPrefix(b, []byte(ageIntro)) {
		return Age
	}
	t := bytes.TrimLeft(b, " \t\r\n")
	if bytes.HasPrefix(t, []byte(armor.Header)) {
		return Age
	}
	if _, err := identity.ParsePrivateKey(string(bytes.TrimSpace(b))); err == nil {
		return Plain
	}
	if n, ok := base64Text(t); ok && n >= minCredential {
		return SystemdCred
	}
	return Unknown
}

// base64Text reports whether b is standard base64 once ASCII whitespace is
// removed (systemd-creds wraps its lines), and how many bytes it decodes to.
func base64Text(b []byte) (int, bool) {
	compact := make([]byte, 0, len(b))
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		compact = append(compact, c)
	}
	if len(compact) == 0 {
		return 0, false
	}
	dst := make([]byte, base64.StdEncoding.DecodedLen(len(compact)))
	n, err := base64.StdEncoding.Decode(dst, compact)
	if err != nil {
		return 0, false
	}
	return n, true
}

// ScryptWorkFactor is the scrypt cost (log2 N) EncryptPassphrase uses:
// age's own default, about a second and 256 MiB here. Tests lower it.
var ScryptWorkFactor = 18

// maxKeyPlaintext bounds what a decrypted key file may hold: a key line is
// 45 bytes.
const maxKeyPlaintext = 1024

// ErrWrongPassphrase is returned when the passphrase does not open an age
// key file (or the part of its header that the passphrase opens was altered).
var ErrWrongPassphrase = errors.New("wrong passphrase")

// ErrDamaged is returned when an encrypted key file cannot be read or
// decrypted for another reason than the passphrase: truncated, altered,
// not made by tomoe key encrypt.
var ErrDamaged = errors.New("the file is damaged or was altered")

// EncryptPassphrase returns key encrypted with passphrase as an armored age
// file (age's scrypt recipient, work factor ScryptWorkFactor). The
// plaintext inside is the key's base64 line, so `age -d` gives back a
// plain key file.
func EncryptPassphrase(key identity.PrivateKey, passphrase []byte) ([]byte, error) {
	if len(passphrase) == 0 {
		return nil, errors.New("empty passphrase")
	}
	r, err := age.NewScryptRecipient(string(passphrase))
	if err != nil {
		return nil, fmt.Errorf("age: %w", err)
	}
	r.SetWorkFactor(ScryptWorkFactor)
	var buf bytes.Buffer
	a := armor.NewWriter(&buf)
	w, err := age.Encrypt(a, r)
	if err != nil {
		return nil, fmt.Errorf("age: %w", err)
	}
	line := []byte(key.Base64() + "\n")
	defer clear(line)
	if _, err := w.Write(line); err != nil {
		return nil, fmt.Errorf("age: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("age: %w", err)
	}
	if err := a.Close(); err != nil {
		return nil, fmt.Errorf("age: %w", err)
	}
	return buf.Bytes(), nil
}

// DecryptPassphrase opens data, an age file (binary or armored) that
// EncryptPassphrase or `age -p` made, with passphrase. Errors wrap
// ErrWrongPassphrase or ErrDamaged.
func DecryptPassphrase(data, passphrase []byte) (identity.PrivateKey, error) {
	if len(passphrase) == 0 {
		return identity.PrivateKey{}, fmt.Errorf("%w (it is empty)", ErrWrongPassphrase)
	}
	id, err := age.NewScryptIdentity(string(passphrase))
	if err != nil {
		return identity.PrivateKey{}, fmt.Errorf("age: %w", err)
	}
	var src io.Reader = bytes.NewReader(data)
	if !bytes.HasPrefix(data, []byte(ageIntro)) {
		src = armor.NewReader(src)
	}
	r, err := age.Decrypt(src, id)
	if err != nil {
		var noMatch *age.NoIdentityMatchError
		if errors.As(err, &noMatch) {
			if !scryptHeader(data) {
				return identity.PrivateKey{}, fmt.Errorf("%w: it is encrypted to age recipients, not with a passphrase; tomoe opens only passphrase-encrypted keys (age -p, tomoe key encrypt)", ErrDamaged)
			}
			return identity.PrivateKey{}, ErrWrongPassphrase
		}
		return identity.PrivateKey{}, fmt.Errorf("%w (%v)", ErrDamaged, err)
	}
	plain, err := io.ReadAll(io.LimitReader(r, maxKeyPlaintext+1))
	defer clear(plain)
	if err != nil {
		return identity.PrivateKey{}, fmt.Errorf("%w (%v)", ErrDamaged, err)
	}
	if len(plain) > maxKeyPlaintext {
		return identity.PrivateKey{}, fmt.Errorf("%w: it decrypts to more than a key", ErrDamaged)
	}
	key, err := identity.ParsePrivateKey(string(bytes.TrimSpace(plain)))
	if err != nil {
		return identity.PrivateKey{}, fmt.Errorf("%w: it decrypts, but not to a key (%v)", ErrDamaged, err)
	}
	return key, nil
}

// scryptHeader reports whether the age file data has a scrypt stanza, that
// is, whether it was encrypted with a passphrase.
func scryptHeader(data []byte) bool {
	var src io.Reader = bytes.NewReader(data)
	if !bytes.HasPrefix(data, []byte(ageIntro)) {
		src = armor.NewReader(src)
	}
	hdr, err := age.ExtractHeader(src)
	if err != nil {
		return false
	}
	return bytes.Contains(hdr, []byte("\n-> scrypt "))
}
