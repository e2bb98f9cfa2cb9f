package org

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// maxKeyFile bounds what ReadSigner reads: a key file is a few lines.
const maxKeyFile = 64 << 10

// Signer is an organisation's private signing key with its name, loaded
// from a key file. It never prints the key: String and GoString show the
// name and public key only. Revoke and SignPolicy keep their state in
// "<keyfile>.state" beside the key file; they are not safe for two
// processes at once (an admin runs one command at a time).
type Signer struct {
	_    [0]func() // not comparable
	name string
	key  ed25519.PrivateKey
	path string // key file; "" when read from a stream
}

// Name returns the organisation's name.
func (s *Signer) Name() string { return s.name }

// Public returns the organisation's public key.
func (s *Signer) Public() PublicKey {
	var k PublicKey
	copy(k[:], s.key.Public().(ed25519.PublicKey))
	return k
}

// String shows the organisation, never the key.
func (s *Signer) String() string { return fmt.Sprintf("org %q (%s)", s.name, s.Public()) }

// GoString shows the organisation, never the key.
func (s *Signer) GoString() string {
	return fmt.Sprintf("org.Signer{name: %q, key: [redacted]}", s.name)
}

// Init creates an organisation named name with a new signing key and
// writes its key file at path, mode 0600. It refuses to overwrite an
// existing file; path's directory must exist.
func Init(name, path string) (*Signer, error) {
	if err := ValidOrgName(name); err != nil {
		return nil, err
	}
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("organisation key file %s already exists: refusing to overwrite it (it may be the only copy of a key); choose another path or remove it first", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("organisation key file %s: %w", path, err)
	}
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, fmt.Errorf("generate organisation key: %w", err)
	}
	s := &Signer{name: name, key: ed25519.NewKeyFromSeed(seed), path: path}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# tomoe organisation signing key. Secret: whoever holds it admits members.\n")
	fmt.Fprintf(&b, "# public key: %s\n", s.Public())
	fmt.Fprintf(&b, "name = %q\n", name)
	fmt.Fprintf(&b, "private_key = %q\n", base64.StdEncoding.EncodeToString(seed))
	if err := writeAtomic(path, b.Bytes(), true); err != nil {
		return nil, fmt.Errorf("write organisation key file: %w", err)
	}
	return s, nil
}

// LoadSigner reads the key file at path.
func LoadSigner(path string) (*Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("organisation key file: %w", err)
	}
	defer f.Close()
	s, err := ReadSigner(f)
	if err != nil {
		return nil, fmt.Errorf("organisation key file %s: %w", path, err)
	}
	s.path = path
	return s, nil
}

// ReadSigner reads a key file from r: lines of `key = "value"`, blank
// lines and # comments; exactly the keys name and private_key (the
// standard base64 of the 32-byte Ed25519 seed). A Signer read this way has
// no state file, so it can sign certificates but not revoke or sign policy.
func ReadSigner(r io.Reader) (*Signer, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read organisation key: %w", err)
	}
	if len(data) > maxKeyFile {
		return nil, errors.New("organisation key file is over 64 KiB: not a key file")
	}
	vals := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, maxKeyFile+1)
	for line := 1; sc.Scan(); line++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" || t[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(t, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok {
			return nil, fmt.Errorf("line %d: expected key = \"value\"", line)
		}
		if k != "name" && k != "private_key" {
			return nil, fmt.Errorf("line %d: unknown key %q; a key file holds name and private_key", line, k)
		}
		if _, dup := vals[k]; dup {
			return nil, fmt.Errorf("line %d: %s given twice", line, k)
		}
		uq, err := strconv.Unquote(v)
		if err != nil {
			return nil, fmt.Errorf("line %d: value of %s must be a double-quoted string", line, k)
		}
		vals[k] = uq
	}
	name, ok := vals["name"]
	if !ok {
		return nil, errors.New("no name = \"...\" line: is this an organisation key file (from `tomoe org init`)?")
	}
	if err := ValidOrgName(name); err != nil {
		return nil, err
	}
	enc, ok := vals["private_key"]
	if !ok {
		return nil, errors.New("no private_key = \"...\" line: is this an organisation key file (from `tomoe org init`)?")
	}
	seed, err := base64.StdEncoding.Strict().DecodeString(enc)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, errors.New("private_key: expected standard base64 of 32 bytes (44 characters)")
	}
	return &Signer{name: name, key: ed25519.NewKeyFromSeed(seed)}, nil
}

// state is what a signer remembers between commands, in "<keyfile>.state".
type state struct {
	CRLVersion    uint64               `json:"crl_version"`
	Serials       []uint64             `json:"revoked_serials"`
	Keys          []identity.PublicKey `json:"revoked_keys"`
	PolicyVersion uint64               `json:"policy_version"`
}

func (s *Signer) statePath() (string, error) {
	if s.path == "" {
		return "", errors.New("this organisation key was read from a stream and has no state file beside it; give the key file's path")
	}
	return s.path + ".state", nil
}

// loadState reads the state file; a missing one is the empty state.
func (s *Signer) loadState() (*state, string, error) {
	p, err := s.statePath()
	if err != nil {
		return nil, "", err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return &state{}, p, nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("organisation state: %w", err)
	}
	var st state
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, "", fmt.Errorf("organisation state %s is corrupt (%v): restore it from a backup; without it new revocation lists would forget earlier revocations", p, err)
	}
	return &st, p, nil
}

func saveState(p string, st *state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := writeAtomic(p, append(b, '\n'), false); err != nil {
		return fmt.Errorf("organisation state: %w", err)
	}
	return nil
}

// writeAtomic writes data to path, mode 0600, through a temporary file in
// the same directory and a rename; with exclusive it fails if path exists.
func writeAtomic(path string, data []byte, exclusive bool) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename or link, a no-op or harmless
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if exclusive {
		// Link fails if path exists, so a file created since Init's check
		// is never replaced.
		if err := os.Link(tmp, path); err != nil {
			return err
		}
		return nil
	}
	return os.Rename(tmp, path)
}
