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
	"syscall"
	"time"

	"github.com/tomoe-net/tomoe/bench/cmdloop"
	"github.com/tomoe-net/tomoe/bench/loadgen"
	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/node"
)

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
		go loadgen.ServeSink(ln)
	}
	out := json.NewEncoder(os.Stdout)
	out.Encode(map[string]any{"ready": true, "address": n.Address().String()})
	if sink {
		<-ctx.Done()
		// The stack's counters (packets, drops, coalesced segments) for
		// whoever reads the sink's output after a run.
		out.Encode(map[string]any{"netstack": n.Stack().Stats()})
		return nil
	}
	return serveCommands(ctx, n, os.Stdin, out)
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

// send opens streams connections to target through the node's stack,
// writes on each for d, then half-closes and waits for the sink's counts.
func send(ctx context.Context, n *node.Node, target string, d time.Duration, streams int) (result, error) {
	open := func(ctx context.Context) (net.Conn, func() error, error) {
		c, err := n.DialContext(ctx, "tcp6", target)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", target, err)
		}
		cw, ok := c.(interface{ CloseWrite() error })
		if !ok {
			c.Close()
			return nil, nil, errors.New("connection cannot half-close")
		}
		return c, cw.CloseWrite, nil
	}
	t, err := loadgen.Send(ctx, open, d, streams)
	if err != nil {
		return result{}, err
	}
	return result{Streams: streams, Seconds: t.Seconds, BytesSent: t.Sent, BytesReceived: t.Received, BitsPerSecond: t.BitsPerSecond()}, nil
}
