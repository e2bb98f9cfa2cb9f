package keycmd

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/keyenc"
)

func init() { keyenc.ScryptWorkFactor = 4 }

// A plain key typed on a terminal is read without waiting for the end of
// the input; an encrypted one is read to the end.
func TestReadKeyInput(t *testing.T) {
	k, _ := identity.GeneratePrivateKey()
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte("\n" + k.Base64() + "\n"))
	done := make(chan []byte)
	go func() {
		b, _ := readKeyInput(pr)
		done <- b
	}()
	select {
	case b := <-done:
		if strings.TrimSpace(string(b)) != k.Base64() {
			t.Fatalf("read %q", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waited for the end of input after a plain key")
	}
	data, _ := keyenc.EncryptPassphrase(k, []byte("pw"))
	b, err := readKeyInput(strings.NewReader(string(data)))
	if err != nil || string(b) != string(data) {
		t.Fatalf("encrypted: %q, %v", b, err)
	}
	b, err = readKeyInput(strings.NewReader("junk"))
	if err != nil || string(b) != "junk" {
		t.Fatalf("junk: %q, %v", b, err)
	}
}
