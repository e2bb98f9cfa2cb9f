package tunwrap

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// A device without a file (as Windows' Wintun adapter is) is read by a
// goroutine: Read returns its packets in order at the offset asked for,
// Interrupt wakes a Read with (0, nil), and Close ends the goroutine and
// makes Read fail (goleak in TestMain checks the goroutine is gone).
func TestKernelWithoutFile(t *testing.T) {
	ch := tuntest.NewChannelTUN()
	k, err := Kernel(ch.TUN())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := k.(*pumpedTUN); !ok {
		t.Fatalf("Kernel gave %T for a device without a file", k)
	}
	const offset = 16
	bufs := [][]byte{make([]byte, 2000), make([]byte, 2000), make([]byte, 2000)}
	sizes := make([]int, len(bufs))
	var want [][]byte
	for i := range 5 {
		pkt := []byte(fmt.Sprintf("packet %d", i))
		want = append(want, pkt)
		ch.Outbound <- pkt // taken by the pump
	}
	var got [][]byte
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < len(want) && time.Now().Before(deadline) {
		n, err := k.Read(bufs, sizes, offset)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			got = append(got, append([]byte(nil), bufs[i][offset:offset+sizes[i]]...))
		}
	}
	if len(got) != len(want) {
		t.Fatalf("read %d packets, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("packet %d: %q, want %q", i, got[i], want[i])
		}
	}

	for range 3 {
		done := make(chan error, 1)
		go func() {
			n, err := k.Read(bufs, sizes, offset)
			if err == nil && n != 0 {
				err = fmt.Errorf("read %d packets from an idle device", n)
			}
			done <- err
		}()
		k.Interrupt()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("interrupted Read: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Interrupt did not wake Read")
		}
	}

	done := make(chan error, 1)
	go func() {
		_, err := k.Read(bufs, sizes, offset)
		done <- err
	}()
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Read after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end Read")
	}
}
