// Command bench measures tomoe's data plane against plain wireguard-go and
// the raw veth ceiling in one run, tomoe's memory per peer, its bridges
// (relayed throughput against a wireguard-go hub, cold lookups, a bridge
// with 10,000 simulated nodes) and its VPN features (subnet routes through
// a gateway, userspace access through SOCKS5 and port forwards against
// kernel mode), what a handshake flood costs an allowed peer, and tomoe
// against wireguard-go, yggdrasil and nebula on one topology (compare.go),
// and writes the figures to RESULTS.md and results.json. It needs root, iperf3, wireguard-tools and nftables; it
// builds tomoe and installs the wireguard-go version tomoe pins into a
// temporary directory (and yggdrasil and nebula with apt-get, for the
// compare part, if missing). See README.md in this directory.
//
//	go run ./bench               # full run, about 49 minutes
//	go run ./bench -quick        # smoke test: 1 repeat of 3 s runs
//	go run ./bench -only bridge  # just the bridge part, merged into results.json
//	go run ./bench -only vpn     # just the VPN part, likewise
//	go run ./bench -only flood   # just the handshake-flood part, likewise
//	go run ./bench -only l2      # just the virtual Ethernet part, likewise
//	go run ./bench -only compare # just the compare part (issue 15), likewise
//
// Benchmarks are never pass/fail: targets are written next to the figures.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tomoe-net/tomoe/bench/internal/mdsection"
)

// options are the command-line flags.
type options struct {
	quick       bool
	repeats     int
	out         string
	jsonOut     string
	wireguardGo string
	profiles    string
	only        string
	profStreams int
	render      string
	// bridgeStreams are the iperf3 -P values of the bridge part.
	bridgeStreams []int
}

