package main

// This file holds a run's figures, measures memory, and writes the
// simulation's section of bench/RESULTS.md and its results.json.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tomoe-net/tomoe/bench/internal/mdsection"
	"github.com/tomoe-net/tomoe/internal/testnet/vnet"
)

// Result is one run's figures.
type Result struct {
	Date    string `json:"date"`
	Machine string `json:"machine"`
	// Load is the machine's load average (1 min) when the nodes had
	// started and when the exchange ended: the machine is shared, and a
	// load above its 2 cores slows every figure that is a time.
	Load [2]string `json:"loadavg"`
	Go   string    `json:"go"`
	// Scenario is -scenario ("" in rows from before it existed: exchange).
	Scenario string         `json:"scenario,omitempty"`
	Nodes    int            `json:"nodes"`
	Bridges  int            `json:"bridges"`
	PerNode  int            `json:"bridges_per_node"`
	PairsArg int            `json:"pairs_per_node"`
	Seed     uint64         `json:"seed"`
	NAT      string         `json:"nat"`
	Sites    map[string]int `json:"sites"`
	Delay    string         `json:"max_link_delay"`
	Loss     float64        `json:"link_loss,omitempty"`
	Batch    string         `json:"batch"` // bind / stack batch sizes

	Started       int    `json:"started"`
	StartFailures int    `json:"start_failures"`
	Stopped       string `json:"stopped,omitempty"` // why the run ended early

	StartSeconds      float64 `json:"start_seconds"`
	IdleCores         float64 `json:"idle_cores"` // CPU the process used at rest, in cores (-idle)
	RegisteredSeconds float64 `json:"registered_seconds"`

	HeapPerNodeKB       float64 `json:"heap_per_node_kb"`
	RSSPerNodeKB        float64 `json:"rss_per_node_kb"`
	HeapAfterExchangeKB float64 `json:"heap_per_node_after_exchange_kb"`
	RSSAfterExchangeKB  float64 `json:"rss_per_node_after_exchange_kb"`
	PeakRSSMiB          float64 `json:"peak_rss_mib"` // sampled every 200 ms over the run
	GoroutinesPerNode   float64 `json:"goroutines_per_node"`
	HeapTotalMiB        float64 `json:"heap_total_mib"`
	RSSTotalMiB         float64 `json:"rss_total_mib"`

	Pairs            int     `json:"pairs"`
	PairsRun         int     `json:"pairs_run"` // both ends started
	PairsOK          int     `json:"pairs_ok"`
	AllPairsSeconds  float64 `json:"all_pairs_seconds"`
	HalfPairsSeconds float64 `json:"half_pairs_seconds"`
	DialFailed       int     `json:"dial_failed"` // pairs whose client never had the server as a peer
	NoAnswer         int     `json:"no_answer"`   // pairs that had, but no echo came back
	Lookups          uint64  `json:"lookups"`
	LookupsPerSecond float64 `json:"lookups_per_second"`

	// What was dropped by the end of the exchange: the world's counters,
	// the bridges' limits.
	Drops             vnet.Stats `json:"drops"`
	LookupsLimited    uint64     `json:"lookups_limited"`
	StrangersLimited  uint64     `json:"strangers_limited"`
	RelayDroppedQueue uint64     `json:"relay_dropped_queue"`

	Direct        int    `json:"direct"`
	Relayed       int    `json:"relayed"`
	RelayBytes    uint64 `json:"relay_bytes"`
	RelayFrames   uint64 `json:"relay_frames"`
	Introductions uint64 `json:"introductions"`

	Revocations    int     `json:"revocations"`
	RevokedCut     int     `json:"revoked_cut"`
	RevokeMedianMS float64 `json:"revoke_median_ms"`
	RevokeMaxMS    float64 `json:"revoke_max_ms"`

	CRL *CRLResult `json:"crl,omitempty"` // the crl scenario's figures

	Profiles []string            `json:"profiles,omitempty"`
	Top      map[string][]string `json:"top,omitempty"` // profile -> pprof -top lines
	Errors   []string            `json:"errors,omitempty"`

	DurationSeconds float64 `json:"duration_seconds"`
}

