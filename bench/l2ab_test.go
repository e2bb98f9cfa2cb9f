package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestL2AB is an opt-in A/B of the virtual Ethernet part: two tomoe
// binaries, each running the part's set-up in turn (its namespaces are
// tbench-l2*, so the binaries alternate rather than run side by side),
// for TOMOE_L2_AB_ROUNDS rounds. Run as root:
//
//	TOMOE_L2_AB=old-tomoe,new-tomoe TOMOE_L2_AB_ROUNDS=2 go test ./bench -run TestL2AB -v -timeout 30m
//
// With TOMOE_L2_AB_PROFILES=DIR the last round also takes 8 s CPU profiles
// of both nodes during an extra L2 run, into DIR/<binary name>/. No other
// bench run may use tbench-l2* at the same time.
func TestL2AB(t *testing.T) {
	spec := os.Getenv("TOMOE_L2_AB")
	if spec == "" || os.Geteuid() != 0 {
		t.Skip("TOMOE_L2_AB=old,new and root")
	}
	bins2 := strings.Split(spec, ",")
	rounds := 2
	if r, err := strconv.Atoi(os.Getenv("TOMOE_L2_AB_ROUNDS")); err == nil {
		rounds = r
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	defer removeL2Namespaces()
	type row struct {
		bin              string
		l2, l3, l2c, l3c []float64
	}
	rows := make([]*row, len(bins2))
	for i, b := range bins2 {
		rows[i] = &row{bin: b}
	}
	for round := range rounds {
		for i, bin := range bins2 {
			removeL2Namespaces()
			e := &env{log: log, work: t.TempDir()}
			lr := &L2Result{Syscalls: map[string][]L2Syscalls{}}
			p := l2Params{repeats: 1, runSeconds: 8, streams: []int{1}, pingCount: 20, pingInterval: 0.01}
			if dir := os.Getenv("TOMOE_L2_AB_PROFILES"); dir != "" && round == rounds-1 {
				p.profileDir = filepath.Join(dir, filepath.Base(bin))
				if err := os.MkdirAll(p.profileDir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			err := e.l2Part(ctx, bins{tomoe: bin}, p, lr)
			e.Cleanup()
			if err != nil {
				t.Fatalf("round %d, %s: %v", round, bin, err)
			}
			for _, sc := range lr.Scenarios {
				r := sc.Throughput[0].Runs[0]
				cpu := 0.0
				if r.DaemonCPUSeconds != nil {
					cpu = *r.DaemonCPUSeconds / (float64(r.BytesReceived) / 1e9)
				}
				if sc.Key == "l2" {
					rows[i].l2, rows[i].l2c = append(rows[i].l2, r.BitsPerSecond/1e9), append(rows[i].l2c, cpu)
				} else {
					rows[i].l3, rows[i].l3c = append(rows[i].l3, r.BitsPerSecond/1e9), append(rows[i].l3c, cpu)
				}
			}
			fmt.Printf("L2AB round %d %s: l2 %v Gbit/s %v CPU-s/GB | l3 %v %v | load %s\n", round, bin,
				round2(rows[i].l2), round2(rows[i].l2c), round2(rows[i].l3), round2(rows[i].l3c), loadavg())
		}
	}
	for _, r := range rows {
		fmt.Printf("L2AB %-28s L2 median %.2f Gbit/s %.1f CPU-s/GB | L3 median %.2f Gbit/s %.1f CPU-s/GB\n",
			r.bin, median(r.l2), median(r.l2c), median(r.l3), median(r.l3c))
	}
}

// removeL2Namespaces deletes the virtual Ethernet part's namespaces and
// kills what runs in them, leaving any other tbench-* alone.
func removeL2Namespaces() { killNamespaces(l2NodeA, l2NodeB, l2HostA, l2HostB) }
