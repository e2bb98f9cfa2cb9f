//go:build linux

package routes

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/tomoe-net/tomoe/internal/testnet"
)

// One lock per network namespace: a second taker in the same namespace is
// told who holds it; another namespace has its own.
func TestNetnsLock(t *testing.T) {
	testnet.RequireRoot(t)
	a, b := testnet.NewNetns(t, "lock-a"), testnet.NewNetns(t, "lock-b")
	lock := func(ns *testnet.Netns) (*NetnsLock, error) {
		var l *NetnsLock
		var err error
		ns.Do(func() { l, err = LockNetns() })
		if l != nil {
			t.Cleanup(func() { l.Close() })
		}
		return l, err
	}
	la, err := lock(a)
	if err != nil {
		t.Fatalf("first lock in %s: %v", a.Name, err)
	}
	_, err = lock(a)
	if err == nil {
		t.Fatal("a second lock in the same namespace was granted")
	}
	for _, want := range []string{"another tomoe runs in kernel mode in this network namespace", fmt.Sprintf("pid %d, uid 0", os.Getpid()), "tun.mode = \"userspace\""} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("second lock: %v\nwant it to contain %q", err, want)
		}
	}
	if _, err := lock(b); err != nil {
		t.Fatalf("lock in another namespace: %v", err)
	}
	if err := la.Close(); err != nil {
		t.Fatal(err)
	}
	if err := la.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := lock(a); err != nil {
		t.Fatalf("lock after the holder released it: %v", err)
	}
}
