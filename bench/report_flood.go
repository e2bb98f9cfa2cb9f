package main

// This file writes the "Handshake flood" section of RESULTS.md.

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

const (
	targetFloodThroughput = 0.8  // the peer's throughput under flood >= 0.8x without
	targetFloodPing       = 1.25 // its ping RTT under flood <= 1.25x without (0.8x the speed)
)

// floodNames say what each kind of flood is.
var floodNames = map[string]string{
	"none":         "no flood",
	"control":      "control: (b) to a closed port",
	"one64":        "(a) one /64",
	"many64-paced": "(b) many /64s, paced",
	"many64":       "(b) many /64s",
	"smart":        "(c) many /64s, answers cookies",
}

func floodName(k string) string {
	if n := floodNames[k]; n != "" {
		return n
	}
	return k
}

func writeFlood(p func(string, ...any), r *Results) {
	p("## Handshake flood\n\n")
	f := r.Flood
	if f == nil {
		p("Not measured in this run (`go run ./bench -only flood` measures just this part).\n\n")
		return
	}
	kind := fmt.Sprintf("%d repeats of %g s of iperf3 and %d pings per figure", f.Repeats, f.RunSeconds, f.PingCount)
	if f.Quick {
		kind = fmt.Sprintf("**quick smoke run** (%d repeat of %g s, %d pings): not for comparisons", f.Repeats, f.RunSeconds, f.PingCount)
	}
	writeMeasured(p, r, f.PartRun, kind, f.Machine, f.Versions, f.Versions.Iperf3, f.Errors)
	for _, c := range f.Cases {
		for _, e := range c.Errors {
			p("- %s, %s: %s\n", c.Victim, floodName(c.Flood), oneLine(e))
		}
	}
	p("An attacker namespace sends handshake initiations with a valid mac1 for the victim's key, from throwaway keys, as fast as one core allows (`bench/hsflood`), while the victim's allowed peer runs iperf3 (1 stream, peer → victim) and then ping through the overlay. Both victims, tomoe and plain wireguard-go, run side by side in the same namespaces and are measured in turn, every flood in every repeat. The floods:\n\n")
	p("| Flood | sources | sent to |\n|---|---|---|\n")
	p("| %s | – | – |\n", floodName("none"))
	p("| %s | one address in each of %s /64s of %s | UDP port %d of the victim's namespace, where nothing listens: what any victim pays for the packets (the attacker's core, the kernel's receive path) before a daemon sees one |\n", floodName("control"), thousands64(int64(f.Sources)), floodMany64, floodClosedPort)
	p("| %s | %s addresses of %s | the victim's WireGuard port |\n", floodName("one64"), thousands64(int64(f.Sources)), floodOne64)
	p("| %s | the same as (b), paced to %s packets/s: about what a 100 Mbit/s link carries, to see whether the victim holds below its receive path's capacity | the victim's WireGuard port |\n", floodName("many64-paced"), thousands64(int64(f.PacedRate)))
	p("| %s | one address in each of %s /64s of %s | the victim's WireGuard port |\n", floodName("many64"), thousands64(int64(f.Sources)), floodMany64)
	p("| %s | one address in each of %s /64s of %s; the attacker owns them, opens every cookie reply and from then on sends that source's initiations with a valid mac2: the strongest case the cookie mechanism leaves | the victim's WireGuard port |\n\n", floodName("smart"), thousands64(int64(f.SmartSources)), floodMany64)
	writeFloodPeer(p, f)
	writeFloodCost(p, f)
	writeFloodProfile(p, f)
	writeFloodMethod(p, f)
}

// victims are the victims in the order of the cases.
func (f *FloodResult) victims() []string {
	var out []string
	for _, c := range f.Cases {
		if len(out) == 0 || out[len(out)-1] != c.Victim {
			out = append(out, c.Victim)
		}
	}
	return out
}