// loadavg is the 1-minute load average.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func newResult(o options) *Result {
	return &Result{
		Date: time.Now().UTC().Format(time.RFC3339), Machine: machine(), Go: runtime.Version(), Scenario: o.scenario,
		Nodes: o.nodes, Bridges: o.bridges, PerNode: min(o.perNode, o.bridges), PairsArg: o.pairs, Seed: o.seed,
		NAT: o.mix.String(), Sites: map[string]int{}, Delay: o.delay.String(), Loss: o.loss,
		Batch: fmt.Sprintf("%d / %d", o.bindBatch, o.stackBatch),
	}
}

// memSample is the process's memory at one moment, after a GC.
type memSample struct {
	heap, rss  uint64
	goroutines int
}

func measureMemory() memSample {
	runtime.GC() // twice: pooled objects survive the first in the victim cache
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memSample{heap: m.HeapAlloc, rss: rssBytes(), goroutines: runtime.NumGoroutine()}
}

// memory fills in the per-node figures from samples before and after the
// nodes started.
func (r *Result) memory(before, after memSample) {
	n := float64(max(r.Started, 1))
	r.HeapPerNodeKB = float64(int64(after.heap)-int64(before.heap)) / 1024 / n
	r.RSSPerNodeKB = float64(int64(after.rss)-int64(before.rss)) / 1024 / n
	r.GoroutinesPerNode = float64(after.goroutines-before.goroutines) / n
	r.HeapTotalMiB = float64(after.heap) / (1 << 20)
	r.RSSTotalMiB = float64(after.rss) / (1 << 20)
}

// rssBytes is the process's resident memory (VmRSS), or 0 if unknown.
func rssBytes() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// machine describes the CPUs and memory.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if l, _, ok := strings.Cut(string(b), "\n"); ok {
			f := strings.Fields(l)
			if len(f) >= 2 {
				kb, _ := strconv.ParseUint(f[1], 10, 64)
				mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
			}
		}
	}
	return fmt.Sprintf("%d × %s%s", runtime.NumCPU(), model, mem)
}

// summarizeProfiles keeps the top entries of each profile (go tool pprof
// -top), if the go command is there.
func (r *Result) summarizeProfiles(log *slog.Logger) {
	for _, p := range r.Profiles {
		args := []string{"tool", "pprof", "-top", "-nodecount=12"}
		if strings.Contains(p, "heap") {
			args = append(args, "-sample_index=inuse_space")
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		out, err := exec.CommandContext(ctx, "go", append(args, p)...).Output()
		cancel()
		if err != nil {
			log.Warn("cannot summarise a profile", "profile", p, "err", err)
			continue
		}
		if r.Top == nil {
			r.Top = map[string][]string{}
		}
		var lines []string
		for _, l := range strings.Split(string(out), "\n") {
			l = strings.TrimRight(l, " ")
			if l == "" || strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
				continue
			}
			lines = append(lines, l)
		}
		r.Top[p[strings.LastIndex(p, "/")+1:]] = lines
	}
}

