package main

// The Markdown both opt-in A/B tests (TestRelayTCPAB, TestUserspaceAB)
// write beside their profiles: the interleaved runs' medians, and each
// profiled process's flat time by component before and after, with the
// bench's own classification (summarize, componentOf, writeComponents).

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
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
	if perGB, ok := componentsPerGB(names, abs); ok {
		p("\nThe same in CPU seconds per 10⁹ bytes (share × the profile's sampled CPU time ÷ the bytes the profiled run carried in the profile's %d s, at the run's average rate):\n\n", abs[0].pr.Seconds)
		writeComponentCells(p, perGB, "%.2f")
		p("| all |")
		for _, s := range perGB {
			sum := 0.0
			for _, c := range s.Components {
				sum += c.FlatPercent
			}
			p(" %.2f |", sum)
		}
		p("\n")
	}
	for i, n := range names {
		for _, ab := range abs {
			s := ab.pr.Sides[i]
			p("\n%s, %s: %s; %s. `go tool pprof -top`, first %d rows:\n\n```\n%s```\n", n, ab.label, s.Role, s.Header, rows, firstRows(s.TopFlat, rows+1))
		}
	}
}

// componentsPerGB turns the sides' shares into CPU seconds per 10⁹
// bytes received (in FlatPercent): a share of a process that does less
// work per byte can grow while its cost shrinks. It assumes the profiled
// run's average rate during the profile.
func componentsPerGB(names []string, abs []abProfile) ([]ProfileSide, bool) {
	var out []ProfileSide
	for i, n := range names {
		for _, ab := range abs {
			s := ab.pr.Sides[i]
			sampled, ok := sampledSeconds(s.Header)
			if !ok || ab.pr.Run == nil || ab.pr.Run.BitsPerSecond == 0 {
				return nil, false
			}
			gb := ab.pr.Run.BitsPerSecond / 8 * float64(ab.pr.Seconds) / 1e9
			side := ProfileSide{Role: n + "-" + ab.label}
			for _, c := range s.Components {
				side.Components = append(side.Components, Component{Name: c.Name, FlatPercent: c.FlatPercent / 100 * sampled / gb})
			}
			out = append(out, side)
		}
	}
	return out, true
}

// sampledSeconds is the "Total samples" of a pprof header ("Duration:
// 8s, Total samples = 5.07s (63.37%)") in seconds.
func sampledSeconds(header string) (float64, bool) {
	_, after, ok := strings.Cut(header, "Total samples = ")
	if !ok {
		return 0, false
	}
	v, _, _ := strings.Cut(after, " ")
	v = strings.NewReplacer("mins", "m", "hrs", "h").Replace(v)
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, false
	}
	return d.Seconds(), true
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

func TestSampledSeconds(t *testing.T) {
	for _, tc := range []struct {
		header string
		want   float64
		ok     bool
	}{
		{"Duration: 8s, Total samples = 5.07s (63.37%)", 5.07, true},
		{"Duration: 8s, Total samples = 950ms (11.87%)", 0.95, true},
		{"Duration: 120s, Total samples = 1.50mins (75%)", 90, true},
		{"Duration: 8s, Total samples = x (0%)", 0, false},
		{"", 0, false},
	} {
		got, ok := sampledSeconds(tc.header)
		if ok != tc.ok || math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("sampledSeconds(%q) = %v, %v; want %v, %v", tc.header, got, ok, tc.want, tc.ok)
		}
	}
}

// TestWriteABReport: the throughput table's medians and ratios, and the
// components in shares and in CPU seconds per GB, before and after.
func TestWriteABReport(t *testing.T) {
	cpu := func(v float64) *float64 { return &v }
	sc := func(name string, gbit, daemon, source float64) *scenario {
		s := &scenario{res: &ScenarioResult{Name: name}, named: []namedProc{{key: "source"}}}
		th := &Throughput{Streams: 1, Runs: []Run{{Streams: 1, BitsPerSecond: gbit * 1e9, BytesReceived: 2e9, DaemonCPUSeconds: cpu(daemon),
			ProcCPUSeconds: map[string]float64{"source": source}, Loadavg: "1.50 1.00 0.50 1/100 1"}}}
		th.summarize()
		s.res.Throughput = []*Throughput{th}
		return s
	}
	var b strings.Builder
	writeABThroughput(&b, []*scenario{sc("old", 0.5, 40, 10), sc("new", 1, 20, 8)}, []string{"source"})
	side := func(sampled string, crypto float64) ProfileSide {
		return ProfileSide{Role: "x", Header: "Duration: 8s, Total samples = " + sampled + " (50%)", TopFlat: "flat flat%\n1s 50% a\n",
			Components: []Component{{Name: "crypto", FlatPercent: crypto}, {Name: "system calls", FlatPercent: 100 - crypto}}}
	}
	// 1 Gbit/s for 8 s is 1 GB.
	before := &ProfileResult{Seconds: 8, Run: &Run{Seconds: 11, BitsPerSecond: 1e9}, Sides: []ProfileSide{side("4s", 25)}}
	after := &ProfileResult{Seconds: 8, Run: &Run{Seconds: 11, BitsPerSecond: 2e9}, Sides: []ProfileSide{side("4s", 50)}}
	writeABProfiles(&b, []string{"A"}, 8, abProfile{"before", before}, abProfile{"after", after})
	md := b.String()
	for _, want := range []string{
		"| scenario | Gbit/s, median (runs) | × old | CPU-s/GB, all processes | middle | source | load average (1 min) per run |",
		"| old | 0.50 (0.50) | 1.00 | 20.00 | – | 5.00 | 1.50 |",
		"| new | 1.00 (1.00) | 2.00 | 10.00 | – | 4.00 | 1.50 |",
		"| Component | A-before | A-after |",
		"| crypto | 25.0% | 50.0% |",
		"| crypto | 1.00 | 1.00 |",
		"| system calls | 3.00 | 1.00 |",
		"| all | 4.00 | 2.00 |",
		"A, after: x; Duration: 8s, Total samples = 4s (50%).",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}
