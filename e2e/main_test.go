// Package e2e tests the tomoe binary as users run it: real processes, the
// CLI, the admin socket. Tests in cli_test.go need no privileges
// (userspace mode); netns_test.go runs kernel-mode nodes with real TUN
// devices in network namespaces and is skipped unless run as root.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/cli"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// tomoeBin is the binary under test, built once by TestMain.
var tomoeBin string

func TestMain(m *testing.M) {
	setParallel()
	dir, err := os.MkdirTemp("", "tomoe-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // tests run the binary as another user too
	tomoeBin = filepath.Join(dir, "tomoe")
	build := exec.Command("go", "build", "-race", "-o", tomoeBin, "../cmd/tomoe")
	if os.Getenv("TOMOE_E2E_NORACE") != "" {
		build = exec.Command("go", "build", "-o", tomoeBin, "../cmd/tomoe")
	}
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build tomoe:", err)
		os.Exit(1)
	}
	// The tests run the binary just built, but Go's test cache keys on
	// this test binary's content (the code linked, not the packages
	// imported). Running the CLI's entry point here links the binary's
	// code into it, so any change to that code is a new test binary and a
	// fresh run, never a cached pass standing for an old binary. (A blank
	// import linked only what init reaches: edits to the node did not
	// change the test binary.)
	if code := cli.Main([]string{"version"}, strings.NewReader(""), io.Discard, io.Discard); code != 0 {
		fmt.Fprintln(os.Stderr, "tomoe version, in process: exit", code)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is a finished CLI run.
type result struct {
	stdout, stderr string
	code           int
}

// run runs the tomoe CLI with stdin and returns what it printed and its exit status.
func run(t testing.TB, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tomoeBin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("tomoe %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

// mustRun runs the CLI and fails the test unless it exits 0.
func mustRun(t testing.TB, args ...string) string {
	t.Helper()
	r := run(t, "", args...)
	if r.code != 0 {
		t.Fatalf("tomoe %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// jsonOut runs a CLI command with --json and decodes its output.
func jsonOut(t testing.TB, v any, args ...string) {
	t.Helper()
	out := mustRun(t, append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("tomoe %v --json: %v\n%s", args, err, out)
	}
}

// nodeDir is a node's directory: key, config, admin socket, policy state.
type nodeDir struct {
	name string
	dir  string
	key  identity.PrivateKey
}

func newNodeDir(t testing.TB, name string) *nodeDir {
	t.Helper()
	// Short paths: Unix socket paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "te-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	k, err := identity.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "node.key"), []byte(k.Base64()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &nodeDir{name: name, dir: dir, key: k}
}

func (n *nodeDir) pub() identity.PublicKey { return n.key.Public() }
func (n *nodeDir) addr() string            { return n.key.Public().Address().String() }

// ipv4 is the node's tun.ipv4 = "auto" address in the default prefix.
func (n *nodeDir) ipv4(t testing.TB) string {
	a, err := n.key.Public().IPv4Address(identity.DefaultIPv4Prefix)
	if err != nil {
		t.Fatal(err)
	}
	return a.String()
}

func (n *nodeDir) socket() string { return filepath.Join(n.dir, "admin.sock") }
func (n *nodeDir) config() string { return filepath.Join(n.dir, "tomoe.toml") }

// write writes the node's config: the given body after key_file and admin.socket.
func (n *nodeDir) write(t testing.TB, body string) {
	t.Helper()
	n.writeTop(t, "", body)
}

// writeTop writes the node's config with top-level keys (top) before any
// table. The node keeps root ([run] user = "root"): on a machine where the
// .deb made a "tomoe" user, a node started as root would otherwise drop to
// it and refuse the test's root-owned temporary directories
// (TestPrivilegeDrop covers the drop).
func (n *nodeDir) writeTop(t testing.TB, top, body string) {
	t.Helper()
	doc := fmt.Sprintf("key_file = %q\n%s[run]\nuser = \"root\"\n[admin]\nsocket = %q\n%s", filepath.Join(n.dir, "node.key"), top, n.socket(), body)
	if err := os.WriteFile(n.config(), []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitReady waits until the node's admin API answers.
func (n *nodeDir) waitReady(t testing.TB, alive func() bool) {
	t.Helper()
	cl := adminapi.NewClient(n.socket())
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cl.Status(ctx)
		cancel()
		if err == nil {
			return
		}
		if !alive() {
			t.Fatalf("%s exited before its admin API came up", n.name)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: admin API not up: %v", n.name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cli runs a CLI command against this node's socket.
func (n *nodeDir) cli(t testing.TB, args ...string) string {
	t.Helper()
	return mustRun(t, append(args, "--socket", n.socket())...)
}

func (n *nodeDir) cliJSON(t testing.TB, v any, args ...string) {
	t.Helper()
	jsonOut(t, v, append(args, "--socket", n.socket())...)
}

func peerBlock(to *nodeDir, endpoint string) string {
	return fmt.Sprintf("[[peers]]\npublic_key = %q\nendpoint = %q\nname = %q\n", to.pub(), endpoint, to.name)
}

func allowBlock(from, proto, ports string) string {
	return fmt.Sprintf("[[policy.allow]]\nfrom = %q\nproto = %q\nports = %q\n", from, proto, ports)
}

//END
