package main

// This file takes CPU profiles of both tomoe kernel-mode daemons during one
// extra iperf3 run (single-stream unless -profile-streams says otherwise),
// and summarises where the time goes.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// unixHTTP is an HTTP client for a node's admin socket.
func unixHTTP(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

// fetchProfile saves a CPU profile of secs seconds from the node at sock.
func fetchProfile(ctx context.Context, sock string, secs int, path string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+30)*time.Second)
	defer cancel()
	url := fmt.Sprintf("http://tomoe/debug/pprof/profile?seconds=%d", secs)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := unixHTTP(sock).Do(req)
	if err != nil {
		return fmt.Errorf("profile %s: %w", sock, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1000))
		return fmt.Errorf("profile %s: %s %s", sock, resp.Status, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("profile %s: %w", sock, err)
	}
	return f.Close()
}

// profileTomoe runs one iperf3 with streams connections through tomoe
// kernel mode for secs+3 seconds and profiles the sender (namespace A) and the receiver
// (namespace B) for secs seconds of it.
func (e *env) profileTomoe(ctx context.Context, sc *scenario, nodes []*tomoeNode, tomoeBin string, secs, streams int, dir string) (*ProfileResult, error) {
	return e.profileSides(ctx, sc, []profileTarget{
		{nodes[0].sock, filepath.Join(dir, "tomoe-sender.pprof"), "sender (namespace A: encrypts)"},
		{nodes[1].sock, filepath.Join(dir, "tomoe-receiver.pprof"), "receiver (namespace B: decrypts)"},
	}, tomoeBin, secs, streams)
}

// profileTarget is a process to profile: the unix socket that serves its
// /debug/pprof, where to keep the profile, and what the process does.
type profileTarget struct{ sock, path, role string }

// profileSides runs sc once with streams connections for secs+3 seconds
// and profiles each target for secs seconds of it; bin is the binary the
// targets run (for pprof's symbols).
func (e *env) profileSides(ctx context.Context, sc *scenario, targets []profileTarget, bin string, secs, streams int) (*ProfileResult, error) {
	res := &ProfileResult{Seconds: secs, Streams: streams}
	var (
		wg     sync.WaitGroup
		run    Run
		runErr error
		errs   = make([]error, len(targets))
	)
	wg.Go(func() { run, runErr = sc.measure(ctx, streams, float64(secs+3)) })
	select {
	case <-ctx.Done():
	case <-time.After(1500 * time.Millisecond):
	}
	for i, t := range targets {
		wg.Go(func() { errs[i] = fetchProfile(ctx, t.sock, secs, t.path) })
	}
	wg.Wait()
	if err := errors.Join(append(errs, runErr)...); err != nil {
		return nil, err
	}
	res.Run = &run
	for _, t := range targets {
		side, err := summarize(ctx, bin, t.path)
		if err != nil {
			return nil, err
		}
		side.Role = t.role
		side.File = t.path
		res.Sides = append(res.Sides, side)
	}
	return res, nil
}

// summarize runs go tool pprof on a profile: the top 25 by flat and by
// cumulative time, and the flat time grouped by component (inlined
// functions counted in their callers).
func summarize(ctx context.Context, bin, path string) (ProfileSide, error) {
	var side ProfileSide
	flat, err := pprofTop(ctx, bin, path, "-nodecount=25")
	if err != nil {
		return side, err
	}
	side.Header, side.TopFlat = trimTop(flat)
	cum, err := pprofTop(ctx, bin, path, "-nodecount=25", "-cum")
	if err != nil {
		return side, err
	}
	_, side.TopCum = trimTop(cum)
	// -noinlines charges inlined functions (encoding/binary in
	// wireguard-go's checksum, for one) to the function they were inlined in.
	all, err := pprofTop(ctx, bin, path, "-noinlines", "-nodecount=100000", "-nodefraction=0", "-edgefraction=0")
	if err != nil {
		return side, err
	}
	side.Components = components(all)
	return side, nil
}

func pprofTop(ctx context.Context, bin, path string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", append(append([]string{"tool", "pprof", "-top"}, args...), bin, path)...)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("go tool pprof %s: %w: %s", path, err, ee.Stderr)
		}
		return "", fmt.Errorf("go tool pprof %s: %w", path, err)
	}
	return string(out), nil
}

// trimTop keeps the Duration line as the header and the table (column
// titles and rows) of a pprof -top output.
func trimTop(out string) (header, table string) {
	var b strings.Builder
	inTable := false
	for line := range strings.Lines(out) {
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(t, "Duration:"):
			header = t
		case strings.HasPrefix(t, "flat "):
			inTable = true
			b.WriteString(line)
		case inTable && t != "":
			b.WriteString(line)
		}
	}
	return header, b.String()
}

// componentOf names the part of the program a function belongs to.
func componentOf(fn string) string {
	switch {
	case strings.Contains(fn, "golang.org/x/crypto") || strings.HasPrefix(fn, "crypto/"):
		return "crypto (ChaCha20-Poly1305, BLAKE2s, ...)"
	case strings.HasPrefix(fn, "syscall.") || strings.HasPrefix(fn, "internal/runtime/syscall") ||
		strings.HasPrefix(fn, "golang.org/x/sys/unix") || strings.HasPrefix(fn, "runtime/internal/syscall"):
		return "system calls (time in the kernel: TUN, UDP, GSO/GRO)"
	case strings.HasPrefix(fn, "runtime.memmove") || strings.HasPrefix(fn, "runtime.memclr"):
		return "memory copy/clear (runtime.memmove, memclr)"
	case strings.HasPrefix(fn, "runtime."):
		return "Go runtime (scheduler, GC, locks, channels)"
	case strings.HasPrefix(fn, "github.com/tomoe-net/tomoe/"):
		return "tomoe (filter, wrapper, bind, ...)"
	case strings.HasPrefix(fn, "golang.zx2c4.com/wireguard/"):
		return "wireguard-go library"
	case strings.HasPrefix(fn, "gvisor.dev/"):
		return "gVisor"
	case isStdlib(fn):
		return "Go standard library (sync, os, net, encoding/binary, time)"
	default:
		return "other (golang.org/x/net batching, ...)"
	}
}

// isStdlib reports whether fn is in the standard library: its import path
// has no dot in its first element ("sync.(*Pool).Get", "internal/poll...").
func isStdlib(fn string) bool {
	first, _, found := strings.Cut(fn, "/")
	return !found || !strings.Contains(first, ".")
}

// components sums flat% by component over an untrimmed pprof -top output.
func components(out string) []Component { return sharesBy(out, componentOf) }

// sharesBy sums flat% over an untrimmed pprof -top output by the name
// classify gives each function, largest first.
func sharesBy(out string, classify func(fn string) string) []Component {
	sums := map[string]float64{}
	inTable := false
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == "flat" {
			inTable = true
			continue
		}
		if !inTable || len(f) < 6 {
			continue
		}
		pct, err := strconv.ParseFloat(strings.TrimSuffix(f[1], "%"), 64)
		if err != nil {
			continue
		}
		sums[classify(f[5])] += pct
	}
	var cs []Component
	for name, pct := range sums {
		cs = append(cs, Component{Name: name, FlatPercent: pct})
	}
	slices.SortFunc(cs, func(a, b Component) int {
		switch {
		case a.FlatPercent > b.FlatPercent:
			return -1
		case a.FlatPercent < b.FlatPercent:
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return cs
}
