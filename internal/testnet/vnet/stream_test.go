package vnet

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// echo serves ln until it closes, echoing every connection.
func echo(t testing.TB, ln net.Listener) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
}

func roundTrip(c net.Conn, msg []byte) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo differs")
	}
	return nil
}

func dial(t testing.TB, h *Host, addr string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := h.Dial(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("%s dial %s: %v", h.Name(), addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// A stream from behind a NAT to a public host: the server sees the NAT's
// address; the way in is closed.
func TestStreamThroughNAT(t *testing.T) {
	s := newSite(t, newWorld(t, Config{}), NATConfig{})
	ln := must(s.s1.Listen("tcp", ":443"))
	accepted := make(chan net.Addr, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		accepted <- c.RemoteAddr()
		defer c.Close()
		io.Copy(c, c)
	}()
	defer ln.Close()
	c := dial(t, s.a, "203.0.113.1:443")
	if err := roundTrip(c, []byte("through the NAT")); err != nil {
		t.Fatal(err)
	}
	if got := (<-accepted).(*net.TCPAddr).AddrPort(); got.Addr() != s.nat.Public() {
		t.Errorf("server saw %v, want the NAT's %v", got, s.nat.Public())
	}
	if got := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr(); got != s.a.Addr() {
		t.Errorf("client's local address %v, want %v", got, s.a.Addr())
	}

	// Inbound: nothing listens on the NAT, and the inside host's
	// listener is not reachable through it.
	echo(t, must(s.a.Listen("tcp", ":22")))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.s1.Dial(ctx, "tcp", s.nat.Public().String()+":22"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("dial into the NAT: %v, want a timeout", err)
	}
	// Inside the LAN it is.
	if err := roundTrip(dial(t, s.b, "10.0.0.2:22"), []byte("lan")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.s2.Dial(context.Background(), "tcp", "203.0.113.1:444"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial a closed port: %v, want ECONNREFUSED", err)
	}
}

// A stream takes its path's delay each way, and carries more than its
// window in order.
func TestStreamDelayAndVolume(t *testing.T) {
	s := newSite(t, newWorld(t, Config{}), NATConfig{})
	s.a.Link().Set(LinkConfig{Delay: 10 * time.Millisecond})
	s.s1.Link().Set(LinkConfig{Delay: 5 * time.Millisecond})
	echo(t, must(s.s1.Listen("tcp", ":7")))
	start := time.Now()
	c := dial(t, s.a, "203.0.113.1:7")
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("dial took %v, want a round trip of 30ms", d)
	}
	start = time.Now()
	if err := roundTrip(c, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("echo took %v, want 30ms", d)
	}
	big := make([]byte, 3*streamWindow+17)
	rand.Read(big)
	errc := make(chan error, 1)
	go func() { _, err := c.Write(big); errc <- err }()
	got := make([]byte, len(big))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, big) {
		t.Fatal("data changed on the way")
	}
}

// Streams break when their path does: a link cut, a NAT's address change,
// a link that starts blocking TCP.
func TestStreamReset(t *testing.T) {
	for _, tc := range []struct {
		name string
		cut  func(s *site)
	}{
		{"link down", func(s *site) { s.a.Link().SetDown(true) }},
		{"NAT outside link down", func(s *site) { s.nat.Outside().SetDown(true) }},
		{"NAT address change", func(s *site) { s.nat.SetPublicAddr(netip.MustParseAddr("203.0.113.51")) }},
		{"TCP blocked", func(s *site) { s.s1.Link().Set(LinkConfig{BlockTCP: true}) }},
		{"world closed", func(s *site) { s.w.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSite(t, newWorld(t, Config{}), NATConfig{})
			echo(t, must(s.s1.Listen("tcp", ":7")))
			c := dial(t, s.a, "203.0.113.1:7")
			if err := roundTrip(c, []byte("before")); err != nil {
				t.Fatal(err)
			}
			readErr := make(chan error, 1)
			go func() {
				_, err := c.Read(make([]byte, 1))
				readErr <- err
			}()
			tc.cut(s)
			select {
			case err := <-readErr:
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("blocked read returned %v, want ECONNRESET", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("a read on the broken stream still blocks")
			}
			if _, err := c.Write([]byte("after")); !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("write after the break: %v, want ECONNRESET", err)
			}
		})
	}
}

// A request over a link that is down or blocks TCP is lost: the dial times
// out, and works again once the link is back.
func TestStreamDialBlocked(t *testing.T) {
	s := newSite(t, newWorld(t, Config{}), NATConfig{})
	echo(t, must(s.s1.Listen("tcp", ":7")))
	for _, cfg := range []LinkConfig{{Down: true}, {BlockTCP: true}} {
		s.a.Link().Set(cfg)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		_, err := s.a.Dial(ctx, "tcp", "203.0.113.1:7")
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("dial over %+v: %v, want a timeout", cfg, err)
		}
	}
	s.a.Link().Set(LinkConfig{})
	if err := roundTrip(dial(t, s.a, "203.0.113.1:7"), []byte("back")); err != nil {
		t.Fatal(err)
	}
}

// Close: the other end reads what was sent, then EOF, and cannot write.
func TestStreamClose(t *testing.T) {
	s := newSite(t, newWorld(t, Config{}), NATConfig{})
	ln := must(s.s1.Listen("tcp", ":9"))
	c := dial(t, s.a, "203.0.113.1:9")
	srv := must(ln.Accept())
	defer srv.Close()
	c.Write([]byte("last words"))
	c.Close()
	got, err := io.ReadAll(srv)
	if err != nil || string(got) != "last words" {
		t.Fatalf("read %q, %v; want the data then EOF", got, err)
	}
	if _, err := srv.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
		t.Errorf("write to a closed peer: %v, want EPIPE", err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read after Close: %v, want net.ErrClosed", err)
	}
	// A closed listener refuses, and its port is free again.
	ln.Close()
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
	if _, err := s.a.Dial(context.Background(), "tcp", "203.0.113.1:9"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial a closed listener: %v, want ECONNREFUSED", err)
	}
	echo(t, must(s.s1.Listen("tcp", ":9")))
	// Read deadlines work.
	c2 := dial(t, s.a, "203.0.113.1:9")
	c2.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := c2.Read(make([]byte, 1)); !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
		t.Errorf("read past its deadline: %v", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
