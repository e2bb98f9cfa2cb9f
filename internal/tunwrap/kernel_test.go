package tunwrap

import (
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/tomoe-net/tomoe/internal/testnet"
)

// The kernel adapter's Interrupt must wake a Read blocked on a real, idle
// TUN device, and an Interrupt before Read must make it return at once.
func TestKernelInterrupt(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.NewNetns(t, "tun")
	h, err := netns.GetFromName(ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var dev tun.Device
	if err := testnet.Within(h, func() { dev, err = tun.CreateTUN("tt0", 1400) }); err != nil || dev == nil {
		t.Fatalf("create tun: %v", err)
	}
	k, err := Kernel(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	bufs := [][]byte{make([]byte, 65535+100)}
	sizes := []int{0}
	for round := 0; round < 3; round++ {
		done := make(chan error, 1)
		go func() {
			n, err := k.Read(bufs, sizes, 16)
			if err == nil && n != 0 {
				t.Errorf("read %d packets from an idle device", n)
			}
			done <- err
		}()
		time.Sleep(50 * time.Millisecond)
		k.Interrupt()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("interrupted Read: %v", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Interrupt did not wake the blocked Read")
		}
	}
	// Interrupt first, then Read.
	k.Interrupt()
	start := time.Now()
	if n, err := k.Read(bufs, sizes, 16); n != 0 || err != nil {
		t.Fatalf("read %d %v", n, err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("pre-armed Interrupt did not make Read return promptly")
	}
}
