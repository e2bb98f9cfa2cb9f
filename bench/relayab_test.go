package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRelayTCPAB is an opt-in A/B of the TCP relay row: two tomoe
// binaries, each on its own line (A over TCP to the bridge in M, B over
// UDP), beside wireguard-go direct, measured interleaved. With
// TOMOE_RELAY_AB_VIA=udp, A relays over UDP too (the UDP relay row). Run
// as root:
//
//	TOMOE_RELAY_AB=old-tomoe,new-tomoe[,wireguard-go] TOMOE_RELAY_AB_REPEATS=5 \
//	  go test ./bench -run TestRelayTCPAB -v -timeout 30m
//
// With TOMOE_RELAY_AB_PROFILES=DIR it profiles A, the bridge and B of
// each tomoe line and writes DIR/relay-tcp-ab.md (or relay-udp-ab.md).
// Its namespaces are tbench-ra*, tbench-rb*, tbench-bw-*: no other bench
// run may be going on.
func TestRelayTCPAB(t *testing.T) {
	spec := os.Getenv("TOMOE_RELAY_AB")
	if spec == "" || os.Geteuid() != 0 {
		t.Skip("TOMOE_RELAY_AB=old,new[,wireguard-go] and root")
	}
	parts := strings.Split(spec, ",")
	repeats := 5
	if r, err := strconv.Atoi(os.Getenv("TOMOE_RELAY_AB_REPEATS")); err == nil {
		repeats = r
	}
	via, blk := "tcp", blockAUDP
	if os.Getenv("TOMOE_RELAY_AB_VIA") == "udp" {
		via, blk = "udp", blockDirect
	}
	secs := 10.0
	if s, err := strconv.ParseFloat(os.Getenv("TOMOE_RELAY_AB_SECONDS"), 64); err == nil {
		secs = s
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	work := t.TempDir()
	e := &env{log: log, work: work}
	removeABNamespaces(relayABLines...) // a killed run's
	defer removeABNamespaces(relayABLines...)
	defer e.Cleanup()
	var wgBin string
	if len(parts) > 2 {
		wgBin = parts[2]
	} else {
		// The pinned version, as the bench runs it (Debian's is older).
		root, err := moduleRoot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		version, err := goOutput(ctx, root, "list", "-m", "-f", "{{.Version}}", "golang.zx2c4.com/wireguard")
		if err != nil {
			t.Fatal(err)
		}
		if wgBin, err = installWireGuardGo(ctx, work, version); err != nil {
			t.Fatal(err)
		}
	}
	scs, wl, err := e.setupWireGuardLine(ctx, wgBin, 5)
	if wl != nil && wl.server != nil {
		defer wl.server.stop(5 * time.Second)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range scs {
		defer func() {
			for _, p := range sc.procs() {
				p.stop(10 * time.Second)
			}
		}()
	}
	scenarios := scs[:1] // direct only
	var lines []*tomoeLine
	for i, bin := range parts[:2] {
		name := []string{"ra", "rb"}[i]
		tl, err := e.setupTomoeLine(ctx, bin, name, blk)
		if err != nil {
			t.Fatal(err)
		}
		defer tl.l.server.stop(5 * time.Second)
		sc, err := e.tomoeScenario(ctx, tl, name, filepath.Base(bin), relayVia(via), 5)
		for _, p := range []*proc{tl.pA, tl.pB, tl.pBridge} {
			defer p.stop(10 * time.Second)
		}
		if err != nil {
			t.Fatal(err)
		}
		scenarios = append(scenarios, sc)
		lines = append(lines, tl)
	}
	if err := measureInterleaved(ctx, log, scenarios, []int{1}, repeats, secs); err != nil {
		t.Fatal(err)
	}
	// Profiles of both tomoe lines' three processes, one after the other,
	// if asked for, and DIR/relay-VIA-ab.md with the runs and the
	// profiles' components (writeABProfiles).
	if dir := os.Getenv("TOMOE_RELAY_AB_PROFILES"); dir != "" {
		var abs []abProfile
		for i, tl := range lines {
			bin := parts[i]
			pre := filepath.Join(dir, filepath.Base(bin))
			load := loadavg()
			pr, err := e.profileSides(ctx, scenarios[1+i], []profileTarget{
				{tl.a.sock, pre + "-a.pprof", "A: encrypts, relays over " + via},
				{tl.bridge.sock, pre + "-m.pprof", "M: the bridge"},
				{tl.b.sock, pre + "-b.pprof", "B: decrypts, over UDP"},
			}, bin, 8, 1)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Printf("AB profile %s: %.2f Gbit/s\n", bin, pr.Run.BitsPerSecond/1e9)
			pr.Run.Loadavg = load
			abs = append(abs, abProfile{filepath.Base(bin), pr})
		}
		var md strings.Builder
		fmt.Fprintf(&md, "%s, %d repeats of %g s, interleaved, 1 stream, relay over %s; CPU-s/GB = utime+stime per 10⁹ bytes received (middle: the bridge alone):\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), repeats, secs, via)
		writeABThroughput(&md, scenarios, nil)
		md.WriteString("\n")
		writeABProfiles(&md, []string{"A", "M", "B"}, 8, abs...)
		if err := saveABReport(dir, "relay-"+via+"-ab", md.String(), abs); err != nil {
			t.Fatal(err)
		}
	}
	base := scenarios[0].res.Throughput[0].MedianBitsPerSecond
	for _, sc := range scenarios {
		th := sc.res.Throughput[0]
		var bps, ends, mid []float64
		for _, r := range th.Runs {
			bps = append(bps, r.BitsPerSecond/1e9)
			gb := float64(r.BytesReceived) / 1e9
			if r.DaemonCPUSeconds != nil {
				m := 0.0
				if r.MiddleCPUSeconds != nil {
					m = *r.MiddleCPUSeconds
				}
				ends = append(ends, (*r.DaemonCPUSeconds-m)/gb)
				mid = append(mid, m/gb)
			}
		}
		fmt.Printf("AB %-24s median %.2f Gbit/s (%.2fx wg direct) runs %v | CPU-s/GB ends %.2f middle %.2f | load %v\n",
			sc.res.Name, th.MedianBitsPerSecond/1e9, th.MedianBitsPerSecond/base, round2(bps), median(ends), median(mid), loads(th.Runs))
		for _, e := range sc.res.Errors {
			fmt.Printf("AB %s error: %s\n", sc.res.Name, e)
		}
	}
}

func round2(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(int(x*100+0.5)) / 100
	}
	return out
}

func loads(rs []Run) []string {
	var out []string
	for _, r := range rs {
		if f := strings.Fields(r.Loadavg); len(f) > 0 {
			out = append(out, f[0])
		}
	}
	return out
}

// relayABLines are TestRelayTCPAB's lines: wireguard-go's (setupWireGuardLine)
// and one per tomoe binary.
var relayABLines = []string{"bw", "ra", "rb"}

// removeABNamespaces deletes the namespaces of the named lines
// (tbench-LINE-a, -m, -b) and kills what runs in them, leaving any other
// tbench-* alone.
func removeABNamespaces(lines ...string) {
	var names []string
	for _, line := range lines {
		for _, side := range []string{"a", "m", "b"} {
			names = append(names, nsPrefix+line+"-"+side)
		}
	}
	killNamespaces(names...)
}

// killNamespaces kills whatever runs in the named namespaces and deletes
// them, leaving any other alone.
func killNamespaces(names ...string) {
	for _, ns := range names {
		if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		exec.Command("ip", "netns", "del", ns).Run()
	}
}
