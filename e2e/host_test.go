package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/tomoe-net/tomoe/internal/testnet"
)

// Tests of what a kernel-mode node leaves on its host: the forwarding
// sysctls after a crash, and what it shares with other nodes there.

// forwarding reads the namespace's IPv4 and IPv6 forwarding sysctls, as
// "ip_forward/forwarding".
func forwarding(ns *testnet.Netns) string {
	var v4, v6 []byte
	ns.Do(func() {
		v4, _ = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
		v6, _ = os.ReadFile("/proc/sys/net/ipv6/conf/all/forwarding")
	})
	return strings.TrimSpace(string(v4)) + "/" + strings.TrimSpace(string(v6))
}

// A node killed while it forwards (SIGKILL: no cleanup) leaves forwarding
// on. The next start must take it back to what it was before the first,
// so that a clean stop leaves the host as it was found.
func TestForwardingRestoredAfterCrash(t *testing.T) {
	parallel(t, 5*time.Second)
	testnet.RequireRoot(t)
	h := testnet.NewLAN(t, "gw").Hosts["gw"]
	h.Sysctl("net/ipv4/ip_forward", "0")
	h.Sysctl("net/ipv6/conf/all/forwarding", "0")
	gw := &kernelNode{nodeDir: newNodeDir(t, "gw"), host: h}
	gw.body = offerBlock("192.168.10.0/24", true) + offerBlock("fd10::/64", false)
	record := filepath.Join(gw.dir, "forwarding.json")

	gw.start(t)
	if got := forwarding(h.Netns); got != "1/1" {
		t.Fatalf("a node offering IPv4 and IPv6 routes: forwarding %s, want 1/1", got)
	}
	if _, err := os.Stat(record); err != nil {
		t.Errorf("no record of the original values while forwarding is on: %v", err)
	}
	gw.proc.Stop(syscall.SIGKILL, 5*time.Second)
	if got := forwarding(h.Netns); got != "1/1" {
		t.Fatalf("after SIGKILL: forwarding %s; the test needs it left on", got)
	}

	gw.start(t)
	if got := forwarding(h.Netns); got != "1/1" {
		t.Fatalf("restarted: forwarding %s, want 1/1", got)
	}
	gw.stop(t)
	if got := forwarding(h.Netns); got != "0/0" {
		t.Fatalf("after a crash, a restart and a clean stop: forwarding %s, want 0/0 as before the first start", got)
	}
	if _, err := os.Stat(record); !os.IsNotExist(err) {
		t.Errorf("record left after a clean stop: %v", err)
	}
	if out := gw.proc.Output(); !strings.Contains(out, "switched forwarding back off") {
		t.Errorf("the restart did not say it restored forwarding:\n%s", out)
	}
}

// ownedState is what a kernel-mode node owns in its namespace: the ip
// rules, table 4610, and the nftables table inet tomoe rule by rule with
// the rules' handles (a table replaced by an identical one gets new ones).
func ownedState(t *testing.T, ns *testnet.Netns) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "-4", "rule", "show"}, {"ip", "-6", "rule", "show"},
		{"ip", "-4", "route", "show", "table", "4610"}, {"ip", "-6", "route", "show", "table", "4610"},
	} {
		out, _ := ns.Try(args...)
		fmt.Fprintf(&b, "%s:\n%s", strings.Join(args, " "), out)
	}
	var err error
	ns.Do(func() { err = dumpNftTable(&b, "tomoe") })
	if err != nil {
		fmt.Fprintf(&b, "nft table inet tomoe: %v\n", err)
	}
	return b.String()
}

// dumpNftTable writes the inet table's chains and rules to b; it runs in
// the namespace of the calling thread.
func dumpNftTable(b *strings.Builder, name string) error {
	c, err := nftables.New()
	if err != nil {
		return err
	}
	table, err := c.ListTableOfFamily(name, nftables.TableFamilyINet)
	if err != nil {
		return err
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return err
	}
	for _, ch := range chains {
		if ch.Table.Name != name {
			continue
		}
		rules, err := c.GetRules(table, ch)
		if err != nil {
			return err
		}
		fmt.Fprintf(b, "chain %s: %d rules\n", ch.Name, len(rules))
		for _, r := range rules {
			fmt.Fprintf(b, "  handle %d:", r.Handle)
			for _, e := range r.Exprs {
				fmt.Fprintf(b, " %+v", e)
			}
			b.WriteString("\n")
		}
	}
	return nil
}

// One kernel-mode node per network namespace: a second one in the same
// namespace (another TUN name, another port, another key) refuses to start
// and touches nothing of the first's; nodes in two namespaces of one host
// both run.
func TestOneKernelNodePerNetns(t *testing.T) {
	parallel(t, 10*time.Second)
	testnet.RequireRoot(t)
	lan := testnet.NewLAN(t, "a", "b")
	a := &kernelNode{nodeDir: newNodeDir(t, "a"), host: lan.Hosts["a"]}
	b := &kernelNode{nodeDir: newNodeDir(t, "b"), host: lan.Hosts["b"]}
	a.body = peerBlock(b.nodeDir, b.endpoint())
	b.body = peerBlock(a.nodeDir, a.endpoint()) + allowBlock(a.addr(), "tcp", "7")
	a.start(t)
	b.start(t)
	b.listenTCP(t, 7)
	talk := func(what string) {
		t.Helper()
		c, err := a.dialTCP(b.addr(), 7, 10*time.Second)
		if err != nil {
			t.Fatalf("%s: a -> b:7: %v", what, err)
		}
		defer c.Close()
		if err := testnet.RoundTrip(c, what, 5*time.Second); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	talk("two nodes in two namespaces")
	before := ownedState(t, a.host.Netns)
	if !strings.Contains(before, "fc00::/8 dev tomoe0") || !strings.Contains(before, "chain ") {
		t.Fatalf("a's state lacks its routes or firewall:\n%s", before)
	}

	second := newNodeDir(t, "a2")
	second.writeTop(t, "", "[tun]\nmode = \"kernel\"\nname = \"tomoe1\"\n[listen]\nudp = \"0.0.0.0:4611\"\n")
	proc := a.host.Start(t, "a2", tomoeBin, "up", "-c", second.config())
	testnet.WaitFor(t, 15*time.Second, "the second node in a's namespace to exit or change a's state", func() bool {
		return proc.Exited() || ownedState(t, a.host.Netns) != before
	})
	if !proc.Exited() {
		t.Errorf("a second kernel-mode node started in a's namespace")
	} else {
		var ee *exec.ExitError
		if err := proc.Stop(syscall.SIGTERM, time.Second); !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Errorf("the second node exited with %v, want exit status 1", err)
		}
		out := proc.Output()
		for _, want := range []string{"another tomoe runs in kernel mode in this network namespace", "pid ", "tun.mode = \"userspace\""} {
			if !strings.Contains(out, want) {
				t.Errorf("the second node's error lacks %q:\n%s", want, out)
			}
		}
	}
	if after := ownedState(t, a.host.Netns); after != before {
		t.Errorf("the second node changed a's state.\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if out, err := a.host.Try("ip", "link", "show", "tomoe1"); err == nil {
		t.Errorf("the second node created its TUN:\n%s", out)
	}
	talk("after the second node")
}
