package keyenc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/tomoe-net/tomoe/internal/fileperm"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// Prompt asks the user a question (without echoing the answer) and returns
// the answer; the caller zeroes it after use.
type Prompt func(question string) ([]byte, error)

// Sources are where a node finds what opens an encrypted key file.
type Sources struct {
	// PassphraseFile (the config's key_passphrase_file) holds the
	// passphrase of an age key file on its first line. It must pass the
	// key file's own permission checks (fileperm.Secret).
	PassphraseFile string
	// CredentialsDir is systemd's $CREDENTIALS_DIRECTORY: when it holds
	// tomoe-key, that is the decrypted key of a credential key file.
	CredentialsDir string
	// Prompt, if not nil, asks for the passphrase when no passphrase
	// file is set (tomoe up started on a terminal).
	Prompt Prompt
	// SystemdCreds decrypts a credential key file when systemd has not
	// (no $CREDENTIALS_DIRECTORY/tomoe-key).
	SystemdCreds SystemdCreds
}

// Loaded is a key file opened.
type Loaded struct {
	Key identity.PrivateKey
	// Created: the file did not exist and a plain key was made.
	Created bool
	Format  Format
	// From says what opened an encrypted key, for the log
	// ("key_passphrase_file /etc/tomoe/pass", "the terminal", ...).
	From string
}

// decryptTimeout bounds a run of systemd-creds (a TPM2 can be slow).
const decryptTimeout = 60 * time.Second

// LoadOrCreate opens the key file at path in whatever form it has, with
// the first source that applies:
//   - a plain key: as it is;
//   - an age file: the passphrase in src.PassphraseFile, else src.Prompt;
//   - a systemd credential: src.CredentialsDir/tomoe-key (systemd
//     decrypted it for the unit), else systemd-creds decrypt.
//
// The key file itself must pass fileperm's Secret checks in every form. A
// missing file is created with a new plain key (mode 0600), as
// identity.LoadOrCreateKeyFile does, except when src.PassphraseFile is set:
// the user wants an encrypted key, and tomoe will not write a plain one in
// its place nor choose a passphrase for them.
func LoadOrCreate(path string, src Sources) (Loaded, error) {
	b, err := fileperm.ReadFile(path, "key file", fileperm.Secret)
	defer clear(b)
	switch {
	case errors.Is(err, fs.ErrNotExist) && src.PassphraseFile != "":
		return Loaded{}, fmt.Errorf("key file %s does not exist, and key_passphrase_file is set, so tomoe will not create a plain key in its place: create the encrypted key with: tomoe key generate | tomoe key encrypt --passphrase-file %s --out %s", path, src.PassphraseFile, path)
	case errors.Is(err, fs.ErrNotExist):
		key, created, err := identity.LoadOrCreateKeyFile(path)
		return Loaded{Key: key, Created: created, Format: Plain}, err
	case err != nil:
		return Loaded{}, err
	}
	return Open(path, b, src)
}

// Open opens b, the contents of the key file at path (named in errors),
// as LoadOrCreate does.
func Open(path string, b []byte, src Sources) (Loaded, error) {
	switch f := Detect(b); f {
	case Age:
		return openAge(path, b, src)
	case SystemdCred:
		return openCredential(path, b, src)
	default:
		key, err := identity.ParsePrivateKey(string(bytes.TrimSpace(b)))
		if err != nil {
			return Loaded{}, fmt.Errorf("key file %s: %w (a key file holds a key's base64 line, an age file from tomoe key encrypt, or a systemd credential)", path, err)
		}
		return Loaded{Key: key, Format: Plain}, nil
	}
}

