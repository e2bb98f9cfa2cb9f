package keyenc

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"golang.org/x/term"
)

// ttyPath is the process's controlling terminal.
const ttyPath = "/dev/tty"

// TerminalPrompt asks on the controlling terminal (/dev/tty), so that it
// works while stdin carries the key (`tomoe key generate | tomoe key
// encrypt`); the answer is not echoed. Without a terminal it returns an
// error saying so.
func TerminalPrompt(question string) ([]byte, error) {
	tty, err := os.OpenFile(ttyPath, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("no terminal to ask on (%v)", err)
	}
	defer tty.Close()
	if _, err := tty.WriteString(question); err != nil {
		return nil, err
	}
	pass, err := term.ReadPassword(int(tty.Fd()))
	tty.WriteString("\n")
	if err != nil {
		clear(pass)
		return nil, fmt.Errorf("read %s: %w", ttyPath, err)
	}
	return pass, nil
}

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// NewPassphrase asks for a new passphrase twice with ask and returns it
// once both answers agree and it is not empty.
func NewPassphrase(ask Prompt) ([]byte, error) {
	p1, err := ask("New passphrase for the key: ")
	if err != nil {
		return nil, err
	}
	if len(p1) == 0 {
		return nil, errors.New("empty passphrase: the key would not be protected")
	}
	p2, err := ask("Type it again: ")
	defer clear(p2)
	if err != nil {
		clear(p1)
		return nil, err
	}
	if !bytes.Equal(p1, p2) {
		clear(p1)
		return nil, errors.New("the two passphrases differ; nothing was written")
	}
	return p1, nil
}
