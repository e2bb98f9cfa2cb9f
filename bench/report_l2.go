package main

// This file writes the "Virtual Ethernet" section of RESULTS.md.

import (
	"fmt"
	"slices"
	"strings"
)

func writeL2(p func(string, ...any), r *Results) {
	p("## Virtual Ethernet: an L2 segment against the L3 overlay\n\n")
	l := r.L2
	if l == nil {
		p("Not measured in this run (`go run ./bench -only l2` measures just this part).\n\n")
		return
	}
	kind := fmt.Sprintf("%d repeats of %g s per figure", l.Repeats, l.RunSeconds)
	if l.Quick {
		kind = fmt.Sprintf("**quick smoke run** (%d repeat of %g s): not for comparisons", l.Repeats, l.RunSeconds)
	}
	writeMeasured(p, r, l.PartRun, kind, l.Machine, l.Versions, l.Versions.Iperf3, l.Errors)
	if len(l.Errors) > 0 {
		p("\n")
	}
	writeL2Throughput(p, l)
	writeL2Ping(p, l)
	writeL2Syscalls(p, l)
	writeL2Method(p, l)
}

func writeL2Throughput(p func(string, ...any), l *L2Result) {
	p("### Throughput (Gbit/s, receiver side, median of %d) and CPU\n\n", l.Repeats)
	p("Between the same two kernel-mode nodes, interleaved. *L2*: a host behind node A to a host behind node B across the segment (1500-byte LAN links, MSS clamped); *L3*: node A to node B's overlay address. CPU-s/GB: utime+stime of both daemons (and of each alone) per 10⁹ bytes received; *machine* is every CPU's busy time, the other work on the machine included.\n\n")
	l3 := byKey(l.Scenarios, "l3")
	p("| Path | streams | Gbit/s | × L3 | daemons CPU-s/GB | sender node | receiver node | machine CPU-s/GB | retransmits (median) | runs (Gbit/s) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, s := range l.Scenarios {
		for _, n := range l.Streams {
			t := s.throughput(n)
			if t == nil || len(t.Runs) == 0 {
				p("| %s | %d | – | – | – | – | – | – | – | – |\n", s.Name, n)
				continue
			}
			x := "–"
			if w := l3.throughput(n); w != nil && s.Key != "l3" {
				x = ratio(t.MedianBitsPerSecond, w.MedianBitsPerSecond)
			}
			var retr []float64
			for _, r := range t.Runs {
				if r.Retransmits != nil {
					retr = append(retr, float64(*r.Retransmits))
				}
			}
			retrCell := "–"
			if len(retr) > 0 {
				retrCell = fmt.Sprintf("%.0f", median(retr))
			}
			gb := func(x Run) string { return gbit(x.BitsPerSecond) }
			p("| %s | %d | %s | %s | %s | %s | %s | %.2f | %s | %s |\n", s.Name, n, gbit(t.MedianBitsPerSecond), x,
				cpuCell(t.MedianDaemonCPUPerGB), cpuCell(t.medianProcCPUPerGB("sender")), cpuCell(t.medianProcCPUPerGB("receiver")),
				t.MedianMachineCPUPerGB, retrCell, runsList(t, gb))
		}
	}
	p("\n")
}

func writeL2Ping(p func(string, ...any), l *L2Result) {
	p("### Latency\n\n")
	p("`ping -c %d -i %g` after the throughput runs: host A to host B across the segment, node A to node B's overlay address; percentiles by nearest rank.\n\n", l.PingCount, l.PingInterval)
	p("| Path | p50 ms | p99 ms | avg ms | max ms | received |\n|---|---:|---:|---:|---:|---:|\n")
	for _, s := range l.Scenarios {
		if len(s.Pings) == 0 {
			p("| %s | – | – | – | – | – |\n", s.Name)
			continue
		}
		pr := s.Pings[0]
		p("| %s | %.3f | %.3f | %.3f | %.3f | %d of %d |\n", s.Name, percentile(pr.RTTsMs, 50), percentile(pr.RTTsMs, 99), pr.AvgMs, pr.MaxMs, pr.Received, pr.Sent)
	}
	p("\n")
}

