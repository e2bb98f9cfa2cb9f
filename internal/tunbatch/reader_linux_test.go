package tunbatch

import (
	"crypto/sha256"
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

// A real TUN device (wireguard-go's, with offloads) holding many queued
// single packets: one Read hands them all up, in order, where the
// device's own Read hands up one.
func TestReaderFillsBatch(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.NewNetns(t, "tunb")
	var dev tun.Device
	var err error
	ns.Do(func() { dev, err = tun.CreateTUN("tb0", 1400) })
	if err != nil {
		t.Fatalf("create tun: %v", err)
	}
	defer dev.Close()
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
	defer conn.Close()

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
	testnet.RequireRoot(t)
	ns := testnet.NewNetns(t, "tunb")
	var dev tun.Device
	var err error
	ns.Do(func() { dev, err = tun.CreateTUN("tb0", 1400) })
	if err != nil {
		t.Fatalf("create tun: %v", err)
	}
	defer dev.Close()
	r := NewReader(dev, dev.File())
	ns.Run("ip", "link", "set", "tb0", "up")
	ns.Run("ip", "addr", "add", "fd00:7b::1/64", "dev", "tb0", "nodad")
	var conn net.Conn
	ns.Do(func() { conn, err = net.Dial("udp6", "[fd00:7b::2]:9") })
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
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
// its TCP or UDP checksum are right.
func ipChecksumsValid(p []byte) bool {
	if len(p) < 20 || p[0]>>4 != 4 {
		return true // not IPv4: not checked here
	}
	ihl := int(p[0]&0xf) * 4
	if len(p) < ihl || fold(refSum(p[:ihl], 0)) != 0xffff {
		return false
	}
	switch p[9] {
	case protoTCP, protoUDP:
		return l4Valid(p, ihl, p[9])
	}
	return true
}

// Real TCPv4 traffic through two real TUN devices in two namespaces,
// pumped by two Readers into the other device's Write: the kernel hands
// up TSO super-packets (split by wireguard-go's Read for the first frame
// of a batch, by Split for the rest). Every packet pumped must carry right
// IPv4 and TCP checksums, and the stream must arrive whole.
func TestReaderTCPv4Transfer(t *testing.T) {
	testnet.RequireRoot(t)
	nsA, nsB := testnet.NewNetns(t, "tbA"), testnet.NewNetns(t, "tbB")
	var devA, devB tun.Device
	var err error
	nsA.Do(func() { devA, err = tun.CreateTUN("tb0", 1400) })
	if err != nil {
		t.Fatalf("create tun: %v", err)
	}
	defer devA.Close()
	nsB.Do(func() { devB, err = tun.CreateTUN("tb0", 1400) })
	if err != nil {
		t.Fatalf("create tun: %v", err)
	}
	defer devB.Close()
	for i, ns := range []*testnet.Netns{nsA, nsB} {
		ns.Run("ip", "link", "set", "tb0", "up")
		ns.Run("ip", "addr", "add", fmt.Sprintf("10.77.0.%d/24", i+1), "dev", "tb0")
	}
	var bad, pumped, maxPkt atomic.Int64
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
				p := bufs[i][16 : 16+sizes[i]]
				if !ipChecksumsValid(p) {
					bad.Add(1)
				}
				if int64(len(p)) > maxPkt.Load() {
					maxPkt.Store(int64(len(p)))
				}
				out[i] = bufs[i][:16+sizes[i]]
			}
			pumped.Add(int64(n))
			if _, err := to.Write(out[:n], 16); err != nil && errors.Is(err, os.ErrClosed) {
				return
			}
		}
	}
	go pump(devA, devB)
	go pump(devB, devA)

	var ln net.Listener
	nsB.Do(func() { ln, err = net.Listen("tcp4", "10.77.0.2:5001") })
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
	var c net.Conn
	nsA.Do(func() { c, err = net.DialTimeout("tcp4", "10.77.0.2:5001", 10*time.Second) })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := make([]byte, total)
	rand.New(rand.NewSource(1)).Read(data)
	start := time.Now()
	c.SetWriteDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.Write(data); err != nil {
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
	t.Logf("%d MiB in %v; %d packets pumped, largest %d bytes", total>>20, time.Since(start), pumped.Load(), maxPkt.Load())
	if bad.Load() != 0 {
		t.Fatalf("%d packets with a bad IPv4 or TCP checksum", bad.Load())
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
