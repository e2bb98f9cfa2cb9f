package keyenc

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"filippo.io/age/armor"

	"github.com/tomoe-net/tomoe/internal/identity"
)

func init() {
	// 2^4 instead of 2^18: the tests are about the format, not the cost
	// (which the file carries, so decryption follows it), and some decrypt
	// hundreds of altered files.
	ScryptWorkFactor = 4
}

// realCredential is what systemd-creds 252 wrote for "hello" with
// --with-key=tpm2-absent --name=tomoe-key (null key: a sample of the form,
// not a secret).
const realCredential = `BYRp2vb1QySABUnaD46i+yAAAAABAAAADAAAABAAAAC7xAkJ99CXEL6D3qwAAAAAvjDcXy7J7l/yEZD
U/leqJKFp20BNJbg79DFRSAixRqigofgELouSUODO3ICSyMAPA+lRCYNy
`

func newKey(t testing.TB) identity.PrivateKey {
	t.Helper()
	k, err := identity.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// binaryAge encrypts plain with passphrase as a binary (not armored) age file.
func binaryAge(t testing.TB, plain, passphrase string) []byte {
	t.Helper()
	r, err := age.NewScryptRecipient(passphrase)
	if err != nil {
		t.Fatal(err)
	}
	r.SetWorkFactor(4)
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, plain)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDetect(t *testing.T) {
	k := newKey(t)
	armored, err := EncryptPassphrase(k, []byte("pass"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want Format
	}{
		{"plain", []byte(k.Base64() + "\n"), Plain},
		{"plain, spaces and CRLF", []byte("  " + k.Base64() + "\r\n\n"), Plain},
		{"armored age", armored, Age},
		{"armored age after blank lines", append([]byte("\n\n"), armored...), Age},
		{"binary age", binaryAge(t, k.Base64()+"\n", "pass"), Age},
		{"systemd credential", []byte(realCredential), SystemdCred},
		{"systemd credential on one line", []byte(strings.ReplaceAll(realCredential, "\n", "")), SystemdCred},
		{"empty", nil, Unknown},
		{"whitespace", []byte(" \n\t"), Unknown},
		{"short key", []byte("AAAA"), Unknown},
		{"key of 33 bytes", []byte("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"), Unknown},
		{"text", []byte("hello world, this is not a key at all, not even close to one, no\n"), Unknown},
		{"age intro after space", []byte(" age-encryption.org/v1\n"), Unknown},
		{"binary junk", []byte{0, 1, 2, 0xff, 0xfe}, Unknown},
	} {
		if got := Detect(tc.in); got != tc.want {
			t.Errorf("%s: Detect = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPassphraseRoundTrip(t *testing.T) {
	k := newKey(t)
	data, err := EncryptPassphrase(k, []byte("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(k.Base64())) {
		t.Fatal("the encrypted file holds the key in clear")
	}
	if !bytes.HasPrefix(data, []byte(armor.Header)) {
		t.Fatalf("not armored: %q", data[:40])
	}
	got, err := DecryptPassphrase(data, []byte("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Public() != k.Public() {
		t.Fatal("decrypted a different key")
	}
	// The file is a standard age file: age itself opens it.
	id, _ := age.NewScryptIdentity("correct horse")
	r, err := age.Decrypt(armor.NewReader(bytes.NewReader(data)), id)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(r)
	if string(plain) != k.Base64()+"\n" {
		t.Fatal("age's plaintext is not the key line")
	}
	// And tomoe opens what age -p writes (binary).
	got, err = DecryptPassphrase(binaryAge(t, k.Base64()+"\n", "pw"), []byte("pw"))
	if err != nil || got.Public() != k.Public() {
		t.Fatalf("binary age file: %v", err)
	}
	// Two encryptions differ (random salt and file key).
	again, _ := EncryptPassphrase(k, []byte("correct horse"))
	if bytes.Equal(again, data) {
		t.Fatal("two encryptions are identical")
	}
}

func TestWrongPassphrase(t *testing.T) {
	data, err := EncryptPassphrase(newKey(t), []byte("right"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"wrong", "righ", "right\n", "Right"} {
		if _, err := DecryptPassphrase(data, []byte(p)); !errors.Is(err, ErrWrongPassphrase) {
			t.Errorf("passphrase %q: err = %v, want ErrWrongPassphrase", p, err)
		}
	}
	if _, err := DecryptPassphrase(data, nil); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("empty passphrase: %v", err)
	}
	if _, err := EncryptPassphrase(newKey(t), nil); err == nil {
		t.Error("encrypted with an empty passphrase")
	}
}

// Every byte of a binary file altered in turn, and every truncation: never
// a key, never a panic; the payload's and the header MAC's damage is
// ErrDamaged, the scrypt stanza's may read as a wrong passphrase.
func TestTamperedAndTruncated(t *testing.T) {
	k := newKey(t)
	data := binaryAge(t, k.Base64()+"\n", "pw")
	hdrEnd := bytes.Index(data, []byte("\n---")) // the header MAC line
	for i := range data {
		bad := bytes.Clone(data)
		bad[i] ^= 0x01
		_, err := DecryptPassphrase(bad, []byte("pw"))
		if err == nil {
			t.Fatalf("byte %d altered: decrypted", i)
		}
		if i > hdrEnd && !errors.Is(err, ErrDamaged) {
			t.Errorf("byte %d (after the stanza) altered: %v, want ErrDamaged", i, err)
		}
		if !errors.Is(err, ErrDamaged) && !errors.Is(err, ErrWrongPassphrase) {
			t.Errorf("byte %d altered: %v", i, err)
		}
	}
	for n := range len(data) {
		_, err := DecryptPassphrase(data[:n], []byte("pw"))
		if err == nil {
			t.Fatalf("truncated to %d bytes: decrypted", n)
		}
	}
	armored, _ := EncryptPassphrase(k, []byte("pw"))
	for n := range len(armored) - 1 { // less its final newline, it is whole
		if _, err := DecryptPassphrase(armored[:n], []byte("pw")); err == nil {
			t.Fatalf("armored, truncated to %d bytes: decrypted", n)
		}
	}
	// A payload that decrypts, but to something else than a key.
	_, err := DecryptPassphrase(binaryAge(t, "not a key\n", "pw"), []byte("pw"))
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "not to a key") {
		t.Errorf("payload not a key: %v", err)
	}
	_, err = DecryptPassphrase(binaryAge(t, strings.Repeat("x", 5000), "pw"), []byte("pw"))
	if !errors.Is(err, ErrDamaged) {
		t.Errorf("long payload: %v", err)
	}
}

func TestNotPassphraseEncrypted(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, _ := age.Encrypt(&buf, id.Recipient())
	io.WriteString(w, newKey(t).Base64()+"\n")
	w.Close()
	_, err = DecryptPassphrase(buf.Bytes(), []byte("pw"))
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "not with a passphrase") {
		t.Errorf("age recipient file: %v", err)
	}
}

func TestReadPassphraseFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pass")
	for _, tc := range []struct{ content, want string }{
		{"secret\n", "secret"},
		{"secret", "secret"},
		{"secret\r\n", "secret"},
		{"two words \nsecond line ignored\n", "two words "},
	} {
		os.WriteFile(path, []byte(tc.content), 0o600)
		got, err := ReadPassphraseFile(path)
		if err != nil || string(got) != tc.want {
			t.Errorf("%q: got %q, %v; want %q", tc.content, got, err, tc.want)
		}
	}
	os.WriteFile(path, []byte("\nsecret\n"), 0o600)
	if _, err := ReadPassphraseFile(path); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty first line: %v", err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644} {
		os.WriteFile(path, []byte("secret\n"), 0o600)
		os.Chmod(path, mode)
		if _, err := ReadPassphraseFile(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
	os.Chmod(path, 0o400)
	if _, err := ReadPassphraseFile(path); err != nil {
		t.Errorf("mode 0400: %v", err)
	}
	if _, err := ReadPassphraseFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file read")
	}
}

func TestNewPassphrase(t *testing.T) {
	answers := func(a ...string) Prompt {
		return func(string) ([]byte, error) {
			s := a[0]
			a = a[1:]
			return []byte(s), nil
		}
	}
	if p, err := NewPassphrase(answers("abc", "abc")); err != nil || string(p) != "abc" {
		t.Errorf("same twice: %q, %v", p, err)
	}
	if _, err := NewPassphrase(answers("abc", "abd")); err == nil || !strings.Contains(err.Error(), "differ") {
		t.Errorf("different: %v", err)
	}
	if _, err := NewPassphrase(answers("", "")); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty: %v", err)
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.key.age")
	if err := WriteFile(path, []byte("one"), false); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path, "one")
	err := WriteFile(path, []byte("two"), false)
	if err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("overwrote without force: %v", err)
	}
	checkFile(t, path, "one")
	os.Chmod(path, 0o644)
	if err := WriteFile(path, []byte("three"), true); err != nil {
		t.Fatal(err)
	}
	checkFile(t, path, "three")
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("left files behind: %v", ents)
	}
	if err := WriteFile(filepath.Join(dir, "no", "such"), []byte("x"), false); err == nil {
		t.Error("wrote into a missing directory")
	}
}

func checkFile(t *testing.T, path, want string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %04o, want 0600", path, fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(path); string(b) != want {
		t.Errorf("%s holds %q, want %q", path, b, want)
	}
}

func FuzzDetect(f *testing.F) {
	f.Add([]byte(realCredential))
	f.Add([]byte("age-encryption.org/v1\n-> scrypt x 10\n"))
	f.Add([]byte(armor.Header + "\n"))
	f.Add([]byte("yAnz5gSjJ6lCx3Mh3Fe0aSRYZ0Gdj3ekVn5xOqjNWVY=\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		switch Detect(b) {
		case Plain:
			if _, err := identity.ParsePrivateKey(strings.TrimSpace(string(b))); err != nil {
				t.Fatalf("Plain, but does not parse: %v", err)
			}
		case Unknown, Age, SystemdCred:
		default:
			t.Fatal("no such format")
		}
	})
}
