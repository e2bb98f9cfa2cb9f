// Package loadgen is the bulk TCP load of the benchmarks' own senders
// (bench/usbench, bench/tcpload): a sink that counts what each connection
// carries and answers the count when the sender half-closes, and a sender
// that writes for a while on several streams and checks the counts. The
// counts make goodput exact: bytes that arrived, not bytes that fitted
// into socket buffers.
package loadgen

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// BufSize is the size of each read and write: large enough that the
// per-call overhead (of gonet above all) is small next to the copying.
const BufSize = 128 << 10

// ServeSink serves ln until it is closed: each connection is read until
// the sender half-closes, then its byte count is written back (8 bytes,
// big endian).
func ServeSink(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, BufSize)
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

// Dial opens one stream to a sink. halfClose ends the stream's sending
// side (the connection a proxy client returns may hide CloseWrite).
type Dial func(ctx context.Context) (c net.Conn, halfClose func() error, err error)

// Totals is the outcome of Send.
type Totals struct {
	Seconds  float64 // first dial until the last count arrived
	Sent     int64   // as written by the sender
	Received int64   // as counted by the sinks
}

// BitsPerSecond is the goodput.
func (t Totals) BitsPerSecond() float64 { return float64(t.Received) * 8 / t.Seconds }

// Send opens streams connections with dial, writes on each for d, then
// half-closes them and waits for the sinks' counts, which must add up to
// what was sent.
func Send(ctx context.Context, dial Dial, d time.Duration, streams int) (Totals, error) {
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
			sent, received, err := stream(ctx, dial, deadline)
			results <- outcome{sent, received, err}
		})
	}
	wg.Wait()
	close(results)
	t := Totals{Seconds: time.Since(start).Seconds()}
	for o := range results {
		if o.err != nil {
			return Totals{}, o.err
		}
		t.Sent += o.sent
		t.Received += o.received
	}
	if t.Received != t.Sent {
		return Totals{}, fmt.Errorf("sent %d bytes but the sink counted %d", t.Sent, t.Received)
	}
	return t, nil
}

func stream(ctx context.Context, dial Dial, deadline time.Time) (sent, received int64, err error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	c, halfClose, err := dial(dctx)
	cancel()
	if err != nil {
		return 0, 0, fmt.Errorf("dial: %w", err)
	}
	defer c.Close()
	// The write deadline only guards against a dead path; the loop ends
	// at deadline.
	c.SetWriteDeadline(deadline.Add(30 * time.Second))
	buf := make([]byte, BufSize)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		m, err := c.Write(buf)
		sent += int64(m)
		if err != nil {
			return sent, 0, fmt.Errorf("write: %w", err)
		}
	}
	if err := halfClose(); err != nil {
		return sent, 0, fmt.Errorf("close write: %w", err)
	}
	c.SetReadDeadline(time.Now().Add(60 * time.Second))
	var b [8]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return sent, 0, fmt.Errorf("read the sink's count: %w", err)
	}
	return sent, int64(binary.BigEndian.Uint64(b[:])), nil
}
