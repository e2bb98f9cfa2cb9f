package main

// This file writes the "Compared" section of RESULTS.md (compare.go's
// part). Targets are issue 15's goals, printed beside the figures.

import (
	"fmt"
	"strings"
)

// Issue 15's goals, as ratios.
const (
	goalDirectThroughput        = 1.5 // tomoe kernel ≥ 1.5× wireguard-go direct
	goalDirectThroughputStretch = 2.0
	goalDirectCPU               = 0.7 // CPU-s/GB ≤ 0.7× wireguard-go's
	goalDirectCPUStretch        = 0.5
	goalPingP50                 = 1.0 // ping p50 no worse
	goalRelayUDP                = 1.0 // relay over UDP ≥ 1.0× wireguard-go direct
	goalRelayTCP                = 0.7
	goalUserspace               = 0.8 // userspace ≥ 0.8× kernel mode
)

// compareTargets are the targets printed beside each scenario's ratio to
// wireguard-go direct.
var compareTargets = map[string]string{
	"tomoe-kernel-default": fmt.Sprintf("≥ %.1f× (stretch %.0f×)", goalDirectThroughput, goalDirectThroughputStretch),
	"tomoe-kernel-tuned":   fmt.Sprintf("≥ %.1f× (stretch %.0f×)", goalDirectThroughput, goalDirectThroughputStretch),
	"tomoe-relay-udp":      fmt.Sprintf("≥ %.1f×", goalRelayUDP),
	"tomoe-relay-tcp":      fmt.Sprintf("≥ %.1f×", goalRelayTCP),
}

// medianBPS is the scenario's median throughput with n streams; 0 if
// not measured.
func medianBPS(s *ScenarioResult, n int) float64 {
	t := s.throughput(n)
	if t == nil || len(t.Runs) == 0 {
		return 0
	}
	return t.MedianBitsPerSecond
}

// medianCPU is the scenario's median daemon CPU-s/GB with n streams; 0
// if not measured.
func medianCPU(s *ScenarioResult, n int) float64 {
	t := s.throughput(n)
	if t == nil || len(t.Runs) == 0 || t.MedianDaemonCPUPerGB == nil {
		return 0
	}
	return *t.MedianDaemonCPUPerGB
}

// pingOf is the scenario's first ping measurement, or nil.
func pingOf(s *ScenarioResult) *PingResult {
	if s == nil || len(s.Pings) == 0 {
		return nil
	}
	return &s.Pings[0]
}

// ratioPair is "a / b" of the 1- and 4-stream ratios of f(s) to f(ref).
func ratioPair(c *CompareResult, s, ref *ScenarioResult, f func(*ScenarioResult, int) float64) string {
	var parts []string
	for _, n := range c.Streams {
		parts = append(parts, ratio(f(s, n), f(ref, n)))
	}
	return strings.Join(parts, " / ")
}

