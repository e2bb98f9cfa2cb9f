package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

func TestKeyCommands(t *testing.T) {
	parallel(t, 10*time.Second)
	priv := strings.TrimSpace(mustRun(t, "key", "generate"))
	pub := strings.TrimSpace(run(t, priv+"\n", "key", "public").stdout)
	if len(priv) != 44 || len(pub) != 44 || priv == pub {
		t.Fatalf("generate/public: %q %q", priv, pub)
	}
	// RFC 7748 key pair, and the address contract computed outside Go.
	r := run(t, "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\n", "key", "public")
	if strings.TrimSpace(r.stdout) != "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=" {
		t.Fatalf("key public: %+v", r)
	}
	if got := strings.TrimSpace(mustRun(t, "key", "address", "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=")); got != "fcfd:afa6:ea26:22b1:92f7:bcda:df3d:6ba8" {
		t.Fatalf("key address: %q", got)
	}
	if got := strings.TrimSpace(mustRun(t, "key", "address", "--site", "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=")); got != "3e2:726f:c48e:572::/64" {
		t.Fatalf("key address --site: %q", got)
	}
	if got := strings.TrimSpace(mustRun(t, "key", "address", "--ipv4", "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=")); got != "100.82.248.137" {
		t.Fatalf("key address --ipv4: %q", got)
	}
	if got := strings.TrimSpace(mustRun(t, "key", "address", "--ipv4", "--prefix", "10.99.0.0/24", "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=")); got != "10.99.0.197" {
		t.Fatalf("key address --ipv4 --prefix 10.99.0.0/24: %q", got)
	}
	// Bad input: a clear message on stderr and exit status 2.
	for _, c := range []struct {
		stdin string
		args  []string
	}{
		{"", []string{"key", "public"}},
		{"not a key\n", []string{"key", "public"}},
		{"", []string{"key", "address", "short"}},
		{"", []string{"key", "address"}},
		{"", []string{"key", "address", "a", "b"}},
		{"", []string{"key", "generate", "extra"}},
		{"", []string{"key", "address", "--sight", "x"}},
		{"", []string{"key", "address", "--ipv4", "--prefix", "10.99.0.0/31", "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="}},
		{"", []string{"key", "address", "--prefix", "10.99.0.0/24", "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="}},
		{"", []string{"key", "address", "--ipv4", "--site", "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="}},
	} {
		r := run(t, c.stdin, c.args...)
		if r.code != 2 || r.stderr == "" || r.stdout != "" {
			t.Errorf("tomoe %v: exit %d, stderr %q, stdout %q", c.args, r.code, r.stderr, r.stdout)
		}
	}
}

func TestConfigCheck(t *testing.T) {
	parallel(t, 5*time.Second)
	n := newNodeDir(t, "cfg")
	n.write(t, "[tun]\nmode = \"userspace\"\n"+allowBlock("*", "tcp", "22"))
	out := mustRun(t, "config", "check", "-c", n.config())
	if !strings.Contains(out, ": ok") || !strings.Contains(out, n.addr()) {
		t.Fatalf("config check: %s", out)
	}
	n.write(t, "[tun]\nmode = \"tap\"\nmtu = 100\n")
	r := run(t, "", "config", "check", "-c", n.config())
	if r.code != 1 || !strings.Contains(r.stderr, "tun.mode") || !strings.Contains(r.stderr, "tun.mtu") {
		t.Fatalf("invalid config: %+v", r)
	}
	os.Chmod(filepath.Join(n.dir, "node.key"), 0o644)
	n.write(t, "")
	r = run(t, "", "config", "check", "-c", n.config())
	if r.code != 1 || !strings.Contains(r.stderr, "chmod 600") {
		t.Fatalf("readable key file: %+v", r)
	}
	if r := run(t, "", "config", "check"); r.code != 2 {
		t.Fatalf("config check without -c: %+v", r)
	}
}

