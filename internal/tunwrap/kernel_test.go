package tunwrap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/tomoe-net/tomoe/internal/testnet"
)

// The kernel adapter's Interrupt must wake a Read blocked on a real, idle
// TUN device, and an Interrupt before Read must make it return at once.
func TestKernelInterrupt(t *testing.T) {
	_, k := kernelInNetns(t)
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

// Under traffic, with frames that often do not fit what is left of the
// batch (kept by tunbatch for the next Read) and Interrupts arriving at
// any time, the kernel adapter loses, duplicates and reorders nothing,
// every Interrupt makes a Read return (0, nil), and Close ends reading
// with os.ErrClosed.
func TestKernelBatchUnderInterrupts(t *testing.T) {
	ns, k := kernelInNetns(t)
	if kt, ok := k.(*kernelTUN); !ok || kt.batch == nil {
		t.Fatal("the kernel adapter does not read in batches (tunbatch)")
	}
	conn := udpThrough(t, ns)

	// Buffers alternately large and small: a large datagram read ahead
	// into a small buffer's place is kept for the next Read.
	bufs := make([][]byte, 16)
	for i := range bufs {
		if i%2 == 0 {
			bufs[i] = make([]byte, 16+1400)
		} else {
			bufs[i] = make([]byte, 16+200)
		}
	}
	sizes := make([]int, len(bufs))
	var got atomic.Int64
	var interrupts, zeroReads atomic.Int64
	readErr := make(chan error, 1)
	go func() {
		next := 0
		for {
			n, err := k.Read(bufs, sizes, 16)
			if err != nil {
				readErr <- err
				return
			}
			if n == 0 {
				zeroReads.Add(1)
			}
			for i := range n {
				p := bufs[i][16 : 16+sizes[i]]
				if len(p) < 28+4 || p[0]>>4 != 4 || p[9] != 17 {
					continue
				}
				seq := int(binary.BigEndian.Uint32(p[28:]))
				if seq != next {
					readErr <- fmt.Errorf("datagram %d after %d", seq, next-1)
					return
				}
				next++
				got.Add(1)
			}
		}
	}()
	const bursts, per = 100, 64
	msg := make([]byte, 1200)
	for b := range bursts {
		for i := range per {
			seq := b*per + i
			size := 4
			if seq%3 == 1 {
				size = 1000
			}
			binary.BigEndian.PutUint32(msg, uint32(seq))
			if _, err := conn.Write(msg[:size]); err != nil {
				t.Fatal(err)
			}
			if seq%17 == 0 {
				k.Interrupt()
				interrupts.Add(1)
			}
		}
		testnet.WaitFor(t, 10*time.Second, "the burst read", func() bool {
			select {
			case err := <-readErr:
				t.Fatalf("Read: %v", err)
			default:
			}
			return got.Load() == int64((b+1)*per)
		})
	}
	if zeroReads.Load() == 0 {
		t.Errorf("%d Interrupts, no Read returned (0, nil)", interrupts.Load())
	}
	k.Close()
	select {
	case err := <-readErr:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Read after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not end after Close")
	}
	t.Logf("%d datagrams, %d Interrupts, %d (0, nil) Reads", got.Load(), interrupts.Load(), zeroReads.Load())
}

// kernelInNetns makes a real TUN device, tt0, in a namespace of its own
// and adapts it with Kernel.
func kernelInNetns(t *testing.T) (*testnet.Netns, Device) {
	t.Helper()
	testnet.RequireRoot(t)
	ns := testnet.NewNetns(t, "tun")
	var dev tun.Device
	var err error
	ns.Do(func() { dev, err = tun.CreateTUN("tt0", 1400) })
	if err != nil || dev == nil {
		t.Fatalf("create tun: %v", err)
	}
	k, err := Kernel(dev)
	if err != nil {
		t.Fatal(err)
	}
	return ns, k
}

// Datagrams queued on a real TUN before anyone reads come back in one
// batch, and the node's metrics (Wrapper.ReadAhead) count those read
// ahead; a device without batched reads reports none.
func TestKernelReadAheadCounted(t *testing.T) {
	ns, k := kernelInNetns(t)
	w := New(k, Config{})
	defer w.Close()
	if extra, malformed, ok := w.ReadAhead(); !ok || extra != 0 || malformed != 0 {
		t.Fatalf("fresh kernel TUN: ReadAhead = %d, %d, %v; want 0, 0, true", extra, malformed, ok)
	}
	plain := New(discardDev{}, Config{})
	_, _, ok := plain.ReadAhead()
	plain.Close()
	if ok {
		t.Fatal("a device that reads one frame at a time reports read-ahead counters")
	}
	conn := udpThrough(t, ns)
	const sent = 10
	for i := range sent {
		if _, err := conn.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	bufs := make([][]byte, 16)
	for i := range bufs {
		bufs[i] = make([]byte, 16+1500)
	}
	sizes := make([]int, len(bufs))
	// A datagram lost would leave Read waiting: Close ends it.
	stop := time.AfterFunc(10*time.Second, func() { k.Close() })
	defer stop.Stop()
	got := 0
	for reads := 0; got < sent; reads++ {
		if reads == 100 {
			t.Fatalf("%d of %d datagrams after 100 reads", got, sent)
		}
		n, err := k.Read(bufs, sizes, 16)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if p := bufs[i][16 : 16+sizes[i]]; len(p) >= 28 && p[0]>>4 == 4 && p[9] == 17 {
				got++
			}
		}
	}
	extra, malformed, _ := w.ReadAhead()
	if extra == 0 || malformed != 0 {
		t.Fatalf("after %d queued datagrams: %d read ahead, %d malformed; want some, none", sent, extra, malformed)
	}
}

// udpThrough brings tt0 up as 10.79.0.1/24 and returns a UDP socket in ns
// whose datagrams (to 10.79.0.2:9) go out through it, closed at the end of
// the test.
func udpThrough(t *testing.T, ns *testnet.Netns) net.Conn {
	t.Helper()
	ns.Run("ip", "link", "set", "tt0", "up")
	ns.Run("ip", "addr", "add", "10.79.0.1/24", "dev", "tt0")
	var conn net.Conn
	var err error
	ns.Do(func() { conn, err = net.Dial("udp4", "10.79.0.2:9") })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