func writeL2Syscalls(p func(string, ...any), l *L2Result) {
	if len(l.Syscalls) == 0 {
		return
	}
	p("### TUN reads and writes\n\n")
	p("System calls on the TUN device per run (`syscr`, `syscw` of /proc/PID/io; the UDP socket's recvmmsg and sendmmsg are not counted there): bytes received per read of the sending node's TUN (one read returns one packet, or one TCP super-packet of up to 64 KB that wireguard-go splits), per write to the receiving node's TUN (wireguard-go coalesces what arrives in one batch), and packets the sending node's TUN interface dropped because its queue (txqueuelen) was full. Medians over the runs.\n\n")
	p("| Path | streams | KB per sender TUN read | KB per receiver TUN write | sender TUN drops per run |\n|---|---:|---:|---:|---:|\n")
	for _, s := range l.Scenarios {
		for _, n := range l.Streams {
			var perRead, perWrite, drops []float64
			for _, c := range l.Syscalls[s.Key] {
				if c.Streams != n {
					continue
				}
				if c.SenderReads > 0 {
					perRead = append(perRead, float64(c.BytesReceived)/float64(c.SenderReads)/1e3)
				}
				if c.ReceiverWrites > 0 {
					perWrite = append(perWrite, float64(c.BytesReceived)/float64(c.ReceiverWrites)/1e3)
				}
				drops = append(drops, float64(c.TUNTxDropped))
			}
			if len(drops) == 0 {
				continue
			}
			p("| %s | %d | %.1f | %.1f | %.0f |\n", s.Name, n, median(perRead), median(perWrite), median(drops))
		}
	}
	p("\n")
	p("Why the segment is slower: over L3 the TUN hands the node TCP super-packets (TSO, with a virtio-net header) that wireguard-go splits after one read, and it sends and receives them in batches. The segment's frames leave the bridge as VXLAN packets, UDP-tunnel GSO packets that the TUN, as wireguard-go sets it up, cannot hand up whole, so the kernel segments them before the TUN and every ~1.4 KB packet costs the sending node a read. tomoe reads what is queued in one go (internal/tunbatch) and sends it as one batch; before it did (until December 2026), each packet also cost a sendmmsg of its own, and the segment ran at about 0.2× L3. The receiving node's writes are coalesced (see the table). The sending host's TCP gets no back-pressure from the node (its packets have left its own interface), so it fills the TUN's queue, and the drops show as retransmits.\n\n")
}

func writeL2Method(p func(string, ...any), l *L2Result) {
	p("### Method (virtual Ethernet)\n\n")
	p("- Namespaces `%s` and `%s` (the nodes, %s/24 and %s/24 on a veth pair, MTU 1500), `%s` and `%s` (a plain host behind each, %s/24 and %s/24, on a veth pair, MTU %d, whose node end `lan0` the node attaches to the segment).\n",
		l2NodeA, l2NodeB, l2UnderA, l2UnderB, l2HostA, l2HostB, l2IPA, l2IPB, l2LANMTU)
	p("- tomoe: kernel-mode `tomoe up` in each node namespace, static peers of each other, tun.mtu %d, `[[policy.allow]] from = \"*\"`, and the same segment in both: `[[l2]] name = \"bench\"`, `members = [A, B]`, `attach = \"lan0\"` (a full mesh of two: one VXLAN tunnel each way, isolated bridge ports). The segment's MTU is tun.mtu − 70 = %d; the bridge clamps TCP's MSS to %d (IPv4).\n",
		mtu, mtu-70, mtu-70-40)
	p("- Throughput: `iperf3 -c … -t %g -P N -J` (N = %s) from host A to `iperf3 -s` in host B (L2) and from node A to `iperf3 -s` in node B (L3); receiver-side bits/s. After one unrecorded %d s run of each, %d repeats, the two interleaved (reverse order on even repeats); medians. CPU from /proc/PID/stat of both daemons (the same two processes carry both paths) and /proc/stat.\n",
		l.RunSeconds, joinInts(l.Streams), warmUpSeconds, l.Repeats)
	p("- The part runs alone on the machine (the other parts' namespaces are removed first), but both nodes, both hosts and iperf3 share its %d CPUs.\n\n", l.Machine.CPUs)
	if len(l.Devices) > 0 {
		p("Node A's devices after the set-up (`ip -d link show`):\n\n```\n")
		keys := make([]string, 0, len(l.Devices))
		for k := range l.Devices {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			p("%s\n", l.Devices[k])
		}
		p("```\n\n")
	}
}

func joinInts(xs []int) string {
	var s []string
	for _, x := range xs {
		s = append(s, fmt.Sprint(x))
	}
	return strings.Join(s, ", ")
}
