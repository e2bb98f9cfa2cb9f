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
// of both nodes during an extra L2 run, into DIR/<binary name>/.
// TOMOE_L2_AB_PINGS sets the pings per path and run (20; 10 ms apart).
// Each line gives the sending node's TUN drops per L2 run. No other
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
	pings := 20
	if n, err := strconv.Atoi(os.Getenv("TOMOE_L2_AB_PINGS")); err == nil && n > 0 {
		pings = n
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	defer removeL2Namespaces()
	type row struct {
		bin              string
		l2, l3, l2c, l3c []float64
		drops            []float64 // the sending node's TUN drops per L2 run
		ping2, ping3     []float64 // ping p50, ms
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
			p := l2Params{repeats: 1, runSeconds: 8, streams: []int{1}, pingCount: pings, pingInterval: 0.01}
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
					rows[i].ping2 = append(rows[i].ping2, pingP50(sc))
				} else {
					rows[i].l3, rows[i].l3c = append(rows[i].l3, r.BitsPerSecond/1e9), append(rows[i].l3c, cpu)
					rows[i].ping3 = append(rows[i].ping3, pingP50(sc))
				}
			}
			for _, c := range lr.Syscalls["l2"] {
				rows[i].drops = append(rows[i].drops, float64(c.TUNTxDropped))
			}
			fmt.Printf("L2AB round %d %s: l2 %v Gbit/s %v CPU-s/GB %v TUN drops, ping p50 %v ms | l3 %v %v, ping p50 %v ms | load %s\n", round, bin,
				round2(rows[i].l2), round2(rows[i].l2c), rows[i].drops, round2(rows[i].ping2),
				round2(rows[i].l3), round2(rows[i].l3c), round2(rows[i].ping3), loadavg())
		}
	}
	for _, r := range rows {
		fmt.Printf("L2AB %-28s L2 median %.2f Gbit/s %.1f CPU-s/GB %.0f TUN drops, ping p50 %.3f ms | L3 median %.2f Gbit/s %.1f CPU-s/GB, ping p50 %.3f ms\n",
			r.bin, median(r.l2), median(r.l2c), median(r.drops), median(r.ping2), median(r.l3), median(r.l3c), median(r.ping3))
	}
}

// removeL2Namespaces deletes the virtual Ethernet part's namespaces and
// kills what runs in them, leaving any other tbench-* alone.
func removeL2Namespaces() { killNamespaces(l2NodeA, l2NodeB, l2HostA, l2HostB) }

// pingP50 is the median of a scenario's first ping run, in ms (0 when
// none answered).
func pingP50(sc *ScenarioResult) float64 {
	if len(sc.Pings) == 0 {
		return 0
	}
	return sc.Pings[0].MedianMs
}
