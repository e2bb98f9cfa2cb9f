package main

// This file writes the "Bridges" section of RESULTS.md.

import (
	"fmt"
	"strings"
)

const (
	targetRelayRatio     = 1.0   // tomoe relay >= 1.0x wireguard-go direct
	targetColdLookupMs   = 50.0  // median first-packet round trip
	targetDirectMs       = 2000  // median first packet -> path direct
	targetBridgeNodeKB   = 10    // RSS per registered idle node
	targetLookupsPerSec  = 10000 // lookups answered per second
	issueHubBaselineGbit = 0.92  // wireguard-go hub on a 2-core VM, from the issue
)

// cells formats f for each stream count, joined by " / ".
func cells(streams []int, f func(n int) string) string {
	var parts []string
	for _, n := range streams {
		parts = append(parts, f(n))
	}
	return strings.Join(parts, " / ")
}

func writeBridge(p func(string, ...any), r *Results) {
	p("## Bridges\n\n")
	br := r.Bridge
	if br == nil {
		p("Not measured in this run (`go run ./bench -only bridge` measures just this part).\n\n")
		return
	}
	kind := fmt.Sprintf("%d repeats of %g s per figure", br.Repeats, br.RunSeconds)
	if br.Quick {
		kind = fmt.Sprintf("**quick smoke run** (%d repeat of %g s): not for comparisons", br.Repeats, br.RunSeconds)
	}
	p("Measured on %s (%s; took %.0f s; load average %s at start, %s at end; tomoe %s).", br.Date, kind, br.DurationSeconds, br.LoadavgStart, br.LoadavgEnd, br.Tomoe)
	if br.Date != r.Date && len(r.Scenarios) > 0 {
		p(" The data-plane and memory sections come from the run of %s.", r.Date)
	}
	p("\n\n")
	for _, e := range br.Errors {
		p("- Error: %s\n", oneLine(e))
	}
	if len(br.Errors) > 0 {
		p("\n")
	}
	writeBridgeThroughput(p, r, br)
	writeColdLookup(p, br)
	writeCapacity(p, br.Capacity)
	writeBridgeMethod(p, br)
}

func writeBridgeThroughput(p func(string, ...any), r *Results, br *BridgeResult) {
	streams := br.Streams
	if len(streams) == 0 {
		streams = []int{1}
	}
	byKey := func(k string) *ScenarioResult {
		for _, s := range br.Scenarios {
			if s.Key == k {
				return s
			}
		}
		return nil
	}
	wgDirect, wgHub := byKey("wg-direct"), byKey("wg-hub")
	sNames := cells(streams, streamsText)
	p("### Throughput through a middle namespace (Gbit/s, receiver side, median of %d; %s)\n\n", br.Repeats, sNames)
	p("Namespace A sends to namespace B through M, which routes between them and runs the bridge or the hub. ")
	p("Target: a tomoe bridge relay ≥ %.1f× wireguard-go direct (same topology, same run). Baseline on a 2-core VM (from the issue): wireguard-go hub ≈ %.2f Gbit/s.", targetRelayRatio, issueHubBaselineGbit)
	if wg := r.scenario("wireguard-go").throughput(1); wg != nil && wg.MedianBitsPerSecond > 0 {
		p(" For reference, wireguard-go over the single veth of the data-plane section: %s Gbit/s (1 stream, run of %s).", gbit(wg.MedianBitsPerSecond), r.Date)
	}
	p("\n\n| Scenario | path | %s | × wireguard-go direct | × wireguard-go hub | runs |\n|---|---|---:|---|---|---|\n", sNames)
	for _, s := range br.Scenarios {
		median := func(n int) string {
			if t := s.throughput(n); t != nil && len(t.Runs) > 0 {
				return gbit(t.MedianBitsPerSecond)
			}
			return "–"
		}
		vs := func(ref *ScenarioResult) string {
			return cells(streams, func(n int) string {
				t, w := s.throughput(n), ref.throughput(n)
				if t == nil || w == nil {
					return "–"
				}
				return ratio(t.MedianBitsPerSecond, w.MedianBitsPerSecond)
			})
		}
		runs := cells(streams, func(n int) string {
			return runsList(s.throughput(n), func(x Run) string { return gbit(x.BitsPerSecond) })
		})
		p("| %s | %s | %s | %s | %s | %s |\n", s.Name, pathText(s), cells(streams, median), vs(wgDirect), vs(wgHub), runs)
	}
	p("\n")
	for _, s := range br.Scenarios {
		for _, e := range s.Errors {
			p("- %s: %s\n", s.Name, oneLine(e))
		}
	}

	p("\nCPU seconds per GB received (median of %d; %s). *Daemons* are the two ends' processes plus the one in the middle (bridge or hub) where there is one; *middle* is that process alone; *whole machine* is all CPUs' busy time.\n\n", br.Repeats, sNames)
	p("| Scenario | daemons | × wireguard-go direct | middle | whole machine |\n|---|---:|---|---:|---:|\n")
	for _, s := range br.Scenarios {
		f := func(get func(*Throughput) *float64) string {
			return cells(streams, func(n int) string {
				if t := s.throughput(n); t != nil && get(t) != nil {
					return fmt.Sprintf("%.2f", *get(t))
				}
				return "–"
			})
		}
		daemon := func(t *Throughput) *float64 { return t.MedianDaemonCPUPerGB }
		middle := func(t *Throughput) *float64 { return t.MedianMiddleCPUPerGB }
		machine := func(t *Throughput) *float64 {
			if len(t.Runs) == 0 {
				return nil
			}
			return &t.MedianMachineCPUPerGB
		}
		vs := cells(streams, func(n int) string {
			t, w := s.throughput(n), wgDirect.throughput(n)
			if t == nil || w == nil || t.MedianDaemonCPUPerGB == nil || w.MedianDaemonCPUPerGB == nil {
				return "–"
			}
			return ratio(*t.MedianDaemonCPUPerGB, *w.MedianDaemonCPUPerGB)
		})
		p("| %s | %s | %s | %s | %s |\n", s.Name, f(daemon), vs, f(middle), f(machine))
	}

	p("\nLatency through the TUN (system `ping -c %d -i 0.05` from A, ms):\n\n", br.PingCount)
	p("| Scenario | median | avg | min | max | replies |\n|---|---:|---:|---:|---:|---|\n")
	for _, s := range br.Scenarios {
		for _, pr := range s.Pings {
			p("| %s | %.3f | %.3f | %.3f | %.3f | %d/%d |\n", s.Name, pr.MedianMs, pr.AvgMs, pr.MinMs, pr.MaxMs, pr.Received, pr.Sent)
		}
	}
	p("\n")
}

