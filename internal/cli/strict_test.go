package cli

import (
	"bytes"
	"net"
	"path/filepath"
	"strings"
	"testing"
)

// Scripts can trust the CLI: an unknown subcommand anywhere, or an unknown
// flag, exits 2 with one line on stderr; a group alone prints its help.
func TestUnknownCommandsExit2(t *testing.T) {
	for _, args := range [][]string{{"bogus"}, {"org", "bogus"}, {"key", "bogus"}, {"org", "crl", "bogus"}, {"policy", "alow"}, {"status", "--bogus"}, {"org", "--bogus"}} {
		var out, errb bytes.Buffer
		code := Main(args, strings.NewReader(""), &out, &errb)
		if code != ExitUsage || strings.Count(strings.TrimSpace(errb.String()), "\n") != 0 || !strings.HasPrefix(errb.String(), "tomoe: ") {
			t.Errorf("tomoe %s: exit %d, stderr %q", strings.Join(args, " "), code, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := Main([]string{"policy"}, strings.NewReader(""), &out, &errb); code != ExitOK || !strings.Contains(out.String(), "Usage:") {
		t.Errorf("tomoe policy: exit %d, stdout %q", code, out.String())
	}
	errb.Reset()
	Main([]string{"polcy"}, strings.NewReader(""), &out, &errb)
	if !strings.Contains(errb.String(), `did you mean "policy"`) {
		t.Errorf("no suggestion: %q", errb.String())
	}
}

// Without a socket of the user's own node, the CLI talks to the system
// service's, if there is one.
func TestDefaultSocketFallsBackToTheSystems(t *testing.T) {
	dir := t.TempDir()
	own, system := filepath.Join(dir, "own.sock"), filepath.Join(dir, "system.sock")
	if got := defaultSocket(own, system); got != own {
		t.Fatalf("neither exists: %s, want the user's own", got)
	}
	ln, err := net.Listen("unix", system)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if got := defaultSocket(own, system); got != system {
		t.Fatalf("only the system's exists: %s", got)
	}
	ln2, err := net.Listen("unix", own)
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	if got := defaultSocket(own, system); got != own {
		t.Fatalf("both exist: %s, want the user's own", got)
	}
}
