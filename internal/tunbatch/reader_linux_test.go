package tunbatch

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/tomoe-net/tomoe/internal/testnet"
)

// readerWithSender makes a real TUN device (wireguard-go's, with offloads)
// in a namespace of its own, a Reader on it, and a UDP socket in the
// namespace whose datagrams the kernel routes into the device.
func readerWithSender(t *testing.T) (*Reader, net.Conn) {
	t.Helper()
	testnet.RequireRoot(t)
	ns := testnet.NewNetns(t, "tunb")
	var dev tun.Device
	var err error
	ns.Do(func() { dev, err = tun.CreateTUN("tb0", 1400) })
	if err != nil {
		t.Fatalf("create tun: %v", err)
	}
	t.Cleanup(func() { dev.Close() })
	r := NewReader(dev, dev.File())
	if r == nil {
		t.Fatal("no Reader for a TUN device with offloads")
	}
	ns.Run("ip", "link", "set", "tb0", "up")
	ns.Run("ip", "addr", "add", "fd00:7b::1/64", "dev", "tb0", "nodad")
	var conn net.Conn
	ns.Do(func() { conn, err = net.Dial("udp6", "[fd00:7b::2]:9") })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return r, conn
}

// A real TUN device (wireguard-go's, with offloads) holding many queued
// single packets: one Read hands them all up, in order, where the
// device's own Read hands up one.
func TestReaderFillsBatch(t *testing.T) {
	r, conn := readerWithSender(t)

	const sent = 60
	for i := range sent {
		if _, err := fmt.Fprintf(conn, "datagram %03d", i); err != nil {
			t.Fatal(err)
		}
	}
	bufs := make([][]byte, 128)
	for i := range bufs {
		bufs[i] = make([]byte, 65535)
	}
	sizes := make([]int, len(bufs))
	var got []string
	// The queue may also hold router solicitations or MLD reports; the
	// datagrams are read in at most a few Reads, all in order.
	for reads := 0; len(got) < sent; reads++ {
		if reads == 5 {
			t.Fatalf("%d reads gave %d of %d datagrams", reads, len(got), sent)
		}
		n, err := r.Read(bufs, sizes, 16)
		if err != nil {
			t.Fatal(err)
		}
		if reads == 0 && n < 2 {
			t.Fatalf("the first Read gave %d packets with %d queued", n, sent)
		}
		for i := range n {
			p := bufs[i][16 : 16+sizes[i]]
			if len(p) == 40+8+12 && p[6] == 17 {
				if !l4Valid(p, 40, protoUDP) {
					t.Errorf("datagram %q: bad UDP checksum", p[48:])
				}
				got = append(got, string(p[48:]))
			}
		}
	}
	for i, g := range got {
		if want := fmt.Sprintf("datagram %03d", i); g != want {
			t.Fatalf("packet %d is %q, want %q", i, g, want)
		}
	}
	if extra, dropped := r.Stats(); extra == 0 || dropped != 0 {
		t.Errorf("stats: %d read ahead, %d dropped", extra, dropped)
	}
}

// A frame read ahead that does not fit what is left of the batch is kept
// and handed out first by the next Read, so nothing is lost or reordered.
func TestReaderKeepsWhatDoesNotFit(t *testing.T) {
	r, conn := readerWithSender(t)
	// Small, large, small: the large one does not fit the second buffer.
	for _, n := range []int{10, 1000, 10} {
		if _, err := conn.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	bufs := [][]byte{make([]byte, 16+1300), make([]byte, 16+100)}
	sizes := make([]int, 2)
	var lens []int
	for reads := 0; len(lens) < 3; reads++ {
		if reads == 6 {
			t.Fatalf("%d reads gave datagrams of %v", reads, lens)
		}
		n, err := r.Read(bufs, sizes, 16)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			p := bufs[i][16 : 16+sizes[i]]
			if len(p) >= 48 && p[6] == 17 {
				lens = append(lens, len(p)-48)
			}
		}
	}
	if fmt.Sprint(lens) != "[10 1000 10]" {
		t.Fatalf("datagrams of %v, want [10 1000 10]", lens)
	}
}

// ipChecksumsValid reports whether an IPv4 packet's header checksum and
// an IPv4 or IPv6 (no extension headers) packet's TCP or UDP checksum are
// right.
func ipChecksumsValid(p []byte) bool {
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		ihl := int(p[0]&0xf) * 4
		if len(p) < ihl || fold(refSum(p[:ihl], 0)) != 0xffff {
			return false
		}
		if p[9] == protoTCP || p[9] == protoUDP {
			return l4Valid(p, ihl, p[9])
		}
	case len(p) >= 40 && p[0]>>4 == 6:
		if p[6] == protoTCP || p[6] == protoUDP {
			return l4Valid(p, 40, p[6])
		}
	}
	return true
}