func main() {
	var o options
	flag.BoolVar(&o.quick, "quick", false, "smoke test: 1 repeat, 3 s runs")
	flag.IntVar(&o.repeats, "repeats", 3, "repeats of each throughput figure (medians are reported; more repeats, less noise)")
	flag.StringVar(&o.out, "out", "bench/RESULTS.md", "where to write the report")
	flag.StringVar(&o.jsonOut, "json", "", "where to write the raw numbers (default: results.json beside -out)")
	flag.StringVar(&o.wireguardGo, "wireguard-go", "", "use this wireguard-go binary instead of installing the pinned version")
	flag.StringVar(&o.profiles, "profiles", "", "keep the CPU profiles in this directory (default: discarded)")
	flag.StringVar(&o.only, "only", "", "run only one part: \"dataplane\" (throughput, CPU, latency, profile), \"memory\", \"bridge\" (relay, lookups, capacity), \"vpn\" (routed subnets, userspace access), \"flood\" (handshake flood), \"l2\" (virtual Ethernet against the L3 overlay) or \"compare\" (tomoe against wireguard-go, yggdrasil, nebula); bridge, vpn, flood, l2 and compare replace just their part of an existing results.json")
	bridgeStreams := flag.String("bridge-streams", "1", "comma-separated iperf3 -P values of the bridge part, e.g. 1,4")
	flag.IntVar(&o.profStreams, "profile-streams", 1, "parallel streams of the profiled tomoe run")
	flag.StringVar(&o.render, "render", "", "only rewrite -out from this results.json (no measurements, no root needed)")
	flag.Parse()
	if o.only != "" && !slices.Contains([]string{"dataplane", "memory", "bridge", "vpn", "flood", "l2", "compare"}, o.only) {
		fmt.Fprintln(os.Stderr, "bench: -only must be dataplane, memory, bridge, vpn, flood, l2 or compare")
		os.Exit(2)
	}
	for _, f := range strings.Split(*bridgeStreams, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 64 || slices.Contains(o.bridgeStreams, n) {
			fmt.Fprintln(os.Stderr, "bench: -bridge-streams must be distinct numbers 1..64, e.g. 1,4")
			os.Exit(2)
		}
		o.bridgeStreams = append(o.bridgeStreams, n)
	}
	if o.repeats < 1 || o.repeats > 50 {
		fmt.Fprintln(os.Stderr, "bench: -repeats must be 1..50")
		os.Exit(2)
	}
	if o.jsonOut == "" {
		o.jsonOut = filepath.Join(filepath.Dir(o.out), "results.json")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if o.render != "" {
		if err := render(o.render, o.out); err != nil {
			log.Error("render failed", "err", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := benchmark(ctx, o, log)
	stop()
	if err != nil {
		log.Error("benchmark failed", "err", err)
		os.Exit(1)
	}
}

func benchmark(ctx context.Context, o options, log *slog.Logger) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: the benchmark creates network namespaces and TUN devices")
	}
	tools := []string{"ip", "ss", "ping", "iperf3", "wg", "go"}
	if o.runs("bridge") {
		tools = append(tools, "nft")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: apt-get install -y iperf3 wireguard-tools iproute2 iputils-ping nftables (and Go)", tool)
		}
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "tbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	e := &env{log: log, work: work}
	defer e.Cleanup()

	started := time.Now()
	res := &Results{Date: started.Format(time.RFC3339), Quick: o.quick, Repeats: o.repeats, RunSeconds: 10, PingCount: 20}
	profSecs, memSettle, memLate := 8, 3*time.Second, 120*time.Second
	if o.quick {
		res.Repeats, res.RunSeconds, profSecs, memLate = 1, 3, 3, 0
	}
	res.Machine = machineInfo()

	log.Info("building", "work", work)
	tomoeBin, usbenchBin, simBin, loadBin, floodBin := filepath.Join(work, "tomoe"), filepath.Join(work, "usbench"), filepath.Join(work, "bridgesim"), filepath.Join(work, "tcpload"), filepath.Join(work, "hsflood")
	for _, b := range []struct{ out, pkg string }{{tomoeBin, "./cmd/tomoe"}, {usbenchBin, "./bench/usbench"}, {simBin, "./bench/bridgesim"}, {loadBin, "./bench/tcpload"}, {floodBin, "./bench/hsflood"}} {
		if err := build(ctx, root, b.out, b.pkg); err != nil {
			return err
		}
	}
	wgVersion, err := goOutput(ctx, root, "list", "-m", "-f", "{{.Version}}", "golang.zx2c4.com/wireguard")
	if err != nil {
		return err
	}
	wgBin := o.wireguardGo
	if wgBin == "" {
		if wgBin, err = installWireGuardGo(ctx, work, wgVersion); err != nil {
			return err
		}
	}
	res.Versions = versions(ctx, root, wgVersion)
	if o.wireguardGo != "" {
		res.Versions.WireGuardGo += " (binary given with -wireguard-go: " + o.wireguardGo + ")"
	}

	removeNamespaces() // leftovers of a run that was killed
	e.onCleanup(removeNamespaces)
	if o.runs("dataplane") || o.runs("memory") {
		if err := e.setupUnderlay(ctx); err != nil {
			return err
		}
	}
	profDir := work
	if o.profiles != "" {
		profDir = o.profiles
		if err := os.MkdirAll(profDir, 0o755); err != nil {
			return err
		}
		// Keep the binary beside the profiles so they can be read later.
		if err := copyFile(tomoeBin, filepath.Join(profDir, "tomoe")); err != nil {
			return err
		}
	}
	b := bins{tomoe: tomoeBin, usbench: usbenchBin, bridgesim: simBin, tcpload: loadBin, hsflood: floodBin, wireguardGo: wgBin}
	if o.runs("dataplane") {
		if err := e.dataPlane(ctx, b, res, profSecs, o.profStreams, profDir); err != nil {
			return err
		}
	}
	if o.runs("memory") {
		log.Info("memory per peer", "peers", 1000)
		if res.Memory, err = e.measureMemory(ctx, tomoeBin, wgBin, 1000, memSettle, memLate, profDir); err != nil {
			res.fail(log, "memory", err)
		}
	}
	if o.runs("bridge") {
		// The data-plane namespaces are idle by now; drop them so that
		// the bridge part has the machine to itself.
		removeNamespaces()
		if res.Bridge, err = e.runBridgePart(ctx, o, b, res); err != nil {
			return err
		}
	}
	if o.runs("vpn") {
		removeNamespaces() // the VPN part has the machine to itself too
		if res.VPN, err = e.runVPNPart(ctx, o, b, res, profSecs, profDir); err != nil {
			return err
		}
	}
	if o.runs("flood") {
		removeNamespaces() // the flood takes a core: nothing else may run beside it
		if res.Flood, err = e.runFloodPart(ctx, o, b, res, profSecs, profDir); err != nil {
			return err
		}
	}
	if o.runs("l2") {
		removeNamespaces() // the virtual Ethernet part runs alone too
		if res.L2, err = e.runL2Part(ctx, o, b, res); err != nil {
			return err
		}
	}
	if o.runs("compare") {
		removeNamespaces() // the compare part has the machine to itself
		if res.Compare, err = e.runComparePart(ctx, o, b, res, profSecs, profDir); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	res.Machine.LoadavgEnd = loadavg()
	res.DurationSeconds = time.Since(started).Seconds()
	return writeResults(o, res, log)
}

// runs reports whether the run includes part ("dataplane", "memory",
// "bridge", "vpn", "flood", "l2" or "compare").
func (o options) runs(part string) bool { return o.only == "" || o.only == part }

// runBridgePart measures the bridge part with the run's settings.
func (e *env) runBridgePart(ctx context.Context, o options, b bins, res *Results) (*BridgeResult, error) {
	started := time.Now()
	br := &BridgeResult{
		PartRun: newPartRun(started, o.quick, res.Repeats, res.RunSeconds, res.PingCount),
		Streams: o.bridgeStreams,
		Tomoe:   res.Versions.Tomoe, WireGuardGo: res.Versions.WireGuardGo,
	}
	p := bridgeParams{
		repeats: res.Repeats, runSeconds: res.RunSeconds, streams: o.bridgeStreams, pingCount: res.PingCount,
		coldLookups: 10, simNodes: 10000, lookupSeconds: 5, settle: 3 * time.Second,
	}
	if o.quick {
		p.coldLookups, p.lookupSeconds = 3, 2
	}
	if err := e.bridgePart(ctx, b, p, br); err != nil {
		return nil, err
	}
	br.LoadavgEnd = loadavg()
	br.DurationSeconds = time.Since(started).Seconds()
	return br, nil
}

// bins are the programs the benchmark runs.
type bins struct {
	tomoe, usbench, bridgesim, tcpload, hsflood, wireguardGo string
}

// fail records an error that ends one part of the benchmark but not the run.
func (r *Results) fail(log *slog.Logger, what string, err error) {
	log.Error(what, "err", err)
	r.Errors = append(r.Errors, what+": "+err.Error())
}

// dataPlane sets up the four data-plane scenarios side by side, measures
// throughput, CPU and latency, profiles tomoe, and stops them again.
func (e *env) dataPlane(ctx context.Context, b bins, res *Results, profSecs, profStreams int, profDir string) error {
	log := e.log
	log.Info("setting up the four data-plane scenarios")
	server, err := e.iperfServer(ctx, nsB)
	if err != nil {
		return err
	}
	raw := &scenario{
		res:   &ScenarioResult{Key: "raw", Name: "raw veth", Target: underlayB},
		pings: []func(context.Context) (PingResult, error){kernelPing(nsA, res.PingCount, underlayB)},
	}
	raw.traffic = e.iperfTraffic(nsA, nsB, underlayB, &server)
	scenarios := []*scenario{raw}
	if sc, err := e.setupWireGuard(ctx, b.wireguardGo, res.PingCount); err != nil {
		res.fail(log, "wireguard-go setup", err)
	} else {
		sc.traffic = e.iperfTraffic(nsA, nsB, sc.res.Target, &server)
		scenarios = append(scenarios, sc)
	}
	tk, kernelNodes, err := e.setupTomoeKernel(ctx, b.tomoe, res.PingCount)
	if err != nil {
		res.fail(log, "tomoe kernel setup", err)
	} else {
		tk.traffic = e.iperfTraffic(nsA, nsB, tk.res.Target, &server)
		scenarios = append(scenarios, tk)
	}
	if sc, err := e.setupTomoeUserspace(ctx, b.usbench, b.tomoe, res.PingCount); err != nil {
		res.fail(log, "tomoe userspace setup", err)
	} else {
		scenarios = append(scenarios, sc)
	}
	defer func() {
		// The memory scenario runs alone.
		for _, sc := range scenarios {
			for _, p := range sc.daemons {
				p.stop(10 * time.Second)
			}
		}
		server.stop(5 * time.Second)
	}()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for _, sc := range scenarios {
		res.Scenarios = append(res.Scenarios, sc.res)
	}
	if err := measureInterleaved(ctx, log, scenarios, streamCounts, res.Repeats, res.RunSeconds); err != nil {
		return err
	}
	measurePings(ctx, log, scenarios)

	if tk != nil {
		log.Info("profiling tomoe kernel mode", "seconds", profSecs, "streams", profStreams)
		if res.Profile, err = e.profileTomoe(ctx, tk, kernelNodes, b.tomoe, profSecs, profStreams, profDir); err != nil {
			res.fail(log, "profile", err)
		}
	}
	return ctx.Err()
}

// measureInterleaved measures every scenario's throughput: every
// scenario once per repeat and stream count, in reverse order on even
// repeats so that no scenario always runs right after the same other one.
// It then fills in the medians.
func measureInterleaved(ctx context.Context, log *slog.Logger, scenarios []*scenario, streams []int, repeats int, secs float64) error {
	for _, sc := range scenarios {
		for _, n := range streams {
			sc.res.Throughput = append(sc.res.Throughput, &Throughput{Streams: n})
		}
	}
	for rep := 1; rep <= repeats; rep++ {
		order := slices.Clone(scenarios)
		if rep%2 == 0 {
			slices.Reverse(order)
		}
		for _, n := range streams {
			for _, sc := range order {
				log.Info("throughput", "scenario", sc.res.Name, "streams", n, "repeat", rep)
				load := loadavg()
				r, err := sc.measure(ctx, n, secs)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if err != nil {
					log.Error("throughput run failed", "scenario", sc.res.Name, "err", err)
					sc.res.Errors = append(sc.res.Errors, fmt.Sprintf("%d streams, repeat %d: %v", n, rep, err))
					continue
				}
				r.Loadavg = load
				sc.res.throughput(n).Runs = append(sc.res.throughput(n).Runs, r)
				log.Info("result", "scenario", sc.res.Name, "streams", n, "gbit_s", gbit(r.BitsPerSecond))
				sleep(ctx, time.Second)
			}
		}
	}
	for _, sc := range scenarios {
		for _, t := range sc.res.Throughput {
			t.summarize()
		}
	}
	return nil
}

// measurePings takes every scenario's latency measurements.
func measurePings(ctx context.Context, log *slog.Logger, scenarios []*scenario) {
	for _, sc := range scenarios {
		for _, ping := range sc.pings {
			log.Info("latency", "scenario", sc.res.Name)
			pr, err := ping(ctx)
			if err != nil {
				sc.res.Errors = append(sc.res.Errors, err.Error())
				continue
			}
			sc.res.Pings = append(sc.res.Pings, pr)
		}
	}
}

func writeResults(o options, res *Results, log *slog.Logger) error {
	if o.only != "" {
		prev, err := loadResults(o.jsonOut)
		switch {
		case err == nil:
			res = mergeResults(prev, res, o.only)
		case !errors.Is(err, fs.ErrNotExist):
			log.Warn("cannot read the previous results; writing this run's alone", "file", o.jsonOut, "err", err)
		}
	}
	var md strings.Builder
	writeMarkdown(&md, res)
	if err := writeReport(o.out, md.String()); err != nil {
		return err
	}
	js, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(o.jsonOut, append(js, '\n'), 0o644); err != nil {
		return err
	}
	log.Info("wrote results", "markdown", o.out, "json", o.jsonOut, "errors", len(res.Errors))
	return nil
}

// render rewrites the Markdown report from a results.json.
func render(from, to string) error {
	res, err := loadResults(from)
	if err != nil {
		return err
	}
	var md strings.Builder
	writeMarkdown(&md, res)
	return writeReport(to, md.String())
}

// writeReport writes the report to path, carrying over from the file there
// the sections other programs write: the simulation's (go run ./bench/sim)
// and issue 15's kept changes (the opt-in A/B tests, TestRelayTCPAB and
// TestUserspaceAB, whose reports are pasted in).
func writeReport(path, md string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, name := range keptSections {
		md = mdsection.Keep(md, string(old), name)
	}
	return os.WriteFile(path, []byte(md), 0o644)
}

// keptSections are the sections of RESULTS.md that writeReport carries
// over, in the order they are appended.
var keptSections = []string{"kept-changes", "simulation"}

func loadResults(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &res, nil
}

// mergeResults combines a run of one part (-only) with the results of an
// earlier run. The bridge, VPN and flood parts carry their own date and
// settings, so `-only bridge`, `-only vpn` and `-only flood` replace just
// that part and keep everything else, and the other parts keep an earlier
// bridge, VPN and flood part; they still replace the rest, which
// describes one run.
func mergeResults(prev, cur *Results, only string) *Results {
	switch only {
	case "bridge":
		out := *prev
		out.Bridge = cur.Bridge
		return &out
	case "vpn":
		out := *prev
		out.VPN = cur.VPN
		return &out
	case "flood":
		out := *prev
		out.Flood = cur.Flood
		return &out
	case "l2":
		out := *prev
		out.L2 = cur.L2
		return &out
	case "compare":
		out := *prev
		out.Compare = cur.Compare
		return &out
	}
	if cur.Bridge == nil {
		cur.Bridge = prev.Bridge
	}
	if cur.VPN == nil {
		cur.VPN = prev.VPN
	}
	if cur.Flood == nil {
		cur.Flood = prev.Flood
	}
	if cur.L2 == nil {
		cur.L2 = prev.L2
	}
	if cur.Compare == nil {
		cur.Compare = prev.Compare
	}
	return cur
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// moduleRoot is the directory of tomoe's go.mod, found from the current
// directory.
func moduleRoot(ctx context.Context) (string, error) {
	gomod, err := goOutput(ctx, "", "env", "GOMOD")
	if err != nil {
		return "", err
	}
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run from inside the tomoe module (go run ./bench)")
	}
	root := filepath.Dir(gomod)
	if mod, _ := goOutput(ctx, root, "list", "-m"); mod != "github.com/tomoe-net/tomoe" {
		return "", fmt.Errorf("%s is module %q, not github.com/tomoe-net/tomoe", root, mod)
	}
	return root, nil
}

// goOutput runs the go command in dir and returns its trimmed stdout.
func goOutput(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, ee.Stderr)
		}
		return "", fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}

func build(ctx context.Context, root, out, pkg string) error {
	if _, err := run(ctx, "go", "-C", root, "build", "-o", out, pkg); err != nil {
		return fmt.Errorf("build %s: %w", pkg, err)
	}
	return nil
}

// installWireGuardGo installs wireguard-go at version into work/gobin,
// outside any module, and returns the binary's path.
func installWireGuardGo(ctx context.Context, work, version string) (string, error) {
	gobin := filepath.Join(work, "gobin")
	cmd := exec.CommandContext(ctx, "go", "install", "golang.zx2c4.com/wireguard@"+version)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install golang.zx2c4.com/wireguard@%s: %w\n%s", version, err, out)
	}
	return filepath.Join(gobin, "wireguard"), nil
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

// machineInfo reads the CPU, kernel and memory from /proc.
func machineInfo() Machine {
	m := Machine{CPUs: runtime.NumCPU(), LoadavgStart: loadavg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				if f := strings.Fields(v); len(f) > 0 {
					kb, _ := strconv.ParseInt(f[0], 10, 64)
					m.MemTotalMB = kb / 1024
				}
			}
		}
	}
	return m
}

func versions(ctx context.Context, root, wgVersion string) Versions {
	v := Versions{WireGuardGo: wgVersion}
	v.Go, _ = goOutput(ctx, root, "env", "GOVERSION")
	if out, err := run(ctx, "iperf3", "--version"); err == nil {
		v.Iperf3, _, _ = strings.Cut(strings.TrimSpace(out), "\n")
	}
	if out, err := run(ctx, "wg", "--version"); err == nil {
		v.WireGuardTools, _, _ = strings.Cut(strings.TrimSpace(out), "\n")
	}
	v.Tomoe = "unknown (no git)"
	if out, err := run(ctx, "git", "-C", root, "rev-parse", "--short=12", "HEAD"); err == nil {
		v.Tomoe = "commit " + strings.TrimSpace(out)
		if st, err := run(ctx, "git", "-C", root, "status", "--porcelain"); err == nil && strings.TrimSpace(st) != "" {
			n := len(strings.Split(strings.TrimSpace(st), "\n"))
			v.Tomoe += fmt.Sprintf(" + %d changed or untracked paths (built from the working tree)", n)
		}
	}
	return v
}