func writeCompare(p func(string, ...any), r *Results) {
	p("## Compared: tomoe, wireguard-go, yggdrasil and nebula (issue 15)\n\n")
	c := r.Compare
	if c == nil {
		p("Not measured in this run (`go run ./bench -only compare` measures just this part).\n\n")
		return
	}
	kind := fmt.Sprintf("%d repeats of %g s per figure", c.Repeats, c.RunSeconds)
	if c.Quick {
		kind = fmt.Sprintf("**quick smoke run** (%d repeat of %g s): not for comparisons", c.Repeats, c.RunSeconds)
	}
	tools := fmt.Sprintf("yggdrasil %s, nebula %s (Debian packages), %s", c.Others["yggdrasil"], c.Others["nebula"], c.Versions.Iperf3)
	writeMeasured(p, r, c.PartRun, kind, c.Machine, c.Versions, tools, c.Errors)
	for _, s := range c.Scenarios {
		for _, e := range s.Errors {
			p("- %s: %s\n", s.Name, oneLine(e))
		}
	}
	p("Every scenario runs on the same topology, three namespaces in a row A — M — B joined by veth pairs (MTU 1500) with M routing between them, and all at the same overlay MTU, %d, except tomoe with its defaults (%d, what a user gets without setting `tun.mtu`). TCP goes from A to B. All scenarios are set up at once and their runs interleaved; see the method below.\n\n", mtu, c.DefaultMTU)
	wg := c.scenario("wg-direct")

	p("### Throughput (Gbit/s, iperf3 receiver side, median of %d)\n\n", c.Repeats)
	p("| Scenario | overlay MTU | 1 stream | 4 streams | × wireguard-go direct (1 / 4) | target |\n|---|---:|---:|---:|---|---|\n")
	for _, s := range c.Scenarios {
		cells := []string{"–", "–"}
		for i, n := range c.Streams {
			if b := medianBPS(s, n); b > 0 {
				cells[i] = gbit(b)
			}
		}
		mtuCell := "1500 (underlay)"
		if m := c.MTUs[s.Key]; m > 0 {
			mtuCell = fmt.Sprint(m)
		}
		p("| %s | %s | %s | %s | %s | %s |\n", s.Name, mtuCell, cells[0], cells[1], ratioPair(c, s, wg, medianBPS), compareTargets[s.Key])
	}
	p("\n")

	p("### CPU seconds per GB received (median of %d)\n\n", c.Repeats)
	p("Daemons: utime+stime of the scenario's processes (both ends; for the hub and the relays also the process in M; for tomoe userspace the usbench processes, which also run the TCP source and sink) per 10⁹ bytes received. Whole machine: busy time of all CPUs over the same interval (iperf3, the kernel's TCP and forwarding, and anything else running). Target for tomoe kernel mode: ≤ %.1f× wireguard-go direct (stretch %.1f×).\n\n", goalDirectCPU, goalDirectCPUStretch)
	p("| Scenario | daemons, 1 stream | daemons, 4 streams | × wireguard-go direct (1 / 4) | whole machine, 1 stream | whole machine, 4 streams |\n|---|---:|---:|---|---:|---:|\n")
	for _, s := range c.Scenarios {
		d, mc := []string{"n/a", "n/a"}, []string{"–", "–"}
		for i, n := range c.Streams {
			t := s.throughput(n)
			if t == nil || len(t.Runs) == 0 {
				continue
			}
			mc[i] = fmt.Sprintf("%.2f", t.MedianMachineCPUPerGB)
			if t.MedianDaemonCPUPerGB != nil {
				d[i] = fmt.Sprintf("%.2f", *t.MedianDaemonCPUPerGB)
			}
		}
		p("| %s | %s | %s | %s | %s | %s |\n", s.Name, d[0], d[1], ratioPair(c, s, wg, medianCPU), mc[0], mc[1])
	}
	p("\n")

	p("### Latency (round-trip time, ms; %d pings %g ms apart, idle, after the throughput runs)\n\n", c.PingCount, c.PingIntervalMs)
	p("| Scenario | tool | p50 | p99 | max | replies | p50 × wireguard-go direct |\n|---|---|---:|---:|---:|---|---|\n")
	wgPing := pingOf(wg)
	for _, s := range c.Scenarios {
		pr := pingOf(s)
		if pr == nil {
			p("| %s | – | – | – | – | – | – |\n", s.Name)
			continue
		}
		x := "–"
		if wgPing != nil {
			x = ratio(percentile(pr.RTTsMs, 50), percentile(wgPing.RTTsMs, 50))
		}
		p("| %s | `%s` | %.3f | %.3f | %.3f | %d/%d | %s |\n", s.Name, pr.Tool, percentile(pr.RTTsMs, 50), percentile(pr.RTTsMs, 99), pr.MaxMs, pr.Received, pr.Sent, x)
	}
	p("\nThe system `ping` runs in namespace A; tomoe userspace has no TUN, so its node sends the echo itself (`tomoe ping`, timed by the node). p50 and p99 are nearest-rank percentiles.\n\n")

	writeCompareGoals(p, c)
	writeCompareProfiles(p, c)
	writeCompareRuns(p, c)
	writeCompareMethod(p, c)
}