// pumpedPair makes two real TUN devices (wireguard-go's, with offloads),
// each in its own namespace (A: 10.77.0.1, fd00:77::1; B: .2, ::2), and
// pumps each one's packets, read through a Reader, into the other's Write.
// It counts the packets pumped with a bad IPv4, TCP or UDP checksum, and
// the frames the Reader dropped.
func pumpedPair(t *testing.T) (nsA, nsB *testnet.Netns, bad, pumped *atomic.Int64) {
	nsA, nsB = testnet.NewNetns(t, "tbA"), testnet.NewNetns(t, "tbB")
	bad, pumped = new(atomic.Int64), new(atomic.Int64)
	var devs [2]tun.Device
	for i, ns := range []*testnet.Netns{nsA, nsB} {
		var err error
		ns.Do(func() { devs[i], err = tun.CreateTUN("tb0", 1400) })
		if err != nil {
			t.Fatalf("create tun: %v", err)
		}
		t.Cleanup(func() { devs[i].Close() })
		ns.Run("ip", "link", "set", "tb0", "up")
		ns.Run("ip", "addr", "add", fmt.Sprintf("10.77.0.%d/24", i+1), "dev", "tb0")
		ns.Run("ip", "addr", "add", fmt.Sprintf("fd00:77::%d/64", i+1), "dev", "tb0", "nodad")
	}
	pump := func(from, to tun.Device) {
		r := NewReader(from, from.File())
		bufs := make([][]byte, from.BatchSize())
		for i := range bufs {
			bufs[i] = make([]byte, 16+65535)
		}
		sizes := make([]int, len(bufs))
		out := make([][]byte, len(bufs))
		for {
			n, err := r.Read(bufs, sizes, 16)
			if err != nil {
				return
			}
			for i := range n {
				if !ipChecksumsValid(bufs[i][16 : 16+sizes[i]]) {
					bad.Add(1)
				}
				out[i] = bufs[i][:16+sizes[i]]
			}
			pumped.Add(int64(n))
			if _, dropped := r.Stats(); dropped > 0 {
				bad.Add(int64(dropped)) // frames Split refused
			}
			if _, err := to.Write(out[:n], 16); err != nil && errors.Is(err, os.ErrClosed) {
				return
			}
		}
	}
	go pump(devs[0], devs[1])
	go pump(devs[1], devs[0])
	return nsA, nsB, bad, pumped
}

// Real TCP traffic through two real TUN devices pumped by Readers: the
// kernel hands up TSO super-packets (split by wireguard-go's Read for the
// first frame of a batch, by Split for the rest). Every packet pumped must
// carry right checksums, and the stream must arrive whole.
func TestReaderTCPTransfer(t *testing.T) {
	testnet.RequireRoot(t)
	for _, c := range []struct{ network, addr string }{
		{"tcp4", "10.77.0.2:5001"},
		{"tcp6", "[fd00:77::2]:5001"},
	} {
		t.Run(c.network, func(t *testing.T) {
			nsA, nsB, bad, pumped := pumpedPair(t)
			var ln net.Listener
			var err error
			nsB.Do(func() { ln, err = net.Listen(c.network, c.addr) })
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			const total = 64 << 20
			sum := make(chan [32]byte, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					sum <- [32]byte{}
					return
				}
				defer c.Close()
				h := sha256.New()
				io.Copy(h, io.LimitReader(c, total))
				sum <- [32]byte(h.Sum(nil))
			}()
			var conn net.Conn
			nsA.Do(func() { conn, err = net.DialTimeout(c.network, c.addr, 10*time.Second) })
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			data := make([]byte, total)
			rand.New(rand.NewSource(1)).Read(data)
			start := time.Now()
			conn.SetWriteDeadline(time.Now().Add(60 * time.Second))
			if _, err := conn.Write(data); err != nil {
				t.Fatalf("write: %v", err)
			}
			select {
			case got := <-sum:
				if got != sha256.Sum256(data) {
					t.Fatal("the stream arrived changed")
				}
			case <-time.After(60 * time.Second):
				t.Fatal("the stream did not arrive in 60s")
			}
			t.Logf("%d MiB in %v; %d packets pumped", total>>20, time.Since(start), pumped.Load())
			if bad.Load() != 0 {
				t.Fatalf("%d packets with a bad checksum", bad.Load())
			}
		})
	}
}