func writeFloodPeer(p func(string, ...any), f *FloodResult) {
	p("### What the allowed peer sees\n\n")
	p("Throughput: iperf3 receiver side, median of %d; *× no flood* against the same victim without a flood (target ≥ %.1f×), *× control* against the control flood (the victim's own share of the loss, with the machine's share taken out). Ping: `ping -i %g`, %d per repeat, percentiles over all repeats pooled; *×* is RTT under flood / RTT without (target ≤ %.2f×, i.e. ≥ %.1f× the speed).\n\n",
		f.Repeats, targetFloodThroughput, f.PingInterval, f.PingCount, targetFloodPing, 1/targetFloodPing)
	p("| Victim | Flood | Gbit/s | × no flood | × control | ping p50 ms | p99 ms | × no flood (p50 / p99) | replies | runs, Gbit/s |\n|---|---|---:|---|---|---:|---:|---|---|---|\n")
	var verdicts []string
	for _, v := range f.victims() {
		none, control := f.find(v, "none"), f.find(v, "control")
		base, ctl := none.medianBitsPerSecond(), control.medianBitsPerSecond()
		baseRTT, _, _ := none.pings()
		b50, b99 := percentile(baseRTT, 50), percentile(baseRTT, 99)
		for _, k := range floodKinds {
			c := f.find(v, k.key)
			if c == nil {
				continue
			}
			bps := c.medianBitsPerSecond()
			rtts, sent, received := c.pings()
			cell, ctlCell := "–", "–"
			if len(c.Runs) > 0 {
				cell = gbit(bps)
			}
			if k.mode != "" && !k.closed {
				ctlCell = ratio(bps, ctl)
			}
			p50, p99, pingX := "–", "–", "–"
			if len(rtts) > 0 {
				p50, p99 = fmt.Sprintf("%.3f", percentile(rtts, 50)), fmt.Sprintf("%.3f", percentile(rtts, 99))
				pingX = ratio(percentile(rtts, 50), b50) + " / " + ratio(percentile(rtts, 99), b99)
			}
			runs := make([]string, 0, len(c.Runs))
			for _, r := range c.Runs {
				runs = append(runs, gbit(r.Throughput.BitsPerSecond))
			}
			p("| %s | %s | %s | %s | %s | %s | %s | %s | %d/%d | %s |\n", v, floodName(k.key), cell, ratio(bps, base), ctlCell, p50, p99, pingX, received, sent, strings.Join(runs, ", "))
			if k.mode != "" && !k.closed && base > 0 && bps > 0 && len(rtts) > 0 && b50 > 0 {
				verdicts = append(verdicts, fmt.Sprintf("%s under %s: throughput %.2f× (%s), ping p50 %.2f× and p99 %.2f× (%s)", v, floodName(k.key),
					bps/base, meets(bps/base >= targetFloodThroughput), percentile(rtts, 50)/b50, percentile(rtts, 99)/b99,
					meets(percentile(rtts, 50)/b50 <= targetFloodPing && percentile(rtts, 99)/b99 <= targetFloodPing)))
			}
		}
	}
	p("\n")
	if len(verdicts) > 0 {
		p("Against the targets (throughput ≥ %.1f×, ping ≤ %.2f× RTT):\n\n", targetFloodThroughput, targetFloodPing)
		for _, s := range verdicts {
			p("- %s\n", s)
		}
		p("\n")
	}
}

func meets(ok bool) string {
	if ok {
		return "meets the target"
	}
	return "does not meet the target"
}

// perSecond formats a median rate; "–" where the window had none.
func perSecond(v float64) string {
	if v == 0 {
		return "0"
	}
	if v < 10 {
		return fmt.Sprintf("%.1f", v)
	}
	return thousands64(int64(math.Round(v)))
}

func writeFloodCost(p func(string, ...any), f *FloodResult) {
	p("### What the flood costs\n\n")
	p("Rates over the iperf3 run (median of %d), except *victim CPU, flood alone*, which is over the ping that follows (the peer then sends ~%.0f packets/s, so the victim's CPU is the flood's). *Attacker pkt/s*: initiations its kernel took (sendmmsg's count). *Dropped at the victim's socket*: `Udp6RcvbufErrors` in its namespace, which takes the peer's tunnel packets too (they share the socket). *Replies*: datagrams reaching the attacker's namespace (cookie replies). CPU in CPU-seconds per second: 1.00 is one core busy.\n\n",
		f.Repeats, 1/f.PingInterval)
	p("| Victim | Flood | attacker pkt/s | dropped at the victim's socket /s | victim CPU, with iperf3 | victim CPU, flood alone | X25519/s | cookies/s | replies to the attacker /s | attacker CPU | machine CPU |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, v := range f.victims() {
		for _, k := range floodKinds {
			c := f.find(v, k.key)
			if c == nil || len(c.Runs) == 0 {
				continue
			}
			d := func(x func(FloodWindow) float64) float64 {
				return c.medianOf(func(r FloodRun) float64 { return x(r.During) })
			}
			cpu := func(w FloodWindow, who string) float64 { return w.rate(w.CPUSeconds[who]) }
			x25519, cookies := "n/a", "n/a"
			if v == "tomoe" {
				x25519 = perSecond(d(func(w FloodWindow) float64 { return w.rate(w.Counters["x25519"]) }))
				cookies = perSecond(d(func(w FloodWindow) float64 { return w.rate(w.Counters["cookies_sent"]) }))
			}
			alone := c.medianOf(func(r FloodRun) float64 { return cpu(r.PingWindow, "victim") })
			p("| %s | %s | %s | %s | %.2f | %.2f | %s | %s | %s | %.2f | %.2f |\n", v, floodName(k.key),
				perSecond(d(func(w FloodWindow) float64 { return w.rate(w.AttackerPackets) })),
				perSecond(d(func(w FloodWindow) float64 { return w.rate(w.VictimUDP["RcvbufErrors"]) })),
				d(func(w FloodWindow) float64 { return cpu(w, "victim") }), alone, x25519, cookies,
				perSecond(d(func(w FloodWindow) float64 { return w.rate(w.AttackerUDP["InDatagrams"] + w.AttackerUDP["InErrors"]) })),
				d(func(w FloodWindow) float64 { return cpu(w, "attacker") }),
				d(func(w FloodWindow) float64 { return w.rate(w.MachineCPUSeconds) }))
		}
	}
	p("\nX25519 and cookie counts come from the tomoe victim's metrics (`tomoe_handshake_x25519_total`, `tomoe_handshake_cookies_sent_total`); wireguard-go counts neither (it spends one X25519 on an initiation from an unknown key that passes its checks: the static-static secret is precomputed for configured peers only, and an unknown key ends the handshake after the first).\n\n")
	writeFloodOutcomes(p, f)
}

