package names

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeResolved is a resolvectl that records its arguments, a run
// directory, and namespace links that match.
func fakeResolved(t *testing.T, script string) (*Resolved, string) {
	t.Helper()
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	bin := filepath.Join(dir, "resolvectl")
	if script == "" {
		script = "exit 0"
	}
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho \"$@\" >> "+log+"\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "resolve")
	os.Mkdir(run, 0o755)
	for _, l := range []string{"self", "host"} {
		if err := os.Symlink("net:[4026531840]", filepath.Join(dir, l)); err != nil {
			t.Fatal(err)
		}
	}
	return &Resolved{Link: "tomoe0", Addr: Address, RunDir: run, Resolvectl: bin,
		SelfNetns: filepath.Join(dir, "self"), HostNetns: filepath.Join(dir, "host")}, log
}

func calls(t *testing.T, log string) string {
	b, err := os.ReadFile(log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

func TestResolvedRegisterAndRevert(t *testing.T) {
	r, log := fakeResolved(t, "")
	if err := r.Register(); err != nil {
		t.Fatal(err)
	}
	if err := r.Revert(); err != nil {
		t.Fatal(err)
	}
	want := "dns tomoe0 fc00::53\ndomain tomoe0 ~tomoe\ndefault-route tomoe0 no\ndnssec tomoe0 no\n" +
		"dnsovertls tomoe0 no\nllmnr tomoe0 no\nmdns tomoe0 no\nrevert tomoe0\n"
	if got := calls(t, log); got != want {
		t.Fatalf("resolvectl ran:\n%s\nwant:\n%s", got, want)
	}
}

// Where resolved does not run, or runs in another network namespace,
// nothing is run and the error says so.
func TestResolvedNotHere(t *testing.T) {
	r, log := fakeResolved(t, "")
	os.Remove(r.RunDir)
	if err := r.Register(); !errors.Is(err, ErrNoResolved) {
		t.Fatalf("without %s: %v, want ErrNoResolved", r.RunDir, err)
	}
	r, log = fakeResolved(t, "")
	os.Remove(r.SelfNetns)
	os.Symlink("net:[4026532000]", r.SelfNetns)
	err := r.Register()
	if !errors.Is(err, ErrNoResolved) || !strings.Contains(err.Error(), "4026532000") {
		t.Fatalf("in another namespace: %v, want ErrNoResolved naming it", err)
	}
	if c := calls(t, log); c != "" {
		t.Fatalf("resolvectl ran: %s", c)
	}
}

// A failing resolvectl is an error with its output; a half-done
// registration is reverted.
func TestResolvedFails(t *testing.T) {
	r, log := fakeResolved(t, `case "$1" in domain) echo "Failed to set domain configuration: boom" >&2; exit 1;; esac`)
	err := r.Register()
	if err == nil || !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "resolvectl domain tomoe0 ~tomoe") {
		t.Fatalf("Register: %v", err)
	}
	if got, want := calls(t, log), "dns tomoe0 fc00::53\ndomain tomoe0 ~tomoe\nrevert tomoe0\n"; got != want {
		t.Fatalf("resolvectl ran:\n%s\nwant:\n%s", got, want)
	}
	r.Resolvectl = filepath.Join(t.TempDir(), "missing")
	if err := r.Register(); err == nil || errors.Is(err, ErrNoResolved) {
		t.Fatalf("without resolvectl: %v", err)
	}
}