// text is the figures for the terminal.
func (r *Result) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "nodes %d/%d started, bridges %d; registered in %.1f s; load average %s, then %s\n", r.Started, r.Nodes, r.Bridges, r.RegisteredSeconds, r.Load[0], r.Load[1])
	exchange := r.scenario() == scenarioExchange
	if exchange {
		fmt.Fprintf(&b, "at rest: %.2f cores (%.1f ms of CPU a second per 1,000 nodes)\n", r.IdleCores, 1e6*r.IdleCores/float64(max(r.Started, 1)))
	}
	fmt.Fprintf(&b, "memory per node: heap %.0f KiB, RSS %.0f KiB, %.1f goroutines; total heap %.0f MiB, RSS %.0f MiB\n",
		r.HeapPerNodeKB, r.RSSPerNodeKB, r.GoroutinesPerNode, r.HeapTotalMiB, r.RSSTotalMiB)
	if exchange {
		fmt.Fprintf(&b, "after the exchange, per node: heap %.0f KiB, RSS %.0f KiB; peak RSS %.0f MiB\n", r.HeapAfterExchangeKB, r.RSSAfterExchangeKB, r.PeakRSSMiB)
	} else {
		fmt.Fprintf(&b, "peak RSS %.0f MiB\n", r.PeakRSSMiB)
	}
	fmt.Fprintf(&b, "pairs %d/%d exchanged, all by %.1f s, half by %.1f s; bridge lookups %d (%.0f/s)\n",
		r.PairsOK, r.PairsRun, r.AllPairsSeconds, r.HalfPairsSeconds, r.Lookups, r.LookupsPerSecond)
	fmt.Fprintf(&b, "failed pairs: %d never had a peer, %d had no answer; drops %+v; bridges limited %d lookups, %d strangers, relay queue dropped %d\n",
		r.DialFailed, r.NoAnswer, r.Drops, r.LookupsLimited, r.StrangersLimited, r.RelayDroppedQueue)
	if exchange {
		fmt.Fprintf(&b, "paths: %d direct, %d relayed; relayed %d bytes in %d frames; %d introductions\n", r.Direct, r.Relayed, r.RelayBytes, r.RelayFrames, r.Introductions)
		fmt.Fprintf(&b, "revocations: %d, next datagram refused in %d; call median %.2f ms, max %.2f ms\n", r.Revocations, r.RevokedCut, r.RevokeMedianMS, r.RevokeMaxMS)
	}
	if c := r.CRL; c != nil {
		fmt.Fprintf(&b, "revocation list (revoking %s, pushed to %s in %.1f ms): %d of %d nodes had it, p50 %.2f s, p90 %.2f s, max %.2f s; bridge certificates %d (registrations expired %d), members told %d, limited %d\n",
			c.Revoked, c.PushedTo, c.PushMS, c.Reached, c.Online, c.P50Seconds, c.P90Seconds, c.MaxSeconds, c.BridgeCerts, c.BridgeExpired, c.BridgePushed, c.BridgeLimited)
		fmt.Fprintf(&b, "sessions with the revoked member: %d live, %d cut (after the list: median %.2f ms, max %.2f ms), next datagram refused on %d; last datagram answered %.1f ms after the list (%d probes)\n",
			c.Sessions, c.Cut, c.CutMedianMS, c.CutMaxMS, c.Refused, c.LastAnsweredMS, c.Probes)
	}
	if r.Stopped != "" {
		fmt.Fprintf(&b, "STOPPED EARLY: %s\n", r.Stopped)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "error: %s\n", e)
	}
	return b.String()
}