// writeCompareGoals states each of issue 15's goals with its figure.
func writeCompareGoals(p func(string, ...any), c *CompareResult) {
	wg := c.scenario("wg-direct")
	p("### Issue 15's goals in this run\n\n")
	p("Reported, not asserted.\n\n| Goal | this run (1 / 4 streams) | target |\n|---|---|---|\n")
	for _, k := range []string{"tomoe-kernel-default", "tomoe-kernel-tuned"} {
		s := c.scenario(k)
		if s == nil {
			continue
		}
		p("| %s: throughput × wireguard-go direct | %s | ≥ %.1f× (stretch %.0f×) |\n", s.Name, ratioPair(c, s, wg, medianBPS), goalDirectThroughput, goalDirectThroughputStretch)
		p("| %s: daemon CPU-s/GB × wireguard-go direct | %s | ≤ %.1f× (stretch %.1f×) |\n", s.Name, ratioPair(c, s, wg, medianCPU), goalDirectCPU, goalDirectCPUStretch)
		x := "–"
		if a, b := pingOf(s), pingOf(wg); a != nil && b != nil {
			x = ratio(percentile(a.RTTsMs, 50), percentile(b.RTTsMs, 50))
		}
		p("| %s: ping p50 × wireguard-go direct | %s | ≤ %.1f× |\n", s.Name, x, goalPingP50)
	}
	for _, g := range []struct {
		key  string
		goal float64
	}{{"tomoe-relay-udp", goalRelayUDP}, {"tomoe-relay-tcp", goalRelayTCP}} {
		if s := c.scenario(g.key); s != nil {
			p("| %s (through a bridge): throughput × wireguard-go direct | %s | ≥ %.1f× |\n", s.Name, ratioPair(c, s, wg, medianBPS), g.goal)
		}
	}
	if s, k := c.scenario("tomoe-userspace"), c.scenario("tomoe-kernel-tuned"); s != nil && k != nil {
		p("| tomoe userspace (its own stack) × tomoe kernel, tuned (same config) | %s | ≥ %.1f× |\n", ratioPair(c, s, k, medianBPS), goalUserspace)
	}
	p("\nSOCKS5 and the port forward against kernel mode (goal ≥ 0.9×) are in the VPN part's userspace access table.\n\n")
}

// profileRows is how many rows of `pprof -top` the section shows.
const profileRows = 12

func writeCompareProfiles(p func(string, ...any), c *CompareResult) {
	if len(c.Profiles) == 0 {
		return
	}
	p("### Where the time goes: tomoe kernel (defaults) and wireguard-go\n\n")
	p("An extra iperf3 run per scenario with a CPU profile of both daemons in the middle of it. wireguard-go is profiled as `bench/wgprof`: the same library (tomoe's pinned version, built in tomoe's module), started and configured like `wireguard-go -f` and serving `/debug/pprof` on a unix socket; the plain wireguard-go command has no profiling hook. With `-profiles DIR` the profiles are kept there as `compare-*.pprof` beside the `tomoe` and `wgprof` binaries.\n\n")
	for _, cp := range c.Profiles {
		p("#### %s\n\n", cp.Name)
		if run := cp.Run; run != nil {
			cpu := "–"
			if v := run.DaemonCPUPerGB(); v != nil {
				cpu = fmt.Sprintf("%.2f", *v)
			}
			p("%.0f s run, %s: %s Gbit/s, %s daemon CPU-s/GB; %d s profiles.\n\n", run.Seconds, streamsText(cp.Streams), gbit(run.BitsPerSecond), cpu, cp.Seconds)
		}
		writeComponents(p, cp.Sides)
		p("\n%s\n\n", closingNote(cp.ProfileResult))
		for _, s := range cp.Sides {
			p("%s, `go tool pprof -top` (first %d rows; %s):\n\n```\n%s```\n\n", s.Role, profileRows, s.Header, firstRows(s.TopFlat, profileRows+1))
		}
	}
}

// firstRows is the first n lines of s.
func firstRows(s string, n int) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		if n == 0 {
			break
		}
		b.WriteString(line)
		n--
	}
	return b.String()
}

