package routes

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tomoe-net/tomoe/internal/testnet"
)

// The record of what Enable switched on outlives the Forwarding (as after
// a crash), and Recover puts the original values back.
func TestForwardingRecover(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.NewNetns(t, "fwd")
	ns.Sysctl("net/ipv4/ip_forward", "0")
	ns.Sysctl("net/ipv6/conf/all/forwarding", "0")
	sysctls := func() (v4, v6 string) {
		ns.Do(func() {
			b4, _ := os.ReadFile(forwardSysctls[forward4])
			b6, _ := os.ReadFile(forwardSysctls[forward6])
			v4, v6 = strings.TrimSpace(string(b4)), strings.TrimSpace(string(b6))
		})
		return v4, v6
	}
	record := filepath.Join(t.TempDir(), "state", "forwarding.json")

	var err error
	ns.Do(func() { err = (&Forwarding{Record: record}).Enable(true, true) })
	if err != nil {
		t.Fatal(err)
	}
	if v4, v6 := sysctls(); v4 != "1" || v6 != "1" {
		t.Fatalf("after Enable: ip_forward %s, forwarding %s", v4, v6)
	}
	b, err := os.ReadFile(record)
	if err != nil || !strings.Contains(string(b), `"net.ipv4.ip_forward": "0"`) || !strings.Contains(string(b), `"net.ipv6.conf.all.forwarding": "0"`) {
		t.Fatalf("record: %s, %v", b, err)
	}

	// The Forwarding is gone without Restore: the next start recovers.
	var restored []string
	ns.Do(func() { restored, err = (&Forwarding{Record: record}).Recover() })
	if err != nil || !slices.Equal(restored, []string{forward4, forward6}) {
		t.Fatalf("Recover = %v, %v", restored, err)
	}
	if v4, v6 := sysctls(); v4 != "0" || v6 != "0" {
		t.Fatalf("after Recover: ip_forward %s, forwarding %s", v4, v6)
	}
	if _, err := os.Stat(record); !os.IsNotExist(err) {
		t.Fatalf("record left after Recover: %v", err)
	}
	ns.Do(func() { restored, err = (&Forwarding{Record: record}).Recover() })
	if err != nil || len(restored) != 0 {
		t.Fatalf("Recover without a record = %v, %v", restored, err)
	}

	// A clean run: Restore switches off and removes the record.
	f := &Forwarding{Record: record}
	ns.Do(func() { err = f.Enable(true, false) })
	if err != nil {
		t.Fatal(err)
	}
	ns.Do(func() { err = f.Restore() })
	if err != nil {
		t.Fatal(err)
	}
	if v4, _ := sysctls(); v4 != "0" {
		t.Fatalf("after Restore: ip_forward %s", v4)
	}
	if _, err := os.Stat(record); !os.IsNotExist(err) {
		t.Fatalf("record left after Restore: %v", err)
	}

	// Forwarding that was on already is not ours: no record, no change.
	ns.Sysctl("net/ipv4/ip_forward", "1")
	f = &Forwarding{Record: record}
	ns.Do(func() { err = f.Enable(true, false) })
	if err != nil || len(f.Changed()) != 0 {
		t.Fatalf("Enable over 1: changed %v, %v", f.Changed(), err)
	}
	if _, err := os.Stat(record); !os.IsNotExist(err) {
		t.Fatalf("a record for nothing changed: %v", err)
	}

	// The record is written as root into /proc/sys: anything but the two
	// sysctls and 0 or 1 is refused, and nothing is written.
	for _, bad := range []string{
		`{"version": 1, "original": {"kernel.core_pattern": "0"}}`,
		`{"version": 1, "original": {"net.ipv4.ip_forward": "|/bin/sh"}}`,
	} {
		os.WriteFile(record, []byte(bad), 0o600)
		ns.Do(func() { restored, err = (&Forwarding{Record: record}).Recover() })
		if err == nil || !strings.Contains(err.Error(), "corrupt") {
			t.Errorf("record %s: %v, %v", bad, restored, err)
		}
		if v4, _ := sysctls(); v4 != "1" {
			t.Errorf("record %s changed ip_forward to %s", bad, v4)
		}
	}
}

// TestForwardingRecordOfAnotherBoot: a record left by a crash before a
// reboot, or in another network namespace, is stale: the sysctls now are
// the host's (another program may have set forwarding since), so Recover
// removes it and writes nothing. (Issue 9 review: it used to switch off
// the forwarding Docker had switched on at boot.)
func TestForwardingRecordOfAnotherBoot(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.NewNetns(t, "fwd")
	ns.Sysctl("net/ipv4/ip_forward", "1") // set by someone else since
	record := filepath.Join(t.TempDir(), "forwarding.json")
	for _, stale := range []string{
		`{"version": 1, "original": {"net.ipv4.ip_forward": "0"}, "boot": "00000000-0000-0000-0000-000000000000"}`,
		`{"version": 1, "original": {"net.ipv4.ip_forward": "0"}, "netns": "net:[1]"}`,
	} {
		os.WriteFile(record, []byte(stale), 0o600)
		var restored []string
		var err error
		ns.Do(func() { restored, err = (&Forwarding{Record: record}).Recover() })
		if err != nil || len(restored) != 0 {
			t.Fatalf("stale record %s: Recover = %v, %v", stale, restored, err)
		}
		var v4 string
		ns.Do(func() {
			b, _ := os.ReadFile(forwardSysctls[forward4])
			v4 = strings.TrimSpace(string(b))
		})
		if v4 != "1" {
			t.Fatalf("stale record %s switched ip_forward to %s", stale, v4)
		}
		if _, err := os.Stat(record); !os.IsNotExist(err) {
			t.Fatalf("stale record left: %v", err)
		}
	}
}
