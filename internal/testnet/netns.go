// Package testnet builds the networks tests run on: Linux network
// namespaces joined by veth pairs and bridges, processes started inside
// them, and Go code run inside them. Everything a test makes is removed
// when it ends. Tests that need it call RequireRoot first, which skips them
// with a clear message where they cannot run (not root, no /dev/net/tun, no
// iproute2).
package testnet

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// RequireRoot skips t unless it can create namespaces and TUN devices.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root (network namespaces, TUN devices); CI runs these as root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("skipped: no /dev/net/tun on this machine")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipped: iproute2 (ip) is not installed")
	}
}

// Netns is a named network namespace owned by a test.
type Netns struct {
	Name string
	t    testing.TB
}

// uniq makes names unique across concurrent test processes.
func uniq() string {
	var b [3]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// NewNetns creates a namespace with loopback up; it is deleted (with
// everything in it) when the test ends.
func NewNetns(t testing.TB, label string) *Netns {
	t.Helper()
	name := "tt-" + uniq() + "-" + label
	if len(name) > 40 {
		name = name[:40]
	}
	MustRun(t, "ip", "netns", "add", name)
	ns := &Netns{Name: name, t: t}
	t.Cleanup(func() {
		// Kill what is still running in it, then delete it.
		if out, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
			for _, pid := range strings.Fields(string(out)) {
				exec.Command("kill", "-9", pid).Run()
			}
		}
		exec.Command("ip", "netns", "del", name).Run()
	})
	ns.Run("ip", "link", "set", "lo", "up")
	return ns
}

// Run runs a command in the namespace and fails the test if it fails.
func (ns *Netns) Run(args ...string) string {
	ns.t.Helper()
	return MustRun(ns.t, append([]string{"ip", "netns", "exec", ns.Name}, args...)...)
}

// Try runs a command in the namespace and returns its output and error.
func (ns *Netns) Try(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// Command prepares a command that will run in the namespace.
func (ns *Netns) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Do runs f on an OS thread switched into the namespace. Sockets f creates
// belong to the namespace and stay usable after Do returns.
func (ns *Netns) Do(f func()) {
	ns.t.Helper()
	h, err := netns.GetFromName(ns.Name)
	if err != nil {
		ns.t.Fatalf("netns %s: %v", ns.Name, err)
	}
	defer h.Close()
	if err := Within(h, f); err != nil {
		ns.t.Fatal(err)
	}
}

// Within runs f on a locked OS thread inside the namespace h and switches
// the thread back afterwards. If switching back fails the thread stays
// locked, so the runtime retires it with its goroutine instead of reusing a
// thread in the wrong namespace.
func Within(h netns.NsHandle, f func()) (err error) {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(h); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns: %w", err)
	}
	defer func() {
		if rerr := netns.Set(orig); rerr != nil {
			err = fmt.Errorf("leave netns: %w", rerr)
			return
		}
		runtime.UnlockOSThread()
	}()
	f()
	return nil
}

// MustRun runs a command and fails the test with its output if it fails.
func MustRun(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}
