package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// TestConfigReload: two kernel-mode nodes in namespaces. alice starts
// knowing nobody and allowing bob only tcp/8; her file then gains bob as
// a static peer and a rule for tcp/7. After SIGHUP (the path of
// `systemctl reload`), bob's connection to port 7 that was refused
// passes; with the rule taken out again and `tomoe reload`, the
// established connection is cut and a new one refused. An invalid file
// changes nothing: the process runs on, port 8 still passes, its log
// and `tomoe reload` (exit status 1) name FILE:LINE. A key that needs a
// restart is reported as such.
func TestConfigReload(t *testing.T) {
	parallel(t, 25*time.Second)
	testnet.RequireRoot(t)
	lan := testnet.NewLAN(t, "alice", "bob")
	alice := &kernelNode{nodeDir: newNodeDir(t, "alice"), host: lan.Hosts["alice"]}
	bob := &kernelNode{nodeDir: newNodeDir(t, "bob"), host: lan.Hosts["bob"]}
	base := allowBlock(bob.pub().String(), "tcp", "8")
	alice.body = base
	bob.body = peerBlock(alice.nodeDir, alice.endpoint())
	alice.launch(t)
	bob.launch(t)
	alice.ready(t)
	bob.ready(t)
	alice.listenTCP(t, 7)
	alice.listenTCP(t, 8)

	talk := func(port int, d time.Duration) net.Conn {
		t.Helper()
		var c net.Conn
		testnet.WaitFor(t, d, fmt.Sprintf("bob -> alice tcp/%d", port), func() bool {
			var err error
			if c, err = bob.dialTCP(alice.addr(), port, time.Second); err != nil {
				return false
			}
			if err := testnet.RoundTrip(c, "ping", 2*time.Second); err != nil {
				c.Close()
				return false
			}
			return true
		})
		return c
	}
	refused := func(port int) bool {
		c, err := bob.dialTCP(alice.addr(), port, 2*time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	}
	talk(8, 15*time.Second).Close()
	if !refused(7) {
		t.Fatal("bob -> alice tcp/7 connected before any rule for it")
	}

	// SIGHUP with a static peer and a rule added.
	alice.body = base + peerBlock(bob.nodeDir, bob.endpoint()) + allowBlock(bob.pub().String(), "tcp", "7")
	alice.writeConfig(t)
	if err := alice.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	alice.proc.WaitOutput(t, `changes="peers: +1 -0 ~0, policy: +1 -0`, 10*time.Second)
	var peers []adminapi.Peer
	alice.cliJSON(t, &peers, "peers")
	if !slices.ContainsFunc(peers, func(p adminapi.Peer) bool { return p.Static && p.Name == "bob" }) {
		t.Errorf("bob is not alice's static peer after SIGHUP: %+v", peers)
	}
	c := talk(7, 15*time.Second)
	defer c.Close()

	// tomoe reload with the rule removed: the connection is cut.
	alice.body = base + peerBlock(bob.nodeDir, bob.endpoint())
	alice.writeConfig(t)
	var res adminapi.ReloadResult
	alice.cliJSON(t, &res, "reload")
	if res.Policy != (adminapi.ReloadCount{Removed: 1}) || !slices.Contains(res.PeersCut, bob.pub().String()) {
		t.Fatalf("tomoe reload without the rule: %+v", res)
	}
	if err := testnet.RoundTrip(c, "after", 2*time.Second); err == nil {
		t.Fatal("the established connection still carries data after its rule left the file")
	}
	if !refused(7) {
		t.Fatal("bob -> alice tcp/7 connected after its rule left the file")
	}
	talk(8, 15*time.Second).Close()
	if out := alice.cli(t, "reload"); !strings.HasPrefix(out, "unchanged: ") {
		t.Errorf("tomoe reload of the same file: %q", out)
	}

	// An invalid file: nothing changes, the process runs on.
	alice.body = base + peerBlock(bob.nodeDir, bob.endpoint()) + allowBlock(bob.pub().String(), "tcp", "7") + "[[policy.allow]]\nfrom = \"*\"\nports = \"70000\"\n"
	alice.writeConfig(t)
	if err := alice.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	alice.proc.WaitOutput(t, "config reload refused", 10*time.Second)
	line := lineOf(alice.proc.Output(), "config reload refused")
	if !strings.Contains(line, alice.config()+":") || !strings.Contains(line, "policy.allow[2].ports") {
		t.Errorf("the refusal's log line names no FILE:LINE and key: %s", line)
	}
	r := run(t, "", "reload", "--socket", alice.socket())
	if r.code != 1 || !strings.Contains(r.stderr, alice.config()+":") {
		t.Errorf("tomoe reload of an invalid file: exit status %d, want 1 with FILE:LINE\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if alice.proc.Exited() {
		t.Fatalf("alice exited after an invalid reload:\n%s", alice.proc.Output())
	}
	talk(8, 15*time.Second).Close()
	if !refused(7) {
		t.Fatal("an invalid file's rule for tcp/7 applied")
	}

	// A key that needs a restart is reported, the rest applied.
	alice.tun = "mtu = 1300\n"
	alice.body = base + peerBlock(bob.nodeDir, bob.endpoint()) + allowBlock(bob.pub().String(), "tcp", "7")
	alice.writeConfig(t)
	res = adminapi.ReloadResult{}
	alice.cliJSON(t, &res, "reload")
	if !slices.Equal(res.NeedsRestart, []string{"tun.mtu"}) || res.Policy != (adminapi.ReloadCount{Added: 1}) {
		t.Fatalf("reload with tun.mtu changed: %+v", res)
	}
	if st := alice.status(t); st.MTU != 1400 {
		t.Errorf("tun.mtu applied without a restart: %d", st.MTU)
	}
	talk(7, 15*time.Second).Close()
	out := alice.cli(t, "reload")
	if !strings.Contains(out, "needs restart: tun.mtu") {
		t.Errorf("tomoe reload: %q", out)
	}
	b, _ := json.Marshal(res)
	t.Logf("tomoe reload --json: %s", b)
}

// lineOf returns the first line of out holding s.
func lineOf(out, s string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}
