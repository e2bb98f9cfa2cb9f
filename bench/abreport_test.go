package main

// The Markdown both opt-in A/B tests (TestRelayTCPAB, TestUserspaceAB)
// write beside their profiles: the interleaved runs' medians, and each
// profiled process's flat time by component before and after, with the
// bench's own classification (summarize, componentOf, writeComponents).

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// writeABThroughput writes a table of the scenarios' 1-stream runs:
// median Gbit/s and its ratio to the first scenario's, the median CPU
// seconds per 10⁹ bytes received of all daemons, of the middle process
// and of each named process (keys in the order given), and each run's
// 1-minute load average.
func writeABThroughput(w io.Writer, scenarios []*scenario, named []string) {
	p := func(f string, a ...any) { fmt.Fprintf(w, f, a...) }
	p("| scenario | Gbit/s, median (runs) | × %s | CPU-s/GB, all processes | middle |", scenarios[0].res.Name)
	for _, k := range named {
		p(" %s |", k)
	}
	p(" load average (1 min) per run |\n|---|---|---:|---:|---:|")
	for range named {
		p("---:|")
	}
	p("---|\n")
	base := scenarios[0].res.throughput(1).MedianBitsPerSecond
	for _, sc := range scenarios {
		th := sc.res.throughput(1)
		var runs []string
		for _, r := range th.Runs {
			runs = append(runs, fmt.Sprintf("%.2f", r.BitsPerSecond/1e9))
		}
		ratio := "–"
		if base > 0 {
			ratio = fmt.Sprintf("%.2f", th.MedianBitsPerSecond/base)
		}
		p("| %s | %.2f (%s) | %s | %s | %s |", sc.res.Name, th.MedianBitsPerSecond/1e9, strings.Join(runs, " "), ratio,
			cpuCell(th.MedianDaemonCPUPerGB), cpuCell(th.MedianMiddleCPUPerGB))
		for _, k := range named {
			var per []float64
			for _, r := range th.Runs {
				if v, ok := r.ProcCPUSeconds[k]; ok && r.BytesReceived > 0 {
					per = append(per, v/(float64(r.BytesReceived)/1e9))
				}
			}
			if len(per) == 0 {
				p(" – |")
				continue
			}
			p(" %.2f |", median(per))
		}
		p(" %s |\n", strings.Join(loads(th.Runs), " "))
		for _, e := range sc.res.Errors {
			p("\nError, %s: %s\n", sc.res.Name, oneLine(e))
		}
	}
}

// abProfile is the profiles of one binary's processes during one extra
// run.
type abProfile struct {
	label string // "before", "after"
	pr    *ProfileResult
}

// writeABProfiles writes the profiled run of each binary, a table of
// flat time by component with a column per process and binary, and the
// first rows of each process's `pprof -top`, before and after side by
// side. names are the processes' short names, in the order of the sides.
func writeABProfiles(w io.Writer, names []string, rows int, abs ...abProfile) {
	p := func(f string, a ...any) { fmt.Fprintf(w, f, a...) }
	for _, ab := range abs {
		if r := ab.pr.Run; r != nil {
			cpu := "–"
			if v := r.DaemonCPUPerGB(); v != nil {
				cpu = fmt.Sprintf("%.2f", *v)
			}
			p("- %s: profiled run %.0f s, %.2f Gbit/s, %s CPU-s/GB (all its processes), load %s; %d s profiles\n",
				ab.label, r.Seconds, r.BitsPerSecond/1e9, cpu, strings.Join(loads([]Run{*r}), ""), ab.pr.Seconds)
		}
	}
	p("\nFlat time by component (share of each process's samples; inlined functions counted in their callers, `-noinlines`):\n\n")
	var sides []ProfileSide
	for i, n := range names {
		for _, ab := range abs {
			s := ab.pr.Sides[i]
			s.Role = n + "-" + ab.label
			sides = append(sides, s)
		}
	}
	writeComponents(p, sides)
	for i, n := range names {
		for _, ab := range abs {
			s := ab.pr.Sides[i]
			p("\n%s, %s (%s; %s), `go tool pprof -top` (first %d rows):\n\n```\n%s```\n", n, ab.label, s.Role, s.Header, rows, firstRows(s.TopFlat, rows+1))
		}
	}
}

// saveABReport writes md to dir/name.md and the profiles' summaries to
// dir/name.json (for rendering again), and prints md.
func saveABReport(dir, name, md string, abs []abProfile) error {
	fmt.Print(md)
	if err := os.WriteFile(filepath.Join(dir, name+".md"), []byte(md), 0o644); err != nil {
		return err
	}
	m := map[string]*ProfileResult{}
	for _, ab := range abs {
		m[ab.label] = ab.pr
	}
	js, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+".json"), append(js, '\n'), 0o644)
}

// abNamed is the named processes' keys of sc, for writeABThroughput.
func abNamed(scs []*scenario) []string {
	var keys []string
	for _, sc := range scs {
		for _, n := range sc.named {
			if !slices.Contains(keys, n.key) {
				keys = append(keys, n.key)
			}
		}
	}
	return keys
}