// initiationResults are tomoe's tomoe_handshake_initiations_total labels.
var initiationResults = []string{"invalid", "rate_limited", "queue_full", "replayed", "denied", "admitted"}

func writeFloodOutcomes(p func(string, ...any), f *FloodResult) {
	c0 := f.find("tomoe", "none")
	if c0 == nil {
		return
	}
	p("What became of the initiations at the tomoe victim (per second, over the iperf3 run, median of %d; `tomoe_handshake_initiations_total` by result). *invalid*: mac1 wrong or did not open; *rate_limited*: over a budget, or answered with a cookie reply while under load; *queue_full*: the worker's queue was full; *denied*: opened (2 X25519) and refused by the policy.", f.Repeats)
	p(" *Screened* is their sum: what the Bind's receive goroutine got through. The smart attacker's own view: how many of its %s sources held a cookie at the end of the run, and its packets/s that carried a mac2.\n\n", thousands64(int64(f.SmartSources)))
	p("| Flood | screened (all results) |")
	for _, r := range initiationResults {
		p(" %s |", r)
	}
	p(" sources with a cookie | mac2 pkt/s |\n|---|---:|")
	for range initiationResults {
		p("---:|")
	}
	p("---:|---:|\n")
	for _, k := range floodKinds {
		c := f.find("tomoe", k.key)
		if c == nil || len(c.Runs) == 0 || k.mode == "" || k.closed {
			continue
		}
		p("| %s | %s |", floodName(k.key), perSecond(c.medianOf(func(x FloodRun) float64 {
			var sum float64
			for _, r := range initiationResults {
				sum += x.During.Counters["initiations_"+r]
			}
			return x.During.rate(sum)
		})))
		for _, r := range initiationResults {
			p(" %s |", perSecond(c.medianOf(func(x FloodRun) float64 { return x.During.rate(x.During.Counters["initiations_"+r]) })))
		}
		withCookie, mac2 := "–", "–"
		if k.key == "smart" {
			withCookie = thousands64(int64(c.medianOf(func(x FloodRun) float64 { return x.During.SourcesWithCookie })))
			mac2 = perSecond(c.medianOf(func(x FloodRun) float64 { return x.During.rate(x.During.MAC2Packets) }))
		}
		p(" %s | %s |\n", withCookie, mac2)
	}
	p("\n")
}