// pathText is a scenario's path column.
func pathText(s *ScenarioResult) string {
	switch {
	case s.Path != "":
		return s.Path
	case s.Key == "wg-direct":
		return "A→B direct (M forwards)"
	case s.Key == "wg-hub":
		return "A→hub→B (decrypted, re-encrypted in M)"
	}
	return "–"
}

func writeColdLookup(p func(string, ...any), br *BridgeResult) {
	p("### Cold lookup: the first packet to an unknown address\n\n")
	d, r := br.Lookup, br.LookupRelay
	if d == nil && r == nil {
		p("Not measured (see the errors above).\n\n")
		return
	}
	repeats := 0
	for _, c := range []*ColdLookupResult{d, r} {
		if c != nil {
			repeats = c.Repeats
		}
	}
	p("Node A is restarted %d times (a fresh process that knows nothing). Once it is registered with the bridge it pings B's overlay address, which it has never heard of: the packet waits while A looks the address up at the bridge, sets up the peer and does the WireGuard handshake. Where nothing is blocked (line `bd`), `peers` is then polled every 50 ms until A's path to B is direct; where M drops forwarded UDP (line `bu`) everything goes through the relay.\n\n", repeats)
	cell := func(c *ColdLookupResult, f func(*ColdLookupResult) string) string {
		if c == nil {
			return "–"
		}
		return f(c)
	}
	p("| Figure | nothing blocked: median | max | relay only: median | max | target |\n|---|---:|---:|---:|---:|---|\n")
	row := func(what, target string, median, maxv func(*ColdLookupResult) float64, format string) {
		f := func(get func(*ColdLookupResult) float64) func(*ColdLookupResult) string {
			return func(c *ColdLookupResult) string { return fmt.Sprintf(format, get(c)) }
		}
		p("| %s | %s | %s | %s | %s | %s |\n", what, cell(d, f(median)), cell(d, f(maxv)), cell(r, f(median)), cell(r, f(maxv)), target)
	}
	row("first ping's round trip, as the node timed it (lookup + peer set-up + handshake + echo)", fmt.Sprintf("≤ %.0f ms median", targetColdLookupMs),
		func(c *ColdLookupResult) float64 { return c.MedianRTTMs }, func(c *ColdLookupResult) float64 { return c.MaxRTTMs }, "%.1f ms")
	row("the same, wall time of the admin API call (`tomoe ping -c 1 -W 2s` without the CLI's start-up)", "",
		func(c *ColdLookupResult) float64 { return c.MedianCallMs }, func(c *ColdLookupResult) float64 { return c.MaxCallMs }, "%.1f ms")
	if d != nil {
		p("| first packet → `peers` shows path \"direct\" | %.0f ms | %.0f ms | | | ≤ %d ms median |\n", d.MedianDirectMs, d.MaxDirectMs, targetDirectMs)
	}
	row("process start → registered with the bridge (polled every 10 ms)", "",
		func(c *ColdLookupResult) float64 { return c.MedianRegister }, func(c *ColdLookupResult) float64 { return maxOf(c.RegisterMs) }, "%.0f ms")
	p("\n")
	list := func(xs []float64, format string) string {
		var parts []string
		for _, x := range xs {
			parts = append(parts, fmt.Sprintf(format, x))
		}
		return strings.Join(parts, ", ")
	}
	if d != nil {
		p("Every repeat, nothing blocked: round trip %s ms; direct after %s ms (0: no reply / not direct within 10 s).", list(d.RTTMs, "%.1f"), list(d.DirectMs, "%.0f"))
	}
	if r != nil {
		p(" Relay only: round trip %s ms.", list(r.RTTMs, "%.1f"))
	}
	p("\n\n")
	var failures []string
	for _, c := range []*ColdLookupResult{d, r} {
		if c != nil {
			failures = append(failures, c.Failures...)
		}
	}
	for _, f := range failures {
		p("- %s\n", oneLine(f))
	}
	if len(failures) > 0 {
		p("\n")
	}
}

