package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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