func writeFloodProfile(p func(string, ...any), f *FloodResult) {
	if len(f.Profiles) == 0 {
		return
	}
	p("### Where the tomoe victim's time goes\n\n")
	p("Per flood, an extra %d s iperf3 run from the peer with a %d s CPU profile of the victim from its admin socket (`/debug/pprof/profile`); the peer's throughput in that run is in the header row. Flat time by component, as shares of all samples (`-noinlines`); the profile's *Total samples* over its duration is the victim's CPU use in cores.\n\n", f.ProfileSeconds+3, f.ProfileSeconds)
	var names []string
	for _, fp := range f.Profiles {
		for _, c := range fp.Side.Components {
			if !slices.Contains(names, c.Name) {
				names = append(names, c.Name)
			}
		}
	}
	p("| Component |")
	for _, fp := range f.Profiles {
		p(" %s (%s Gbit/s) |", floodName(fp.Flood), gbit(fp.Run.BitsPerSecond))
	}
	p("\n|---|")
	for range f.Profiles {
		p("---:|")
	}
	p("\n")
	for _, n := range names {
		p("| %s |", n)
		for _, fp := range f.Profiles {
			v := 0.0
			for _, c := range fp.Side.Components {
				if c.Name == n {
					v = c.FlatPercent
				}
			}
			p(" %.1f%% |", v)
		}
		p("\n")
	}
	p("\n")
	for _, fp := range f.Profiles {
		p("<details><summary>%s: %s</summary>\n\n`go tool pprof -top -nodecount=25`:\n\n```\n%s```\n\nby cumulative time (`-cum`):\n\n```\n%s```\n\n</details>\n\n", floodName(fp.Flood), fp.Side.Header, fp.Side.TopFlat, fp.Side.TopCum)
	}
}

func writeFloodMethod(p func(string, ...any), f *FloodResult) {
	p("### Method (flood)\n\n")
	p("- Namespaces `%s` (victim, %s), `%s` (peer, %s) and `%s` (attacker, %s), each with a veth into a bridge in `%s` (MTU 1500, IPv6 underlay). The attacker has `local` routes for %s and %s on its loopback, the victim routes both to the attacker, so replies reach the attacker's socket. IPv6 on purpose: the flood and the peer's tunnel packets share the victim's one IPv6 UDP socket.\n",
		floodVictim, fvUnder, floodPeer, fpUnder, floodAttacker, faUnder, floodSwitch, floodOne64, floodMany64)
	p("- tomoe: kernel-mode `tomoe up` in victim and peer (UDP 4610), static peers of each other; the victim's only rules allow the peer's key tcp %d and icmp, so every attacker key is opened and denied. wireguard-go: `wgv` (%s) and `wgp` (%s), UDP 51820, the pinned version, configured with `wg set`. MTU %d. iperf3 -s runs in the victim's namespace for both.\n", iperfPort, wgFloodVictim, wgFloodPeer, mtu)
	p("- The attacker, `bench/hsflood`: builds %d initiations per flood (each from a new key, stamped at the start, valid mac1; `internal/noise.Initiation`) and sends them round-robin from its source addresses on one goroutine locked to its thread: one UDP socket with IPV6_FREEBIND, each message's source in an IPV6_PKTINFO control message marshalled once per address, %d messages per sendmmsg (golang.org/x/net/ipv6 WriteBatch). The smart flood also reads the replies (recvmmsg with the destination address), opens each cookie (`noise.OpenCookieReply`) and keeps, per source, its message with that cookie's mac2 (`noise.SetMAC2`).\n", f.Pool, f.Batch)
	p("- Why UDP sendmmsg and not a raw socket: a perf profile of the attacker showed ~96%% of its time in the kernel and ~2%% in Go (batch packing), so user space is not the limit; about half of the kernel time is building and routing the UDP packets and a third is the receive side (the veth hands each packet to the bridge and the victim's stack on the sender's CPU). An AF_PACKET socket would save part of the first half only; the UDP socket also receives the cookie replies at the spoofed addresses, which the smart flood needs. Batches of 1, 16, 64 and 256 gave 370k, 406k, 515k and 438k packets/s to a closed port in one trial.\n")
	p("- Each repeat runs every victim under every flood (reverse order on even repeats): start the flood, wait %g s (the victim goes under load; the smart attacker collects cookies), read the counters, iperf3 `-t %g -P 1` from the peer to the victim's overlay address, read them again, `ping -c %d -i %g`, read them again, stop the flood. Before the repeats, one unrecorded %d s iperf3 run per victim.\n", f.SettleSeconds, f.RunSeconds, f.PingCount, f.PingInterval, warmUpSeconds)
	p("- Counters: /proc/PID/stat of the victim's daemon, the peer's and hsflood; /proc/stat for the machine; /proc/PID/net/snmp6 for each namespace's UDP counters; the tomoe victim's `/metrics` on its admin socket; hsflood's own counts. Process CPU excludes the kernel's receive work for the flood, which runs in softirq on the sending CPU (the attacker's, over veth): the control flood shows that share.\n")
	p("- All of it shares %d CPUs: the attacker takes one, so the peer's iperf3, both daemons and the kernel are left the other, whatever the victim does. The control row measures exactly that; compare a victim's rows with its control row as well as with no flood.\n\n", f.Machine.CPUs)
}
