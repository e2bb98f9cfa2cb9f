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
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/proxy"

	"github.com/tomoe-net/tomoe/bench/cmdloop"
)

// bufSize is each read and write: as usbench's, large enough that the
// per-call overhead is small next to the copying.
const bufSize = 128 << 10

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
	serveSink(ln)
	return nil
}

// serveSink counts what each connection carries until the sender
// half-closes, then answers the count (8 bytes, big endian) and closes.
func serveSink(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			total, _ := drain(c)
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], uint64(total))
			c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			c.Write(b[:])
		}()
	}
}

// drain reads c until EOF or an error and returns the byte count.
func drain(c net.Conn) (int64, error) {
	buf := make([]byte, bufSize)
	var total int64
	for {
		m, err := c.Read(buf)
		total += int64(m)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
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
	return send(ctx, via, target, time.Duration(secs*float64(time.Second)), streams)
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

// send opens streams connections, writes on each for d, half-closes them
// and waits for the sink's counts.
func send(ctx context.Context, via, target string, d time.Duration, streams int) (result, error) {
	type outcome struct {
		sent, received int64
		err            error
	}
	start := time.Now()
	deadline := start.Add(d)
	results := make(chan outcome, streams)
	var wg sync.WaitGroup
	for range streams {
		wg.Go(func() {
			sent, received, err := stream(ctx, via, target, deadline)
			results <- outcome{sent, received, err}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(results)
	res := result{Via: via, Target: target, Streams: streams, Seconds: elapsed.Seconds()}
	for o := range results {
		if o.err != nil {
			return result{}, o.err
		}
		res.BytesSent += o.sent
		res.BytesReceived += o.received
	}
	if res.BytesReceived != res.BytesSent {
		return result{}, fmt.Errorf("sent %d bytes but the sink counted %d", res.BytesSent, res.BytesReceived)
	}
	res.BitsPerSecond = float64(res.BytesReceived) * 8 / res.Seconds
	return res, nil
}

func stream(ctx context.Context, via, target string, deadline time.Time) (sent, received int64, err error) {
	c, raw, err := dial(ctx, via, target)
	if err != nil {
		return 0, 0, fmt.Errorf("dial %s via %s: %w", target, via, err)
	}
	defer c.Close()
	// The write deadline only guards against a dead path; the loop ends
	// at deadline.
	c.SetWriteDeadline(deadline.Add(30 * time.Second))
	buf := make([]byte, bufSize)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		m, err := c.Write(buf)
		sent += int64(m)
		if err != nil {
			return sent, 0, fmt.Errorf("write to %s via %s: %w", target, via, err)
		}
	}
	if err := raw.CloseWrite(); err != nil {
		return sent, 0, fmt.Errorf("close write: %w", err)
	}
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	var b [8]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return sent, 0, fmt.Errorf("read the sink's count: %w", err)
	}
	return sent, int64(binary.BigEndian.Uint64(b[:])), nil
}
