package cli

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/fileperm"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/keyenc"
)

// terminalPrompt asks for passphrases (tomoe key, tomoe up on a
// terminal); tests replace it.
var terminalPrompt keyenc.Prompt = keyenc.TerminalPrompt

// checkKeyFile describes cfg's key file for config check, and its public
// key when it can be had without asking anyone: a plain key, or an
// encrypted one that key_passphrase_file opens. Nothing is created, and
// systemd-creds is not run.
func checkKeyFile(cfg *config.Config) (string, identity.PublicKey, error) {
	b, err := fileperm.ReadFile(cfg.KeyFile, "key file", fileperm.Secret)
	defer clear(b)
	switch {
	case errors.Is(err, fs.ErrNotExist) && cfg.KeyPassphraseFile != "":
		return "", identity.PublicKey{}, fmt.Errorf("%s does not exist, and key_passphrase_file is set, so tomoe will not create a plain key: create it with: tomoe key generate | tomoe key encrypt --passphrase-file %s --out %s", cfg.KeyFile, cfg.KeyPassphraseFile, cfg.KeyFile)
	case errors.Is(err, fs.ErrNotExist):
		return "will be created on first start", identity.PublicKey{}, nil
	case err != nil:
		return "", identity.PublicKey{}, err
	}
	switch f := keyenc.Detect(b); {
	case f == keyenc.SystemdCred:
		return "a systemd credential: systemd decrypts it for the unit with LoadCredentialEncrypted=" + keyenc.CredentialName + ":" + cfg.KeyFile + ", else tomoe up runs systemd-creds decrypt", identity.PublicKey{}, nil
	case f == keyenc.Age && cfg.KeyPassphraseFile == "":
		return "encrypted with a passphrase; tomoe up asks for it on the terminal (or set key_passphrase_file)", identity.PublicKey{}, nil
	}
	l, err := keyenc.Open(cfg.KeyFile, b, keyenc.Sources{PassphraseFile: cfg.KeyPassphraseFile})
	if err != nil {
		return "", identity.PublicKey{}, err
	}
	pub := l.Key.Public()
	if l.Format == keyenc.Age {
		return "ok, encrypted, opened with key_passphrase_file, address " + pub.Address().String(), pub, nil
	}
	return "ok, address " + pub.Address().String(), pub, nil
}