func openAge(path string, b []byte, src Sources) (Loaded, error) {
	var pass []byte
	var from string
	switch {
	case src.PassphraseFile != "":
		p, err := ReadPassphraseFile(src.PassphraseFile)
		if err != nil {
			return Loaded{}, fmt.Errorf("key file %s is encrypted: %w", path, err)
		}
		pass, from = p, "key_passphrase_file "+src.PassphraseFile
	case src.Prompt != nil:
		p, err := src.Prompt(fmt.Sprintf("Passphrase for %s: ", path))
		if err != nil {
			return Loaded{}, fmt.Errorf("key file %s is encrypted: read the passphrase: %w", path, err)
		}
		pass, from = p, "the terminal"
	default:
		return Loaded{}, fmt.Errorf("key file %s is encrypted with a passphrase, and there is nothing to read it from: set key_passphrase_file in the config (a file only tomoe's user can read), or start tomoe up on a terminal to type it", path)
	}
	defer clear(pass)
	key, err := DecryptPassphrase(b, pass)
	// scrypt at work factor 18 takes 256 MiB, which Go keeps from the OS
	// long after: measured here, a userspace node's RSS was 288 MB two
	// seconds after start with an encrypted key, against 27 MB with a
	// plain one. Opening a key happens once, so hand it back now.
	debug.FreeOSMemory()
	switch {
	case errors.Is(err, ErrWrongPassphrase) && src.PassphraseFile != "":
		return Loaded{}, fmt.Errorf("key file %s: wrong passphrase in key_passphrase_file %s (or the file's header was altered): put the passphrase the key was encrypted with in that file; the key file is unchanged", path, src.PassphraseFile)
	case errors.Is(err, ErrWrongPassphrase):
		return Loaded{}, fmt.Errorf("key file %s: wrong passphrase (or the file's header was altered); the key file is unchanged", path)
	case errors.Is(err, ErrDamaged):
		return Loaded{}, fmt.Errorf("key file %s cannot be decrypted: %w: restore it from a backup (or make a new key: the node's address changes with it)", path, err)
	case err != nil:
		return Loaded{}, fmt.Errorf("key file %s: %w", path, err)
	}
	return Loaded{Key: key, Format: Age, From: from}, nil
}

func openCredential(path string, b []byte, src Sources) (Loaded, error) {
	if src.CredentialsDir != "" {
		// systemd made this directory for the unit alone (a read-only
		// ramfs, access by ACL): fileperm's owner and mode rules do not
		// describe it, so it is trusted as systemd's.
		p := filepath.Join(src.CredentialsDir, CredentialName)
		line, err := readSmall(p)
		defer clear(line)
		switch {
		case err == nil:
			key, err := identity.ParsePrivateKey(string(bytes.TrimSpace(line)))
			if err != nil {
				return Loaded{}, fmt.Errorf("credential %s (systemd's decryption of key file %s): %w", p, path, err)
			}
			return Loaded{Key: key, Format: SystemdCred, From: "$CREDENTIALS_DIRECTORY/" + CredentialName}, nil
		case !errors.Is(err, fs.ErrNotExist):
			return Loaded{}, fmt.Errorf("credential %s: %w", p, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), decryptTimeout)
	defer cancel()
	key, err := src.SystemdCreds.Decrypt(ctx, b)
	switch {
	case errors.Is(err, ErrNoSystemdCreds):
		return Loaded{}, fmt.Errorf("key file %s is a systemd credential, and %w: run tomoe as a systemd service with LoadCredentialEncrypted=%s:%s, or install systemd", path, err, CredentialName, path)
	case err != nil:
		return Loaded{}, fmt.Errorf("key file %s is a systemd credential that could not be decrypted: %w (it opens only on the host, and with the TPM2, it was encrypted on, and systemd-creds needs root for the host key; under systemd use LoadCredentialEncrypted=%s:%s)", path, err, CredentialName, path)
	}
	return Loaded{Key: key, Format: SystemdCred, From: "systemd-creds decrypt"}, nil
}

// maxSmallFile bounds a passphrase or credential file.
const maxSmallFile = 4096

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSmallFile+1))
	if err != nil {
		clear(b)
		return nil, err
	}
	if len(b) > maxSmallFile {
		clear(b)
		return nil, fmt.Errorf("longer than %d bytes", maxSmallFile)
	}
	return b, nil
}

// ReadPassphraseFile returns the passphrase in the file at path: its first
// line, without the line ending (the rest of the file is ignored). The file
// must pass the key file's checks (fileperm.Secret: only its owner, tomoe's
// user or root, may read it). The caller zeroes the result.
func ReadPassphraseFile(path string) ([]byte, error) {
	b, err := fileperm.ReadFile(path, "key passphrase file", fileperm.Secret)
	if err != nil {
		clear(b)
		return nil, err
	}
	line := b
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) == 0 {
		clear(b)
		return nil, fmt.Errorf("key passphrase file %s: its first line is empty: put the passphrase there", path)
	}
	pass := bytes.Clone(line)
	clear(b)
	return pass, nil
}

// WriteFile writes data, an encrypted key, to path with mode 0600. It
// refuses to replace an existing file unless force is set; then it writes
// a temporary file beside it and renames it over, so that the old key is
// never half replaced.
func WriteFile(path string, data []byte, force bool) error {
	if !force {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists: refusing to overwrite it (a key file may be the only copy of a node's identity); give --force to replace it", path)
		}
		if err != nil {
			return err
		}
		if err := writeSync(f, data); err != nil {
			os.Remove(path)
			return fmt.Errorf("write %s: %w", path, err)
		}
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := writeSync(f, data); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// writeSync writes data to f, syncs and closes it.
func writeSync(f *os.File, data []byte) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