func writeCapacity(p func(string, ...any), c *CapacityResult) {
	p("### Bridge capacity: %s simulated registered nodes\n\n", thousands(c.nodes()))
	if c == nil {
		p("Not measured (see the errors above).\n\n")
		return
	}
	p("A userspace-mode bridge (`tomoe up`, the %s keys in `[[bridge.allow]]`) in one namespace, and `bench/bridgesim` in another: one UDP socket per simulated node, each bound to its own address and port, speaking the bridge protocol with `internal/bridge`'s Seal and Open.\n\n", thousands(c.Nodes))
	p("| Figure | value | target |\n|---|---:|---|\n")
	p("| nodes registered: Registered answers / `tomoe bridge nodes --json \\| length` | %s / %s | %s |\n", thousands(c.Registered), thousands(c.Listed), thousands(c.Nodes))
	p("| time to register them all (at most 256 unanswered; %d resends) | %.2f s | |\n", c.RegisterResends, c.RegisterSeconds)
	p("| bridge VmRSS: before registrations → all registered, idle | %.1f MB → %.1f MB | |\n", mb(c.Before.RSSKB), mb(c.After.RSSKB))
	p("| **RSS per registered idle node** | **%.2f KB** | ≤ %d KB |\n", c.RSSPerNodeKB, targetBridgeNodeKB)
	if c.HeapPerNodeKB != 0 {
		p("| Go heap in use per node (after a forced GC) | %.2f KB | |\n", c.HeapPerNodeKB)
	}
	p("| **lookups answered per second** (found, right key; %s outstanding; from all %s nodes in turn) | **%s/s** | ≥ %s/s |\n", thousands(c.Window), thousands(c.Requesters), thousands(int(c.LookupsPerSecond+0.5)), thousands(targetLookupsPerSec))
	p("| lookup round trip, median / 99th percentile | %.2f / %.2f ms | |\n", c.LookupMedianMs, c.LookupP99Ms)
	p("| lookups sent / answered / lost (no answer in 1 s) / wrong, over %.1f s | %s / %s / %s / %s | |\n", c.LookupSeconds, thousands64(c.LookupsSent), thousands64(c.LookupsAnswered), thousands64(c.LookupsLost), thousands64(c.LookupsWrong))
	p("| introductions the looked-up nodes received | %s | |\n", thousands64(c.Introductions))
	perLookup := "–"
	if c.LookupsAnswered > 0 {
		perLookup = fmt.Sprintf("%.1f µs", c.BridgeCPUSeconds/float64(c.LookupsAnswered)*1e6)
	}
	p("| CPU during the lookup load: bridge / simulator / whole machine | %.2f / %.2f / %.2f s | |\n", c.BridgeCPUSeconds, c.SimCPUSeconds, c.MachineCPUSeconds)
	p("| bridge CPU per answered lookup (reply and introduction included) | %s | |\n", perLookup)
	p("| bridge VmRSS after the lookup load | %.1f MB | |\n\n", mb(c.AfterLookups.RSSKB))
	for _, n := range c.Notes {
		p("- %s\n", oneLine(n))
	}
	if len(c.Notes) > 0 {
		p("\n")
	}
}

func (c *CapacityResult) nodes() int {
	if c == nil {
		return 10000
	}
	return c.Nodes
}

func mb(kb int64) float64 { return float64(kb) / 1024 }

// thousands writes n with thin separators: 10,000.
func thousands(n int) string { return thousands64(int64(n)) }

