package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/bench/loadgen"
	"github.com/tomoe-net/tomoe/internal/services"
)

// startSink serves a sink on loopback and returns its address.
func startSink(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go loadgen.ServeSink(ln)
	return ln.Addr().String()
}

func TestSendDirectAndThroughSOCKS5(t *testing.T) {
	sink := startSink(t)
	ctx := context.Background()

	// tomoe's own SOCKS5 server, dialling with the host's stack.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	var d net.Dialer
	resolve := func(_ context.Context, host string) (netip.Addr, error) { return netip.ParseAddr(host) }
	go services.ServeSOCKS5(sctx, ln, d.DialContext, resolve, slog.New(slog.DiscardHandler))

	for _, via := range []string{"direct", "socks5=" + ln.Addr().String()} {
		res, err := command(ctx, []string{"run", via, sink, "0.3", "2"})
		if err != nil {
			t.Fatalf("%s: %v", via, err)
		}
		if res.BytesReceived == 0 || res.BytesReceived != res.BytesSent || res.BitsPerSecond <= 0 || res.Streams != 2 {
			t.Errorf("%s: %+v", via, res)
		}
		if b, _ := json.Marshal(res); len(b) == 0 {
			t.Error("result does not marshal")
		}
	}
}

func TestCommandErrors(t *testing.T) {
	for _, f := range [][]string{
		{"run", "direct", "127.0.0.1:1", "1"},
		{"run", "http=x", "127.0.0.1:1", "1", "1"},
		{"run", "direct", "127.0.0.1:1", "0", "1"},
		{"run", "direct", "127.0.0.1:1", "1", "0"},
		{"go", "direct", "127.0.0.1:1", "1", "1"},
	} {
		if _, err := command(context.Background(), f); err == nil {
			t.Errorf("%v: no error", f)
		}
	}
}

func TestSinkCountsUntilHalfClose(t *testing.T) {
	sink := startSink(t)
	c, err := net.DialTimeout("tcp", sink, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(make([]byte, 12345))
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || len(b) != 8 {
		t.Fatalf("answer %x, %v", b, err)
	}
	if n := uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7]); n != 12345 {
		t.Errorf("count %d, want 12345", n)
	}
}
