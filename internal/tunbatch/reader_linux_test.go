package tunbatch

import (
	"fmt"
	"net"
	"testing"

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
