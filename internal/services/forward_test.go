package services

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// drainServer reads each connection to EOF, then answers with the byte count
// and closes: a reply only arrives if the client's half-close got through.
func drainServer(t *testing.T) net.Listener {
	t.Helper()
	ln := listenLoopback(t)
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
				n, _ := io.Copy(io.Discard, c)
				fmt.Fprintf(c, "got %d bytes", n)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln
}

func TestForwardHalfClose(t *testing.T) {
	srv := drainServer(t)
	_, port, _ := net.SplitHostPort(srv.Addr().String())
	for _, remote := range []string{srv.Addr().String(), "echo.test:" + port, "[127.0.0.1]:" + port} {
		t.Run(remote, func(t *testing.T) {
			ln := listenLoopback(t)
			startServe(t, ln, func(ctx context.Context, ln net.Listener) error {
				return ServeForward(ctx, ln, osDial, testResolve, remote, testLog(t))
			})
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			msg := strings.Repeat("x", 100_000)
			if _, err := io.WriteString(c, msg); err != nil {
				t.Fatal(err)
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(c)
			if err != nil || string(got) != "got 100000 bytes" {
				t.Fatalf("reply %q, %v", got, err)
			}
		})
	}
}

func TestForwardEcho(t *testing.T) {
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	ln := listenLoopback(t)
	startServe(t, ln, func(ctx context.Context, ln net.Listener) error {
		return ServeForward(ctx, ln, osDial, nil, echo.Addr().String(), testLog(t))
	})
	for i := range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c, fmt.Sprint("hello ", i))
		c.Close()
	}
}

func TestForwardDialFailureClosesClient(t *testing.T) {
	remote := refusingAddr(t).String()
	ln := listenLoopback(t)
	startServe(t, ln, func(ctx context.Context, ln net.Listener) error {
		return ServeForward(ctx, ln, osDial, nil, remote, testLog(t))
	})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read = %d, %v; want the forward to close the client", n, err)
	}
}

func TestForwardBadRemote(t *testing.T) {
	for _, remote := range []string{"", "host", "host:0", "host:http", ":80", "[::1]:99999"} {
		ln := listenLoopback(t)
		if err := ServeForward(context.Background(), ln, osDial, nil, remote, nil); err == nil {
			t.Errorf("ServeForward(%q) = nil, want an error", remote)
		}
		if _, err := ln.Accept(); err == nil {
			t.Errorf("ServeForward(%q) left the listener open", remote)
		}
	}
}