// Real UDP GSO (UDP_SEGMENT, which the kernel hands to the TUN as USO
// super-packets where it can): every datagram arrives whole, with a right
// checksum, and in order.
func TestReaderUDPGSO(t *testing.T) {
	testnet.RequireRoot(t)
	for _, c := range []struct{ network, addr string }{
		{"udp4", "10.77.0.2:5002"},
		{"udp6", "[fd00:77::2]:5002"},
	} {
		t.Run(c.network, func(t *testing.T) {
			nsA, nsB, bad, _ := pumpedPair(t)
			var rx net.PacketConn
			var err error
			nsB.Do(func() { rx, err = net.ListenPacket(c.network, c.addr) })
			if err != nil {
				t.Fatal(err)
			}
			defer rx.Close()
			rx.(*net.UDPConn).SetReadBuffer(4 << 20)
			var tx net.Conn
			nsA.Do(func() { tx, err = net.Dial(c.network, c.addr) })
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Close()
			const seg, perWrite, writes = 1001, 7, 200 // the last segment of a write is shorter
			raw, err := tx.(*net.UDPConn).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			raw.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, seg) })
			if err != nil {
				t.Skipf("UDP_SEGMENT: %v", err)
			}
			got := make(chan error, 1)
			var received atomic.Int64
			go func() {
				buf := make([]byte, 2000)
				next := 0
				for next < writes*perWrite {
					rx.SetReadDeadline(time.Now().Add(10 * time.Second))
					n, _, err := rx.ReadFrom(buf)
					if err != nil {
						got <- fmt.Errorf("after %d datagrams: %w", next, err)
						return
					}
					want := seg
					if next%perWrite == perWrite-1 {
						want = seg - 500
					}
					if n != want || int(binary.BigEndian.Uint32(buf)) != next || buf[n-1] != byte(next) {
						got <- fmt.Errorf("datagram %d: %d bytes, seq %d", next, n, binary.BigEndian.Uint32(buf))
						return
					}
					next++
					received.Store(int64(next))
				}
				got <- nil
			}()
			msg := make([]byte, seg*perWrite-500)
			for w := range writes {
				for i := range perWrite {
					d := msg[i*seg : min((i+1)*seg, len(msg))]
					binary.BigEndian.PutUint32(d, uint32(w*perWrite+i))
					d[len(d)-1] = byte(w*perWrite + i)
				}
				if _, err := tx.Write(msg); err != nil {
					t.Fatal(err)
				}
				if w%4 == 3 {
					// UDP has no flow control: let the receiver catch up.
					testnet.WaitFor(t, 10*time.Second, "the datagrams so far", func() bool {
						return received.Load() == int64((w+1)*perWrite) || len(got) > 0
					})
				}
			}
			if err := <-got; err != nil {
				t.Fatal(err)
			}
			if bad.Load() != 0 {
				t.Fatalf("%d packets with a bad checksum", bad.Load())
			}
		})
	}
}

// A TUN device with offloads whose file is blocking (tun.CreateTUNFromFile
// on a descriptor opened without O_NONBLOCK): reading ahead on it would
// wait in read(2), so NewReader must refuse it (nil: dev.Read alone), as
// it says, rather than hand out a Reader whose Read hangs once the queue
// is empty.
func TestReaderRefusesBlockingFile(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.NewNetns(t, "tunb")
	var dev tun.Device
	var err error
	ns.Do(func() {
		fd, oerr := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if oerr != nil {
			err = oerr
			return
		}
		ifr, _ := unix.NewIfreq("tb0")
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return
		}
		dev, err = tun.CreateTUNFromFile(os.NewFile(uintptr(fd), "/dev/net/tun"), 1400)
	})
	if err != nil {
		t.Fatalf("create tun: %v", err)
	}
	defer dev.Close()
	if dev.BatchSize() <= 1 {
		t.Skip("no offloads on this kernel's TUN")
	}
	r := NewReader(dev, dev.File())
	if r == nil {
		return
	}
	// NewReader accepted it: a Read with one packet queued must still
	// return.
	ns.Run("ip", "link", "set", "tb0", "up")
	ns.Run("ip", "addr", "add", "10.78.0.1/24", "dev", "tb0")
	var conn net.Conn
	ns.Do(func() { conn, err = net.Dial("udp4", "10.78.0.2:9") })
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("one")); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		bufs, sizes := batch(8, 16+65535)
		r.Read(bufs, sizes, 16)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("NewReader took a blocking file, and its Read hangs in the read-ahead once the queue is empty")
	}
}

// NewReader takes the device and its file apart; it must read ahead only
// on a file that really hands up virtio-net headers of the size Split
// parses, whatever dev.BatchSize() claims (here a device of batches over
// a TUN file opened without IFF_VNET_HDR, whose packets would be parsed as
// headers).
func TestReaderRefusesFileWithoutHeaders(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.NewNetns(t, "tunb")
	var f *os.File
	var err error
	ns.Do(func() {
		fd, oerr := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if oerr != nil {
			err = oerr
			return
		}
		ifr, _ := unix.NewIfreq("tb0")
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return
		}
		f = os.NewFile(uintptr(fd), "/dev/net/tun")
	})
	if err != nil {
		t.Fatalf("open tun: %v", err)
	}
	defer f.Close()
	dev := testnet.NewChanTUN(1400) // BatchSize() 16
	defer dev.Close()
	if dev.BatchSize() <= 1 {
		t.Fatal("test device claims no batches")
	}
	if r := NewReader(dev, f); r != nil {
		t.Fatal("NewReader reads ahead on a TUN file without virtio-net headers")
	}
}
