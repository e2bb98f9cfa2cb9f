package main

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge"
	"github.com/tomoe-net/tomoe/internal/identity"
)

func TestPair(t *testing.T) {
	const n = 7
	asked := map[[2]int]bool{}
	for r := range n * (n - 1) {
		from, to := pair(r, n)
		if from == to || from < 0 || from >= n || to < 0 || to >= n {
			t.Fatalf("pair(%d, %d) = %d, %d", r, n, from, to)
		}
		asked[[2]int{from, to}] = true
	}
	if len(asked) != n*(n-1) {
		t.Errorf("%d rounds asked %d distinct pairs, want all %d", n-1, len(asked), n*(n-1))
	}
}

// udpSender is a bridge's socket in the test: what the server sends goes
// out of it.
type udpSender struct{ c *net.UDPConn }

func (u udpSender) SendFrames(frames [][]byte, dst netip.AddrPort) error {
	for _, f := range frames {
		if _, err := u.c.WriteToUDPAddrPort(f, dst); err != nil {
			return err
		}
	}
	return nil
}

// The simulator against a real bridge.Server over loopback: every node
// registers, and lookups are answered with the right keys.
func TestRegisterAndLookup(t *testing.T) {
	bc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	bkey, err := identity.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]identity.PrivateKey, 100)
	var pubs []identity.PublicKey
	for i := range keys {
		if keys[i], err = identity.GeneratePrivateKey(); err != nil {
			t.Fatal(err)
		}
		pubs = append(pubs, keys[i].Public())
	}
	srv, err := bridge.NewServer(bridge.ServerConfig{Key: bkey, Allow: pubs, Sender: udpSender{bc}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, src, err := bc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			srv.HandleFrames([][]byte{buf[:n]}, []netip.AddrPort{src})
		}
	}()

	// 127.0.0.0/8 is local: no route needed.
	s, err := newSim(bc.LocalAddr().(*net.UDPAddr).AddrPort(), bkey.Public(), keys, netip.MustParsePrefix("127.77.0.0/16"), "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	ctx := context.Background()
	reg, err := s.register(ctx, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if reg.Registered != len(keys) || reg.Refused != 0 {
		t.Fatalf("register: %+v", reg)
	}
	if n := len(srv.Nodes()); n != len(keys) {
		t.Fatalf("bridge lists %d nodes, want %d", n, len(keys))
	}
	// Short, so that no node goes over the bridge's lookup limit (burst
	// 200, then 100/s): the bridge drops those silently.
	res, err := s.lookup(ctx, 100*time.Millisecond, 8)
	if err != nil {
		t.Fatal(err)
	}
	if res.Answered == 0 || res.Wrong != 0 || res.Lost != 0 || res.Introductions == 0 {
		t.Fatalf("lookup: %+v", res)
	}
	t.Logf("%d lookups answered in %.2f s", res.Answered, res.Seconds)
}
