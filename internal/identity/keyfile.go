package identity

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/tomoe-net/tomoe/internal/fileperm"
)

// LoadOrCreateKeyFile reads the private key at path, creating it (mode 0600,
// parent directory 0700 if it must be made) when it does not exist. The key
// is the node's identity, so it refuses, as ssh does, a key file that group
// or others can read or write, and (see package fileperm) one that another
// user owns or that lies in a directory others can write.
func LoadOrCreateKeyFile(path string) (key PrivateKey, created bool, err error) {
	b, err := fileperm.ReadFile(path, "key file", fileperm.Secret)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		key, err = createKeyFile(path)
		return key, err == nil, err
	case err != nil:
		return PrivateKey{}, false, err
	}
	key, err = ParsePrivateKey(strings.TrimSpace(string(b)))
	if err != nil {
		return PrivateKey{}, false, fmt.Errorf("key file %s: %w", path, err)
	}
	return key, false, nil
}

func createKeyFile(path string) (PrivateKey, error) {
	dir := filepath.Dir(path)
	if err := fileperm.MkdirPrivate(dir); err != nil {
		return PrivateKey{}, fmt.Errorf("key file directory %s: %w", dir, err)
	}
	// A directory that existed already may let others in.
	if err := fileperm.CheckDir(dir, "key file"); err != nil {
		return PrivateKey{}, err
	}
	key, err := GeneratePrivateKey()
	if err != nil {
		return PrivateKey{}, err
	}
	// O_EXCL: if two processes race, one wins and the other reports the error
	// instead of silently replacing an identity.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("create key file %s: %w", path, err)
	}
	if _, err := f.WriteString(key.Base64() + "\n"); err != nil {
		f.Close()
		os.Remove(path)
		return PrivateKey{}, fmt.Errorf("write key file %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return PrivateKey{}, fmt.Errorf("write key file %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return PrivateKey{}, fmt.Errorf("write key file %s: %w", path, err)
	}
	return key, nil
}