func writeCompareRuns(p func(string, ...any), c *CompareResult) {
	p("<details><summary>Every run (Gbit/s; daemon CPU-s/GB)</summary>\n\n")
	p("| Scenario | streams | Gbit/s | daemon CPU-s/GB | load average before |\n|---|---:|---|---|---|\n")
	for _, s := range c.Scenarios {
		for _, n := range c.Streams {
			t := s.throughput(n)
			if t == nil {
				continue
			}
			var loads []string
			for _, r := range t.Runs {
				loads = append(loads, r.Loadavg)
			}
			p("| %s | %d | %s | %s | %s |\n", s.Name, n, runsList(t, func(x Run) string { return gbit(x.BitsPerSecond) }),
				runsList(t, func(x Run) string { return cpuCell(x.DaemonCPUPerGB()) }), strings.Join(loads, "; "))
		}
	}
	p("\n</details>\n\n")
}

func writeCompareMethod(p func(string, ...any), c *CompareResult) {
	p("### Method (compare)\n\n")
	p("- Topology: four lines of three namespaces, `tbench-cw-*`, `-ck-*`, `-cu-*` and `-ct-*`, each A (%s/24) — M (%s/24, %s/24) — B (%s/24) on two veth pairs with MTU 1500; A and B route through M, which forwards. Every line has its own `iperf3 -s` in B.\n", lineA, lineMA, lineMB, lineB)
	p("- `cw` carries raw (iperf3 to B's underlay address), plain wireguard-go direct (`wgda`/`wgdb`, fd97::/64) and through a hub in M (`wgha` — `wghm` — `wghb`, fd98::/64; M's kernel routes what the hub decrypted back into it), tomoe kernel with its defaults, tomoe userspace, yggdrasil and nebula side by side.\n")
	p("- tomoe kernel, defaults: `tomoe up` in A and B with a config holding only what the benchmark cannot do without: `key_file`, `[admin] socket`, `[policy] state_file` and `[[policy.allow]] from = \"*\"`, and the other node in `[[peers]]`; every other key (MTU %d, TUN name, UDP port 4610, log level, ...) is tomoe's default.\n", c.DefaultMTU)
	p("- tomoe kernel, tuned: the same config with this TOML merged over it (`tunedConfig` in bench/compare.go, the one place for tuned keys), on line `ck` (two kernel-mode nodes in one namespace would share tomoe's ip rules):\n\n```toml\n%s\n```\n\n", c.TunedConfig)
	p("- tomoe userspace: `bench/usbench` in A (source) and B (sink), the userspace-mode config with the same tuned TOML, UDP 4611; throughput = bytes the sink counted / elapsed time (iperf3 cannot use a userspace stack).\n")
	p("- tomoe relay: a userspace-mode bridge in M (`[bridge] enable = true`), kernel-mode nodes in A and B that know only the bridge (the bridge part's set-up, tun.mtu %d). On `cu` M's nftables forward chain drops UDP so the path stays \"relay\" over UDP; on `ct` M also drops A's UDP to itself, so A relays over TCP. Both paths are checked after the runs.\n", mtu)
	p("- yggdrasil: `yggdrasil -useconffile` with a config from `yggdrasil -genconf -json` (fresh keys), `IfName` ygg0, `IfMTU` %d, no multicast discovery, no admin socket; B lists `tcp://%s:%d` in `Listen`, A has it in `Peers`; iperf3 to B's 200::/7 address.\n", mtu, lineB, yggPort)
	p("- nebula: a CA and two host certificates from `nebula-cert ca` and `nebula-cert sign` (%s/24, %s/24), no lighthouse, each host with the other's underlay address in `static_host_map`, UDP %d, `tun.mtu` %d, firewall allowing everything; iperf3 to %s over IPv4 (the other overlays carry IPv6, whose header is 20 bytes longer).\n", nebulaA, nebulaB, nebulaPort, mtu, nebulaB)
	p("- Runs: one unrecorded %d s run of each scenario, then %d repeats of `iperf3 -t %g -P 1` and `-P 4` for every scenario in turn (reverse order on even repeats); medians. CPU from /proc/PID/stat of the scenario's processes and /proc/stat. Latency: `ping -c %d -i %g` from A after the runs (`tomoe ping` for userspace).\n", warmUpSeconds, c.Repeats, c.RunSeconds, c.PingCount, c.PingIntervalMs/1000)
	p("- The machine has %d CPUs shared by senders, receivers, daemons and M's forwarding, and other work on the host shows in the load average: compare figures within this section.\n\n", c.Machine.CPUs)
}