func TestDemo(t *testing.T) {
	parallel(t, 5*time.Second)
	r := run(t, "", "demo", "--refuse-timeout", "2s")
	if r.code != 0 || strings.Count(r.stdout, "[ok]") != 4 || strings.Contains(r.stdout, "FAIL") {
		t.Fatalf("demo: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
}

// startUp runs `tomoe up` for n outside any namespace.
func startUp(t *testing.T, n *nodeDir) *testnet.Proc {
	t.Helper()
	p := testnet.StartCmd(t, n.name, exec.Command(tomoeBin, "up", "-c", n.config()))
	n.waitReady(t, func() bool { return !p.Exited() })
	return p
}

// Two userspace nodes as separate processes, driven only through the CLI.
func TestUserspaceNodesThroughCLI(t *testing.T) {
	parallel(t, 20*time.Second)
	alice, bob := newNodeDir(t, "alice"), newNodeDir(t, "bob")
	alice.write(t, "[tun]\nmode = \"userspace\"\n[listen]\nudp = \"0.0.0.0:0\"\n")
	ap := startUp(t, alice)
	var ast adminapi.Status
	alice.cliJSON(t, &ast, "status")
	if ast.Address != alice.addr() || ast.PublicKey != alice.pub().String() || ast.SitePrefix != alice.pub().SitePrefix().String() || ast.Mode != "userspace" || ast.ListenPort == 0 {
		t.Fatalf("status: %+v", ast)
	}
	bob.write(t, "[tun]\nmode = \"userspace\"\n[listen]\nudp = \"0.0.0.0:0\"\n"+peerBlock(alice, fmt.Sprintf("127.0.0.1:%d", ast.ListenPort))+allowBlock(alice.addr(), "icmp", ""))
	bp := startUp(t, bob)

	// alice allows nothing: bob's ping gets no answer, exit status 1.
	r := run(t, "", "ping", alice.addr(), "-c", "1", "-W", "1s", "--socket", bob.socket())
	if r.code != 1 || !strings.Contains(r.stdout, "timeout") {
		t.Fatalf("ping before allow: %+v", r)
	}
	out := alice.cli(t, "policy", "allow", bob.pub().String(), "--proto", "icmp")
	if !strings.Contains(out, "allowed: from "+bob.pub().String()+" proto icmp") {
		t.Fatalf("allow: %q", out)
	}
	if out := alice.cli(t, "policy", "allow", bob.addr(), "--proto", "icmp"); !strings.Contains(out, "already allowed") {
		t.Fatalf("second allow: %q", out)
	}
	// WireGuard retries the refused handshake every 5 s.
	out = mustRun(t, "ping", alice.addr(), "-c", "2", "-i", "200ms", "-W", "8s", "--socket", bob.socket())
	if !strings.Contains(out, "2 received") {
		t.Fatalf("ping after allow: %s", out)
	}
	var peers []adminapi.Peer
	bob.cliJSON(t, &peers, "peers")
	if len(peers) != 1 || peers[0].PublicKey != alice.pub().String() || peers[0].Address != alice.addr() ||
		peers[0].Path != "direct" || peers[0].Endpoint == nil || peers[0].LastHandshake == nil || peers[0].RxBytes == 0 || peers[0].TxBytes == 0 {
		t.Fatalf("peers --json: %+v", peers)
	}
	if out := bob.cli(t, "peers"); !strings.Contains(out, alice.addr()) || !strings.Contains(out, "direct") {
		t.Fatalf("peers: %s", out)
	}
	var rules []adminapi.Rule
	alice.cliJSON(t, &rules, "policy", "list")
	if len(rules) != 1 || rules[0].Source != "api" || rules[0].Proto != "icmp" || *rules[0].Address != bob.addr() {
		t.Fatalf("policy list: %+v", rules)
	}
	// Bad input to a remote command: exit 2, nothing sent.
	for _, args := range [][]string{
		{"policy", "allow", "bob"},
		{"policy", "allow", "*", "--ports", "99999"},
		{"policy", "allow", "*", "--proto", "icmp", "--ports", "1"},
		{"policy", "revoke", "fd00::1"},
		{"ping", "10.0.0.1"},
	} {
		if r := run(t, "", append(args, "--socket", alice.socket())...); r.code != 2 || r.stderr == "" {
			t.Errorf("tomoe %v: %+v", args, r)
		}
	}
	// Revoke: the rule goes; revoking again fails with status 1.
	if out := alice.cli(t, "policy", "revoke", bob.addr()); !strings.Contains(out, "revoked: from "+bob.pub().String()) || !strings.Contains(out, "sessions cut: 1") {
		t.Fatalf("revoke: %s", out)
	}
	if r := run(t, "", "policy", "revoke", bob.addr(), "--socket", alice.socket()); r.code != 1 || !strings.Contains(r.stderr, "no rule") {
		t.Fatalf("second revoke: %+v", r)
	}
	// A CLI pointed at no node says so, with status 1.
	if r := run(t, "", "status", "--socket", filepath.Join(alice.dir, "nope.sock")); r.code != 1 || !strings.Contains(r.stderr, "is `tomoe up` running") {
		t.Fatalf("status without a node: %+v", r)
	}
	// TOMOE_SOCKET chooses the socket too.
	cmd := exec.Command(tomoeBin, "status")
	cmd.Env = append(os.Environ(), "TOMOE_SOCKET="+alice.socket())
	if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), alice.addr()) {
		t.Fatalf("TOMOE_SOCKET: %v %s", err, out)
	}

	// A clean shutdown exits 0 and removes the socket.
	for _, p := range []*testnet.Proc{bp, ap} {
		if err := p.Stop(syscall.SIGTERM, 10*time.Second); err != nil {
			t.Fatalf("%s: %v\n%s", p.Name, err, p.Output())
		}
	}
	if _, err := os.Stat(alice.socket()); !os.IsNotExist(err) {
		t.Fatalf("admin socket left behind: %v", err)
	}
}

// A second node on the same admin socket must refuse to start, and the
// first must keep working.
func TestSecondNodeOnSameSocketRefused(t *testing.T) {
	parallel(t, 5*time.Second)
	a := newNodeDir(t, "a")
	a.write(t, "[tun]\nmode = \"userspace\"\n[listen]\nudp = \"0.0.0.0:0\"\n")
	startUp(t, a)
	r := run(t, "", "up", "-c", a.config())
	if r.code != 1 || !strings.Contains(r.stderr, "another tomoe") {
		t.Fatalf("second node: %+v", r)
	}
	a.cli(t, "status")
}
