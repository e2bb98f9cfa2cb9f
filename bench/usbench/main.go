// Command usbench runs one userspace-mode tomoe node and moves TCP traffic
// through the node's own gVisor stack, for the benchmark in ../ (go run
// ./bench). It exists because iperf3 cannot use a userspace stack.
//
// The sink accepts connections on the node's overlay address, counts the
// bytes that arrive on each, and when the sender closes its side answers
// with that count (8 bytes, big endian): the figure is receiver-side, as
// iperf3's is.
//
//	usbench -c node.toml -sink -port 5201
//	usbench -c node.toml                    # source
//
// Both print one JSON line once the node is up: {"ready":true,"address":...}.
// The source then reads commands on stdin, one per line,
//
//	run [ADDR]:PORT SECONDS STREAMS
//
// and answers each with one JSON line (result below, or {"error":...}). Both
// run until SIGINT or SIGTERM; the source also stops at the end of stdin.
// The node's admin socket (admin.socket in the config) works as for
// `tomoe up`, so `tomoe ping --socket` and the pprof endpoints can be used.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/tomoe-net/tomoe/bench/cmdloop"
	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/node"
)

// bufSize is the size of each read and write: large enough that the
// per-call overhead of gonet is small next to the copying.
const bufSize = 128 << 10

// result is the source's answer to one run command.
type result struct {
	Streams       int     `json:"streams"`
	Seconds       float64 `json:"seconds"`        // first dial until the last count arrived
	BytesSent     int64   `json:"bytes_sent"`     // as written by the source
	BytesReceived int64   `json:"bytes_received"` // as counted by the sink
	BitsPerSecond float64 `json:"bits_per_second"`
}

func main() {
	var (
		cfgPath string
		sink    bool
		port    int
	)
	flag.StringVar(&cfgPath, "c", "", "node config file (TOML, tun.mode = \"userspace\")")
	flag.BoolVar(&sink, "sink", false, "serve a TCP sink instead of acting as a source")
	flag.IntVar(&port, "port", 5201, "sink: TCP port on the node's overlay address")
	flag.Parse()
	if cfgPath == "" {
		fmt.Fprintln(os.Stderr, "usbench: -c FILE is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfgPath, sink, port); err != nil {
		fmt.Fprintln(os.Stderr, "usbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfgPath string, sink bool, port int) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	if cfg.TUN.Mode != config.ModeUserspace {
		return fmt.Errorf("%s: tun.mode must be %q", cfgPath, config.ModeUserspace)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	n, err := node.New(cfg, node.Options{Logger: log, Version: "usbench"})
	if err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	defer n.Close()

	var ln net.Listener
	if sink {
		ln, err = n.Stack().ListenTCP(netip.AddrPortFrom(n.Address(), uint16(port)))
		if err != nil {
			return err
		}
		defer ln.Close()
		go serveSink(ln)
	}
	out := json.NewEncoder(os.Stdout)
	out.Encode(map[string]any{"ready": true, "address": n.Address().String()})
	if sink {
		<-ctx.Done()
		return nil
	}
	return serveCommands(ctx, n, os.Stdin, out)
}

// serveSink counts what each connection carries and answers the count
// when the sender half-closes.
func serveSink(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, bufSize)
			var total int64
			for {
				m, err := c.Read(buf)
				total += int64(m)
				if err != nil {
					break
				}
			}
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], uint64(total))
			c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			c.Write(b[:])
		}()
	}
}

// serveCommands runs the commands read from r until r ends or ctx is done.
func serveCommands(ctx context.Context, n *node.Node, r io.Reader, out *json.Encoder) error {
	return cmdloop.Serve(ctx, r, out, func(ctx context.Context, f []string) (any, error) { return command(ctx, n, f) })
}

func command(ctx context.Context, n *node.Node, f []string) (result, error) {
	if f[0] != "run" || len(f) != 4 {
		return result{}, errors.New("want: run [ADDR]:PORT SECONDS STREAMS")
	}
	secs, err := strconv.ParseFloat(f[2], 64)
	if err != nil || secs <= 0 {
		return result{}, fmt.Errorf("SECONDS %q: want a positive number", f[2])
	}
	streams, err := strconv.Atoi(f[3])
	if err != nil || streams < 1 || streams > 64 {
		return result{}, fmt.Errorf("STREAMS %q: want 1..64", f[3])
	}
	return send(ctx, n, f[1], time.Duration(secs*float64(time.Second)), streams)
}

// send opens streams connections to target, writes on each for d, then
// half-closes and waits for the sink's counts.
func send(ctx context.Context, n *node.Node, target string, d time.Duration, streams int) (result, error) {
	type outcome struct {
		sent, received int64
		err            error
	}
	start := time.Now()
	deadline := start.Add(d)
	results := make(chan outcome, streams)
	var wg sync.WaitGroup
	for range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent, received, err := stream(ctx, n, target, deadline)
			results <- outcome{sent, received, err}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(results)
	res := result{Streams: streams, Seconds: elapsed.Seconds()}
	for o := range results {
		if o.err != nil {
			return result{}, o.err
		}
		res.BytesSent += o.sent
		res.BytesReceived += o.received
	}
	res.BitsPerSecond = float64(res.BytesReceived) * 8 / res.Seconds
	return res, nil
}

func stream(ctx context.Context, n *node.Node, target string, deadline time.Time) (sent, received int64, err error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	c, err := n.DialContext(dctx, "tcp6", target)
	cancel()
	if err != nil {
		return 0, 0, err
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
			return sent, 0, fmt.Errorf("write to %s: %w", target, err)
		}
	}
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok {
		return sent, 0, errors.New("connection cannot half-close")
	}
	if err := cw.CloseWrite(); err != nil {
		return sent, 0, fmt.Errorf("close write: %w", err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var b [8]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return sent, 0, fmt.Errorf("read the sink's count: %w", err)
	}
	return sent, int64(binary.BigEndian.Uint64(b[:])), nil
}