// writeReport adds r, if not nil, to the rows in o.jsonOut (replacing a
// row with the same node, bridge and allowed-pair counts) and rewrites the
// simulation section of o.out from them.
func writeReport(o options, r *Result) error {
	var rows []*Result
	if b, err := os.ReadFile(o.jsonOut); err == nil {
		if err := json.Unmarshal(b, &rows); err != nil {
			return fmt.Errorf("%s: %w", o.jsonOut, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if r != nil {
		rows = slices.DeleteFunc(rows, func(x *Result) bool {
			return x.Nodes == r.Nodes && x.Bridges == r.Bridges && x.PairsArg == r.PairsArg && x.scenario() == r.scenario()
		})
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b *Result) int {
		if a.scenario() != b.scenario() {
			return strings.Compare(b.scenario(), a.scenario()) // exchange, then crl
		}
		if a.Nodes != b.Nodes {
			return a.Nodes - b.Nodes
		}
		if a.Bridges != b.Bridges {
			return a.Bridges - b.Bridges
		}
		return b.PairsArg - a.PairsArg
	})
	js, err := json.MarshalIndent(rows, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(o.jsonOut, append(js, '\n'), 0o644); err != nil {
		return err
	}
	old, err := os.ReadFile(o.out)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	notes, err := os.ReadFile(filepath.Join(filepath.Dir(o.jsonOut), "findings.md"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.WriteFile(o.out, []byte(mdsection.Set(string(old), "simulation", markdown(rows, string(notes)))), 0o644)
}

// scenario is r's scenario; rows from before -scenario are exchange's.
func (r *Result) scenario() string {
	if r.Scenario == "" {
		return scenarioExchange
	}
	return r.Scenario
}

// markdown is the simulation section for rows, with notes (the
// hand-written findings.md beside results.json) after the table.
func markdown(all []*Result, notes string) string {
	var rows, crls []*Result
	for _, r := range all {
		if r.scenario() == scenarioCRL {
			crls = append(crls, r)
		} else {
			rows = append(rows, r)
		}
	}
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("## Simulation: thousands of nodes in one process\n\n")
	p("Generated by `go run ./bench/sim` (bench/sim/README.md); raw numbers in `bench/sim/results.json`. ")
	p("Real nodes (node.New: policy, WireGuard, gVisor netstack, bridge client and server) in userspace mode on an in-memory internet (internal/testnet/vnet), ")
	p("each on a site of its own behind a NAT of a random kind; each node's policy lets a few random others in (udp to its echo port), and every such pair exchanges a datagram, the client finding the server by address alone through a bridge. ")
	p("Memory per node is the heap (after GC) and resident memory the nodes added, divided by the nodes started. ")
	p("Direct share counts each pair's path as the client sees it after the settle time. Lookups/s are the bridges' lookups over the exchange phase.\n\n")
	if len(rows) == 0 && len(crls) == 0 {
		return b.String()
	}
	cols := []column{
		{"date", func(r *Result) string { return r.Date[:10] }},
		{"nodes started", func(r *Result) string { return fmt.Sprintf("%d of %d", r.Started, r.Nodes) }},
		{"bridges (per node)", func(r *Result) string { return fmt.Sprintf("%d (%d)", r.Bridges, r.PerNode) }},
		{"sites", func(r *Result) string { return sites(r.Sites) }},
		{"start / all registered (s)", func(r *Result) string { return fmt.Sprintf("%.1f / %.1f", r.StartSeconds, r.RegisteredSeconds) }},
		{"heap per node (KiB)", func(r *Result) string { return fmt.Sprintf("%.0f", r.HeapPerNodeKB) }},
		{"RSS per node (KiB)", func(r *Result) string { return fmt.Sprintf("%.0f", r.RSSPerNodeKB) }},
		{"heap / RSS per node after the exchange (KiB)", func(r *Result) string {
			return fmt.Sprintf("%.0f / %.0f", r.HeapAfterExchangeKB, r.RSSAfterExchangeKB)
		}},
		{"CPU at rest (cores; per 1,000 nodes)", func(r *Result) string {
			return fmt.Sprintf("%.2f; %.2f", r.IdleCores, 1000*r.IdleCores/float64(max(r.Started, 1)))
		}},
		{"goroutines per node", func(r *Result) string { return fmt.Sprintf("%.1f", r.GoroutinesPerNode) }},
		{"total heap / RSS when up; peak RSS (MiB)", func(r *Result) string {
			return fmt.Sprintf("%.0f / %.0f; %.0f", r.HeapTotalMiB, r.RSSTotalMiB, r.PeakRSSMiB)
		}},
		{"allowed pairs exchanged", func(r *Result) string { return fmt.Sprintf("%d of %d", r.PairsOK, r.PairsRun) }},
		{"time until every pair exchanged (s)", func(r *Result) string { return fmt.Sprintf("%.1f (half: %.1f)", r.AllPairsSeconds, r.HalfPairsSeconds) }},
		{"pairs failed: no peer / no answer", func(r *Result) string { return fmt.Sprintf("%d / %d", r.DialFailed, r.NoAnswer) }},
		{"datagrams dropped: socket full / NAT filtered / lost", func(r *Result) string {
			return fmt.Sprintf("%d / %d / %d", r.Drops.SocketFull, r.Drops.NATFiltered, r.Drops.Lost)
		}},
		{"bridge lookups/s", func(r *Result) string { return fmt.Sprintf("%.0f (%d lookups)", r.LookupsPerSecond, r.Lookups) }},
		{"pairs direct", func(r *Result) string {
			if r.Direct+r.Relayed == 0 {
				return "–"
			}
			return fmt.Sprintf("%.0f%% (%d direct, %d relayed)", 100*float64(r.Direct)/float64(r.Direct+r.Relayed), r.Direct, r.Relayed)
		}},
		{"relayed bytes (frames)", func(r *Result) string { return fmt.Sprintf("%d (%d)", r.RelayBytes, r.RelayFrames) }},
		{"policy revocations: next datagram refused; call median / max (ms)", func(r *Result) string {
			return fmt.Sprintf("%d of %d; %.2f / %.2f", r.RevokedCut, r.Revocations, r.RevokeMedianMS, r.RevokeMaxMS)
		}},
		{"revocation lists that spread", func(*Result) string { return "see the next table (`-scenario crl`)" }},
		{"run took (s)", func(r *Result) string { return fmt.Sprintf("%.0f", r.DurationSeconds) }},
	}
	if len(rows) > 0 {
		table(&b, rows, cols, func(r *Result) string { return fmt.Sprintf("N = %d, %d allowed each", r.Nodes, r.PairsArg) })
	}
	if len(crls) > 0 {
		markdownCRL(&b, crls)
	}
	if notes = strings.TrimSpace(notes); notes != "" {
		p("%s\n\n", notes)
	}
	for _, r := range append(rows, crls...) {
		label := fmt.Sprintf("N = %d, %d allowed each", r.Nodes, r.PairsArg)
		if r.scenario() == scenarioCRL {
			label = fmt.Sprintf("revocation list, N = %d", r.Nodes)
		}
		p("**%s** (load average %s when the nodes were up, %s after the exchange; %s; %s; seed %d, %d allowed per node, link delay up to %s%s, NAT weights %s, batch sizes (UDP / stack) %s)", label, r.Load[0], r.Load[1], r.Machine, r.Go, r.Seed, r.PairsArg, r.Delay, lossNote(r.Loss), r.NAT, r.Batch)
		if r.Stopped != "" {
			p(": **stopped early**: %s", r.Stopped)
		}
		p("\n\n")
		for _, e := range r.Errors {
			p("- error: %s\n", e)
		}
		if len(r.Errors) > 0 {
			p("\n")
		}
		for _, name := range sortedKeys(r.Top) {
			p("<details><summary>%s: top entries</summary>\n\n```\n%s\n```\n</details>\n\n", name, strings.Join(r.Top[name], "\n"))
		}
	}
	return b.String()
}

// lossNote is the link loss for a run's description ("" when none).
func lossNote(loss float64) string {
	if loss == 0 {
		return ""
	}
	return fmt.Sprintf(", link loss %g", loss)
}

// column is one row of a table: a figure across the runs.
type column struct {
	name string
	f    func(*Result) string
}

// table writes a table with a column per run (head names it) and a row
// per figure.
func table(b *bytes.Buffer, rows []*Result, cols []column, head func(*Result) string) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format, args...) }
	p("| |")
	for _, r := range rows {
		p(" %s |", head(r))
	}
	p("\n|---|")
	for range rows {
		p("---|")
	}
	p("\n")
	for _, c := range cols {
		p("| %s |", c.name)
		for _, r := range rows {
			p(" %s |", c.f(r))
		}
		p("\n")
	}
	p("\n")
}

// markdownCRL is the table of the crl scenario's runs.
func markdownCRL(b *bytes.Buffer, rows []*Result) {
	fmt.Fprintf(b, "### Revocation lists that spread (`-scenario crl`, issue 11)\n\n")
	fmt.Fprintf(b, "Every node is a member of one organisation (a certificate each; every node's policy admits `org:acme` to its echo port). ")
	fmt.Fprintf(b, "Once the allowed pairs have exchanged a datagram, and the revoked member has a live session with `-crl-peers` others, a revocation list revoking that member is pushed to one other node (the admin API's push, as `tomoe org crl push`). ")
	fmt.Fprintf(b, "The times run from the push to each node's `org_crl` event (the node installed the list); the cut is from that event to the `peer_removed` event of the revoked member on the same node. ")
	fmt.Fprintf(b, "Goals (issue 11): every node within 10 s at N = 1,000 through one bridge; the cut within 1 s.\n\n")
	crl := func(f func(*CRLResult) string) func(*Result) string {
		return func(r *Result) string {
			if r.CRL == nil {
				return "–"
			}
			return f(r.CRL)
		}
	}
	cols := []column{
		{"date", func(r *Result) string { return r.Date[:10] }},
		{"nodes started; bridges (per node)", func(r *Result) string {
			return fmt.Sprintf("%d of %d; %d (%d)", r.Started, r.Nodes, r.Bridges, r.PerNode)
		}},
		{"machine's load average: nodes up / after the exchange (2 cores, shared)", func(r *Result) string { return fmt.Sprintf("%s / %s", r.Load[0], r.Load[1]) }},
		{"start / all registered (s)", func(r *Result) string { return fmt.Sprintf("%.1f / %.1f", r.StartSeconds, r.RegisteredSeconds) }},
		{"allowed pairs exchanged (s until all)", func(r *Result) string {
			return fmt.Sprintf("%d of %d (%.1f)", r.PairsOK, r.PairsRun, r.AllPairsSeconds)
		}},
		{"certificates held by the bridges at the push (registrations expired by then)", crl(func(c *CRLResult) string {
			return fmt.Sprintf("%d (%d)", c.BridgeCerts, c.BridgeExpired)
		})},
		{"nodes holding the new list", crl(func(c *CRLResult) string { return fmt.Sprintf("%d of %d", c.Reached, c.Online) })},
		{"time from the push until a node holds it: p50 / p90 / max (s)", crl(func(c *CRLResult) string {
			return fmt.Sprintf("%.2f / %.2f / %.2f", c.P50Seconds, c.P90Seconds, c.MaxSeconds)
		})},
		{"time until every online node holds it (s)", crl(func(c *CRLResult) string {
			if c.AllSeconds == 0 {
				return "not all did"
			}
			return fmt.Sprintf("**%.2f**", c.AllSeconds)
		})},
		{"bridges: members told / messages rate-limited", crl(func(c *CRLResult) string { return fmt.Sprintf("%d / %d", c.BridgePushed, c.BridgeLimited) })},
		{"sessions with the revoked member: live / cut / next datagram refused", crl(func(c *CRLResult) string {
			return fmt.Sprintf("%d / %d / %d", c.Sessions, c.Cut, c.Refused)
		})},
		{"from holding the list to the session cut: median / max (ms)", crl(func(c *CRLResult) string {
			return fmt.Sprintf("%.2f / %.2f", c.CutMedianMS, c.CutMaxMS)
		})},
		{"revoked member's datagrams (back to back on each session): the last answered was sent, after the node held the list (ms, worst session)", crl(func(c *CRLResult) string {
			return fmt.Sprintf("%.1f", c.LastAnsweredMS)
		})},
		{"peak RSS (MiB)", func(r *Result) string { return fmt.Sprintf("%.0f", r.PeakRSSMiB) }},
		{"run took (s)", func(r *Result) string { return fmt.Sprintf("%.0f", r.DurationSeconds) }},
	}
	table(b, rows, cols, func(r *Result) string { return fmt.Sprintf("N = %d", r.Nodes) })
}

func sites(m map[string]int) string {
	var parts []string
	for _, k := range natKinds {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	return strings.Join(parts, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
