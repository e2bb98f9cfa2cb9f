// Command tcpload is the bulk TCP sender and sink of the benchmark's VPN
// part (go run ./bench -only vpn). Unlike iperf3 it can send through a
// SOCKS5 proxy, and it measures goodput exactly: the sink counts the bytes
// each connection delivers and answers the count once the sender has
// half-closed, so the figure is what arrived, not what the sender managed
// to put into its socket buffer.
//
//	tcpload -sink -listen '[fc..]:5201'   # sink; retries the listen for 20 s
//	tcpload                               # sender, driven over stdin
//
// Both print one JSON line once ready: {"ready":true}. The sender then
// reads commands on stdin, one per line,
//
//	run VIA TARGET SECONDS STREAMS
//
// where VIA is "direct" (dial TARGET; also for a port forward, whose local
// end TARGET then is) or "socks5=HOST:PORT" (ask that SOCKS5 proxy to
// connect to TARGET). It opens STREAMS connections, writes on each for
// SECONDS, half-closes, and waits for the sink's count. It answers each
// command with one JSON line: streams, seconds (first dial until the last
// count arrived), bytes_sent, bytes_received (the sink's counts) and
// bits_per_second (bytes_received over seconds), or {"error":...}.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/proxy"

	"github.com/tomoe-net/tomoe/bench/cmdloop"
	"github.com/tomoe-net/tomoe/bench/loadgen"
)

// result is the answer to one run command.
type result struct {
	Via           string  `json:"via"`
	Target        string  `json:"target"`
	Streams       int     `json:"streams"`
	Seconds       float64 `json:"seconds"`
	BytesSent     int64   `json:"bytes_sent"`
	BytesReceived int64   `json:"bytes_received"`
	BitsPerSecond float64 `json:"bits_per_second"`
}

func main() {
	var (
		sink   bool
		listen string
	)
	flag.BoolVar(&sink, "sink", false, "count what arrives instead of sending")
	flag.StringVar(&listen, "listen", "", "sink: the TCP address to listen on")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	out := json.NewEncoder(os.Stdout)
	var err error
	if sink {
		err = runSink(ctx, listen, out)
	} else {
		out.Encode(map[string]bool{"ready": true})
		err = cmdloop.Serve(ctx, os.Stdin, out, func(ctx context.Context, f []string) (any, error) { return command(ctx, f) })
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcpload:", err)
		os.Exit(1)
	}
}

// runSink listens on addr, retrying for a while (the address may be on a
// TUN device that is still coming up), and serves until ctx ends.
func runSink(ctx context.Context, addr string, out *json.Encoder) error {
	if addr == "" {
		return errors.New("-sink needs -listen ADDR:PORT")
	}
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(20 * time.Second); ; {
		if ln, err = net.Listen("tcp", addr); err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	out.Encode(map[string]any{"ready": true, "address": ln.Addr().String()})
	loadgen.ServeSink(ln)
	return nil
}

func command(ctx context.Context, f []string) (result, error) {
	if f[0] != "run" || len(f) != 5 {
		return result{}, errors.New("want: run direct|socks5=HOST:PORT TARGET SECONDS STREAMS")
	}
	via, target := f[1], f[2]
	if via != "direct" && !strings.HasPrefix(via, "socks5=") {
		return result{}, fmt.Errorf("VIA %q: want direct or socks5=HOST:PORT", via)
	}
	secs, err := strconv.ParseFloat(f[3], 64)
	if err != nil || secs <= 0 {
		return result{}, fmt.Errorf("SECONDS %q: want a positive number", f[3])
	}
	streams, err := strconv.Atoi(f[4])
	if err != nil || streams < 1 || streams > 64 {
		return result{}, fmt.Errorf("STREAMS %q: want 1..64", f[4])
	}
	open := func(ctx context.Context) (net.Conn, func() error, error) {
		c, raw, err := dial(ctx, via, target)
		if err != nil {
			return nil, nil, fmt.Errorf("%s via %s: %w", target, via, err)
		}
		return c, raw.CloseWrite, nil
	}
	t, err := loadgen.Send(ctx, open, time.Duration(secs*float64(time.Second)), streams)
	if err != nil {
		return result{}, err
	}
	return result{Via: via, Target: target, Streams: streams, Seconds: t.Seconds, BytesSent: t.Sent, BytesReceived: t.Received, BitsPerSecond: t.BitsPerSecond()}, nil
}

// dial connects to target directly or through the SOCKS5 proxy in via,
// and returns the connection and the kernel socket underneath it (the
// one to half-close).
func dial(ctx context.Context, via, target string) (net.Conn, *net.TCPConn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var d net.Dialer
	if via == "direct" {
		c, err := d.DialContext(ctx, "tcp", target)
		if err != nil {
			return nil, nil, err
		}
		return c, c.(*net.TCPConn), nil
	}
	fwd := &recordingDialer{}
	p, err := proxy.SOCKS5("tcp", strings.TrimPrefix(via, "socks5="), nil, fwd)
	if err != nil {
		return nil, nil, err
	}
	c, err := p.(proxy.ContextDialer).DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, nil, err
	}
	return c, fwd.conn, nil
}

// recordingDialer dials the proxy and keeps the connection: the SOCKS5
// client wraps it in a type that hides CloseWrite.
type recordingDialer struct{ conn *net.TCPConn }

func (r *recordingDialer) Dial(network, addr string) (net.Conn, error) {
	return r.DialContext(context.Background(), network, addr)
}

func (r *recordingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	r.conn = c.(*net.TCPConn)
	return c, nil
}
