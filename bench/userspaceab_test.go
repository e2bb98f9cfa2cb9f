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
	"time"
)

// userspaceABLines are TestUserspaceAB's lines: tbench-ua-* and tbench-ub-*.
var userspaceABLines = []string{"ua", "ub"}

// TestUserspaceAB is an opt-in A/B of the compare part's "tomoe
// userspace" row: two bench/usbench binaries, each on its own line (a
// source in A, a sink in B, the compare part's config: defaults and
// tunedConfig), measured interleaved, 1 stream. With
// TOMOE_USERSPACE_AB_PROFILES=DIR it then profiles both processes of each
// line during one extra run and writes DIR/userspace-ab.md (the runs'
// medians and the profiles' components) and the .pprof files. Run as
// root:
//
//	TOMOE_USERSPACE_AB=old-usbench,new-usbench TOMOE_USERSPACE_AB_REPEATS=3 \
//	  TOMOE_USERSPACE_AB_SECONDS=8 TOMOE_USERSPACE_AB_PROFILES=/tmp/prof \
//	  go test ./bench -run TestUserspaceAB -v -timeout 30m
//
// TOMOE_USERSPACE_AB_TOMOE is the tomoe binary for the pings that
// start each pair (default: built from this tree). Its namespaces are
// tbench-ua-* and tbench-ub-*; it leaves any other tbench-* alone.
func TestUserspaceAB(t *testing.T) {
	spec := os.Getenv("TOMOE_USERSPACE_AB")
	if spec == "" || os.Geteuid() != 0 {
		t.Skip("TOMOE_USERSPACE_AB=old-usbench,new-usbench and root")
	}
	bins := strings.Split(spec, ",")
	if len(bins) != 2 || filepath.Base(bins[0]) == filepath.Base(bins[1]) {
		t.Fatalf("TOMOE_USERSPACE_AB=%q: want two usbench binaries with different file names", spec)
	}
	repeats := 3
	if r, err := strconv.Atoi(os.Getenv("TOMOE_USERSPACE_AB_REPEATS")); err == nil {
		repeats = r
	}
	secs := 8.0
	if s, err := strconv.ParseFloat(os.Getenv("TOMOE_USERSPACE_AB_SECONDS"), 64); err == nil {
		secs = s
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	work := t.TempDir()
	e := &env{log: log, work: work}
	removeABNamespaces(userspaceABLines...) // a killed run's
	defer removeABNamespaces(userspaceABLines...)
	defer e.Cleanup()
	tomoeBin := os.Getenv("TOMOE_USERSPACE_AB_TOMOE")
	if tomoeBin == "" {
		root, err := moduleRoot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tomoeBin = filepath.Join(work, "tomoe")
		if err := build(ctx, root, tomoeBin, "./cmd/tomoe"); err != nil {
			t.Fatal(err)
		}
	}

	var (
		scenarios []*scenario
		nodes     [][]*tomoeNode
	)
	for i, bin := range bins {
		name := userspaceABLines[i]
		l, err := e.setupLine(ctx, name, blockNone)
		if l != nil && l.server != nil {
			defer l.server.stop(5 * time.Second)
		}
		if err != nil {
			t.Fatal(err)
		}
		user := tomoePairSpec{key: "tomoe-userspace-" + name, name: "tomoe userspace, " + filepath.Base(bin), label: name, port: 4611, config: compareConfig("userspace", tunedConfig)}
		sc, ns, err := e.setupTomoeUserspacePair(ctx, bin, tomoeBin, pair{l.a, l.b, lineA, lineB}, user, 1)
		if sc != nil {
			for _, p := range sc.procs() {
				defer p.stop(10 * time.Second)
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		sc.named = []namedProc{{"source", sc.daemons[0]}, {"sink", sc.daemons[1]}}
		scenarios = append(scenarios, sc)
		nodes = append(nodes, ns)
	}
	warmUpRuns(ctx, log, scenarios)
	if err := measureInterleaved(ctx, log, scenarios, []int{1}, repeats, secs); err != nil {
		t.Fatal(err)
	}
	var md strings.Builder
	fmt.Fprintf(&md, "%s, %d repeats of %g s, interleaved, 1 stream; CPU-s/GB = utime+stime per 10⁹ bytes the sink counted:\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), repeats, secs)
	writeABThroughput(&md, scenarios, abNamed(scenarios))
	dir := os.Getenv("TOMOE_USERSPACE_AB_PROFILES")
	if dir == "" {
		fmt.Print(md.String())
		return
	}
	var abs []abProfile
	for i, bin := range bins {
		pre := filepath.Join(dir, filepath.Base(bin))
		load := loadavg()
		pr, err := e.profileSides(ctx, scenarios[i], []profileTarget{
			{nodes[i][0].sock, pre + "-source.pprof", "source (namespace A: gVisor sends, encrypts)"},
			{nodes[i][1].sock, pre + "-sink.pprof", "sink (namespace B: decrypts, gVisor receives)"},
		}, bin, 8, 1)
		if err != nil {
			t.Fatal(err)
		}
		pr.Run.Loadavg = load
		abs = append(abs, abProfile{filepath.Base(bin), pr})
	}
	md.WriteString("\n")
	writeABProfiles(&md, []string{"source", "sink"}, 8, abs...)
	if err := saveABReport(dir, "userspace-ab", md.String(), abs); err != nil {
		t.Fatal(err)
	}
}