func thousands64(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands64(-n)
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func writeBridgeMethod(p func(string, ...any), br *BridgeResult) {
	p("### Method (bridges)\n\n")
	p("- Topology: three namespaces in a row, A — M — B, joined by two veth pairs (A %s/24 – M %s/24, M %s/24 – B %s/24, MTU 1500); A and B route through M, which forwards. Each tomoe scenario has its own three namespaces (`tbench-bd-*`, `-bu-*`, `-bt-*`), the wireguard-go ones share `tbench-bw-*`; all are set up at once and their runs interleaved as in the data-plane section. Overlay MTU %d everywhere.\n", lineA, lineMA, lineMB, lineB, mtu)
	p("- tomoe: kernel-mode `tomoe up` in A and B with only `[[bridges]]` (no `[[peers]]`) and `from = \"*\"`; the bridge is a userspace-mode `tomoe up` in M with `[bridge] enable = true`, `tcp = \"0.0.0.0:%d\"` and A's and B's keys in `[[bridge.allow]]`. Traffic goes to B's overlay address alone. A joins the bridge at %s:%d and B at %s:%d, M's address on each one's own link: the bridge listens on 0.0.0.0 and its packets leave from the address the route to the node picks (wireguard-go loses a packet's destination address under UDP GRO; see docs/decisions.md). Nodes now accept relay frames from any address the bridge has sent them an authenticated control frame from, so joining both at %s works too; joining each at its own link's address keeps the two set-ups alike.\n", bridgePort, lineMA, bridgePort, lineMB, bridgePort, lineMA)
	p("- *direct*: M blocks nothing; the bridge introduces A and B, whose probes get through, so the path is direct (M only forwards). *relay, UDP*: M's nftables forward chain drops all UDP it would forward, so only traffic to and from the bridge's own address passes and the path stays \"relay\". *relay, TCP*: M's input chain also drops UDP from A, so A's UDP registrations go unanswered and A registers over TCP by itself (about 3 s); A relays over its TCP connection, B over UDP. The path column is what `tomoe peers` on A and on B said after the runs.\n")
	p("- wireguard-go direct: plain wireguard-go (the same binary as in the data-plane section) in A and B, peers of each other at their underlay addresses, fd97::/64; M just forwards the UDP. wireguard-go hub: a third wireguard-go in M with A and B as peers (AllowedIPs fd98::1/128 and fd98::2/128), and A and B each with the hub as their only peer (AllowedIPs fd98::/64); IPv6 forwarding on in M, so a packet from A is decrypted by the hub, routed by M's kernel back into the hub's TUN and encrypted for B.\n")
	p("- Throughput, CPU and latency as in the data-plane section: `iperf3 -t %g -P N` with N = %s, %d repeat(s), medians; daemon CPU from /proc/PID/stat of the ends and the middle process; `ping -n -c %d -i 0.05` from A.\n", br.RunSeconds, strings.ReplaceAll(cells(br.Streams, func(n int) string { return fmt.Sprint(n) }), " / ", " and "), br.Repeats, br.PingCount)
	p("- Cold lookup, after the throughput runs, on lines `bd` and `bu`: node A is stopped (SIGTERM) and started again with the same key; once `status` says registered (polled every 10 ms), one `POST /v1/ping` (what `tomoe ping -c 1 -W 2s` sends) to B's address; the node times the echo from the moment it injects the request, so the lookup, the peer's set-up and the handshake are included. B keeps running and still knows A from before. On `bd`, then `GET /v1/peers` every 50 ms until A's path to B is \"direct\".\n")
	p("- Capacity: `bench/bridgesim` registers every simulated node from its own socket (its own source address: the bridge rate-limits control frames from not-yet-known keys per source address, 20/s with a burst of 5, so 10,000 nodes behind one address would take minutes to register; real nodes come from many addresses), at most 256 unanswered at a time, resending after 1 s. VmRSS is the minimum of 5 reads after 3 s of settling, before the registrations and after; per node = difference / nodes registered. The allow list of the 10,000 keys is loaded in both readings. Then, for %s, it keeps %d lookups outstanding: node i (all nodes in turn, so each sends a few per second, far below the bridge's limit of 100/s per node) asks for the address of another simulated node; a lookup answered with the right key frees its slot for the next, one unanswered for 1 s counts as lost. Each lookup also makes the bridge send an introduction to the looked-up node. Lookups per second = answers during the load / its duration. Bridge and simulator share the machine's CPUs.\n", capacitySeconds(br), lookupWindow)
	p("- The simulated keys are in `[[bridge.allow]]` rather than enrolled with one join token of 10,000 uses: the bridge stores each enrolment by rewriting and fsyncing its whole state file, so each enrolment costs more the more keys are enrolled, and enrolling 10,000 at once would measure that rather than registration (`bridgesim -token` can try it).\n\n")
}

func capacitySeconds(br *BridgeResult) string {
	if br.Capacity != nil && br.Capacity.LookupSeconds > 0 {
		return fmt.Sprintf("%.0f s", br.Capacity.LookupSeconds)
	}
	return "a few seconds"
}
