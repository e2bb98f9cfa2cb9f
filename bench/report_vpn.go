package main

// This file writes the "VPN" section of RESULTS.md.

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// targetUserspaceRatio: userspace access (SOCKS5, port forward) ≥ 0.5×
// kernel mode's throughput.
const targetUserspaceRatio = 0.5

func writeVPN(p func(string, ...any), r *Results) {
	p("## VPN: routed subnets and userspace access\n\n")
	v := r.VPN
	if v == nil {
		p("Not measured in this run (`go run ./bench -only vpn` measures just this part).\n\n")
		return
	}
	kind := fmt.Sprintf("%d repeats of %g s per figure, 1 TCP stream", v.Repeats, v.RunSeconds)
	if v.Quick {
		kind = fmt.Sprintf("**quick smoke run** (%d repeat of %g s): not for comparisons", v.Repeats, v.RunSeconds)
	}
	writeMeasured(p, r, v.PartRun, kind, v.Machine, v.Versions, v.Versions.Iperf3, v.Errors)
	if len(v.Errors) > 0 {
		p("\n")
	}
	writeVPNRouted(p, v)
	writeVPNAccess(p, v)
	writeVPNMethod(p, v)
}

// byKey finds a scenario by key, or nil.
func byKey(scs []*ScenarioResult, key string) *ScenarioResult {
	for _, s := range scs {
		if s.Key == key {
			return s
		}
	}
	return nil
}

// median1 is a scenario's median single-stream throughput, 0 if none.
func median1(s *ScenarioResult) float64 {
	if t := s.throughput(1); t != nil && len(t.Runs) > 0 {
		return t.MedianBitsPerSecond
	}
	return 0
}

// cpuCell formats a CPU-s/GB figure, "–" for none.
func cpuCell(v *float64) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf("%.2f", *v)
}

var routedPaths = map[string]string{
	"raw-routed":        "client → gw forwards → " + lanRaw.host + "; no tunnel (the ceiling)",
	"wg-direct":         "client → gw's " + wgGW + " through wireguard-go",
	"wg-routed":         "client → gw's wireguard-go → gw forwards → " + lanWG.host + " (LAN host routes 10.98.0.0/24 back)",
	"tomoe-direct":      "client → gw's fc.. node address (IPv6)",
	"tomoe-routed-masq": "client (" + clientV4 + ") → gw → " + lanMasq.host + "; `masquerade = true`",
	"tomoe-routed":      "client (" + clientV4 + ") → gw → " + lanPlain.host + "; `masquerade = false`, LAN host routes 10.99.0.0/24 back",
}

func writeVPNRouted(p func(string, ...any), v *VPNResult) {
	p("### Routed IPv4 subnet through a gateway (Gbit/s, receiver side, median of %d; 1 stream)\n\n", v.Repeats)
	p("Three namespaces: client — gw — LAN host; the LAN host runs no tomoe, only `iperf3 -s`. The client accepts the gateway's offers of %s (masquerade) and %s (no masquerade); everything is measured in the same run and interleaved. *× tomoe direct* is the ratio routed / direct asked for: how much forwarding into the LAN costs against talking to the gateway itself.\n\n", lanMasq.prefix, lanPlain.prefix)
	direct, wgRouted := median1(byKey(v.Routed, "tomoe-direct")), median1(byKey(v.Routed, "wg-routed"))
	p("| Scenario | path | Gbit/s | × tomoe direct | × wireguard-go routed | runs |\n|---|---|---:|---|---|---|\n")
	for _, s := range v.Routed {
		path := routedPaths[s.Key]
		if saw := v.LANSaw[s.Key]; saw != "" {
			path += "; the LAN host saw " + saw
		}
		cell := "–"
		if b := median1(s); b > 0 {
			cell = gbit(b)
		}
		p("| %s | %s | %s | %s | %s | %s |\n", s.Name, path, cell, ratio(median1(s), direct), ratio(median1(s), wgRouted),
			runsList(s.throughput(1), func(x Run) string { return gbit(x.BitsPerSecond) }))
	}
	p("\n")
	for _, s := range v.Routed {
		for _, e := range s.Errors {
			p("- %s: %s\n", s.Name, oneLine(e))
		}
	}
	var parts []string
	for _, k := range []struct{ key, what string }{{"tomoe-routed-masq", "tomoe routed with masquerade"}, {"tomoe-routed", "without masquerade"}} {
		if s := byKey(v.Routed, k.key); s != nil && median1(s) > 0 && direct > 0 {
			parts = append(parts, fmt.Sprintf("%s %.2f×", k.what, median1(s)/direct))
		}
	}
	if wd := median1(byKey(v.Routed, "wg-direct")); wd > 0 && wgRouted > 0 {
		parts = append(parts, fmt.Sprintf("plain wireguard-go routed / its direct %.2f×", wgRouted/wd))
	}
	if len(parts) > 0 {
		p("\nRouted / direct: %s.\n", strings.Join(parts, "; "))
	}

	p("\nCPU seconds per GB received (median of %d). *Daemons*: client's and gateway's tomoe or wireguard-go together; *gateway* and *client* alone; *whole machine*: all CPUs' busy time (iperf3 at both ends, the kernel's TCP, forwarding, NAT and softirq work included).\n\n", v.Repeats)
	p("| Scenario | daemons | gateway | client | whole machine |\n|---|---:|---:|---:|---:|\n")
	for _, s := range v.Routed {
		t := s.throughput(1)
		if t == nil || len(t.Runs) == 0 {
			p("| %s | – | – | – | – |\n", s.Name)
			continue
		}
		daemons := "n/a"
		if t.MedianDaemonCPUPerGB != nil {
			daemons = cpuCell(t.MedianDaemonCPUPerGB)
		}
		p("| %s | %s | %s | %s | %.2f |\n", s.Name, daemons, cpuCell(t.medianProcCPUPerGB("gateway")), cpuCell(t.medianProcCPUPerGB("client")), t.MedianMachineCPUPerGB)
	}
	p("\nLatency from the client (system `ping -c %d -i 0.05`, ms):\n\n", v.PingCount)
	p("| Scenario | median | avg | min | max | replies |\n|---|---:|---:|---:|---:|---|\n")
	for _, s := range v.Routed {
		for _, pr := range s.Pings {
			p("| %s | %.3f | %.3f | %.3f | %.3f | %d/%d |\n", s.Name, pr.MedianMs, pr.AvgMs, pr.MinMs, pr.MaxMs, pr.Received, pr.Sent)
		}
	}
	if v.ClientRoutes != "" {
		p("\nThe client's routing table 4610 after the runs (`ip route show table 4610`):\n\n```\n%s\n```\n", v.ClientRoutes)
	}
	p("\n")
}

var accessPaths = map[string]string{
	"kernel":  "tcpload dials [server]:5201; the kernel's TCP, TUN, tomoe (wireguard-go) with TUN GSO",
	"socks5":  "tcpload → " + socksAddr + " (SOCKS5 CONNECT) → the node copies into its gVisor TCP connection → WireGuard",
	"forward": "tcpload → " + forwardAddr + " (`[[connect]]`) → the same copy into gVisor → WireGuard",
}

func writeVPNAccess(p func(string, ...any), v *VPNResult) {
	p("### Userspace access against kernel mode (Gbit/s, goodput, median of %d; 1 stream)\n\n", v.Repeats)
	p("Two namespaces: the server side runs a kernel-mode node and `bench/tcpload -sink` on its fc.. address, port %d; the access side runs a kernel-mode node and a userspace-mode node (`[proxy] socks5`, `[[connect]]`) side by side, and the sender, `bench/tcpload`. The sender writes for %g s, half-closes and waits for the sink's count of the bytes that arrived: goodput = bytes the sink counted / (dial → count received), exact rather than what fitted into socket buffers. Target: userspace access ≥ %.1f× kernel mode.\n\n", iperfPort, v.RunSeconds, targetUserspaceRatio)
	kernel := median1(byKey(v.Access, "kernel"))
	p("| Scenario | path | Gbit/s | × kernel mode | runs |\n|---|---|---:|---|---|\n")
	for _, s := range v.Access {
		cell := "–"
		if b := median1(s); b > 0 {
			cell = gbit(b)
		}
		p("| %s | %s | %s | %s | %s |\n", s.Name, accessPaths[s.Key], cell, ratio(median1(s), kernel),
			runsList(s.throughput(1), func(x Run) string { return gbit(x.BitsPerSecond) }))
	}
	p("\n")
	for _, s := range v.Access {
		for _, e := range s.Errors {
			p("- %s: %s\n", s.Name, oneLine(e))
		}
	}
	var verdicts []string
	for _, k := range []struct{ key, what string }{{"socks5", "SOCKS5"}, {"forward", "port forward"}} {
		s := byKey(v.Access, k.key)
		if s == nil || median1(s) == 0 || kernel == 0 {
			continue
		}
		x := median1(s) / kernel
		met := "meets"
		if x < targetUserspaceRatio {
			met = "does not meet"
		}
		verdicts = append(verdicts, fmt.Sprintf("%s %.2f× kernel mode, which %s the target of ≥ %.1f×", k.what, x, met, targetUserspaceRatio))
	}
	if len(verdicts) > 0 {
		p("\nResult: %s.\n", strings.Join(verdicts, "; "))
	}

	p("\nCPU seconds per GB received (median of %d). *Access node*: the kernel-mode node, or the userspace node (which also runs the sender's TCP in gVisor and the proxy's copy); *server node*: the receiving kernel-mode node; *load*: tcpload's sender and sink processes (their kernel TCP work included); *whole machine*: all CPUs.\n\n", v.Repeats)
	p("| Scenario | access node | × kernel mode | server node | load (sender + sink) | whole machine | × kernel mode |\n|---|---:|---|---:|---:|---:|---|\n")
	var kAccess, kMachine float64
	if t := byKey(v.Access, "kernel").throughput(1); t != nil && len(t.Runs) > 0 {
		if a := t.medianProcCPUPerGB("access"); a != nil {
			kAccess = *a
		}
		kMachine = t.MedianMachineCPUPerGB
	}
	for _, s := range v.Access {
		t := s.throughput(1)
		if t == nil || len(t.Runs) == 0 {
			p("| %s | – | – | – | – | – | – |\n", s.Name)
			continue
		}
		access := t.medianProcCPUPerGB("access")
		accessX := "–"
		if access != nil {
			accessX = ratio(*access, kAccess)
		}
		var load []float64
		for _, r := range t.Runs {
			sn, sk := r.ProcCPUPerGB("sender"), r.ProcCPUPerGB("sink")
			if sn != nil && sk != nil {
				load = append(load, *sn+*sk)
			}
		}
		loadCell := "–"
		if len(load) > 0 {
			loadCell = fmt.Sprintf("%.2f", median(load))
		}
		p("| %s | %s | %s | %s | %s | %.2f | %s |\n", s.Name, cpuCell(access), accessX, cpuCell(t.medianProcCPUPerGB("server")), loadCell,
			t.MedianMachineCPUPerGB, ratio(t.MedianMachineCPUPerGB, kMachine))
	}
	p("\nLatency from the access side to the server node (ms): the system `ping` goes through the kernel-mode node's TUN; `tomoe ping` asks the userspace node to send the echo itself (its proxies add a loopback hop, not measured here).\n\n")
	p("| Scenario | tool | median | avg | min | max | replies |\n|---|---|---:|---:|---:|---:|---|\n")
	for _, s := range v.Access {
		for _, pr := range s.Pings {
			p("| %s | `%s` | %.3f | %.3f | %.3f | %.3f | %d/%d |\n", s.Name, pr.Tool, pr.MedianMs, pr.AvgMs, pr.MinMs, pr.MaxMs, pr.Received, pr.Sent)
		}
	}
	p("\n")
	writeNetstackSettings(p, v)
	writeVPNProfile(p, v)
}

// settingNotes say what each userspace setting does on this path.
var settingNotes = map[string]string{
	"congestion control": "CUBIC. On a clean veth path Reno was as fast; CUBIC refills a fat pipe sooner after a loss.",
	"SACK":               "Repairs several losses per round trip; without it a burst of loss costs one RTT per lost segment.",
	"RACK loss detection (recovery; 0 = off)": "Off although it is gVisor's default: with the pinned gVisor a bulk sender could stall in SACK recovery with RACK on (gVisor issue 6113; Tailscale also turned it off). Loss is detected from the SACK scoreboard and duplicate ACKs. It only matters once packets are lost (here: drops in the outbound queue or in WireGuard's queues).",
	"receive buffer moderation":               "Grows each connection's receive window with its measured rate up to the maximum. The userspace node is the sender here, so its receive side only carries ACKs; it matters for downloads.",
	"send buffer maximum":                     "The userspace node is the sender: its send buffer bounds the data in flight towards the server's kernel TCP.",
	"receive buffer maximum":                  "Bounds the window the userspace node advertises (downloads).",
	"outbound queue (packets)":                "Between gVisor and WireGuard. gVisor does not pace, so a shorter queue turns each window burst into drops.",
	"inbound checksum offload":                "false: gVisor verifies every inbound checksum (here mostly ACKs).",
	"packets per Read (batch)":                "Packets WireGuard takes from the stack per Read; equal to wireguard-go's UDP batch (one sendmmsg).",
	"GSO":                                     "No GSO: every segment crosses gVisor and the link as one MTU-sized packet, whereas kernel mode hands wireguard-go up to 64 KiB TCP super-packets from the TUN (tun GSO) and splits them there.",
	"proxy / forward copy buffer":             "The SOCKS5 proxy and the port forward copy loopback → gVisor through this buffer per direction (no splice(2) into a userspace stack).",
}

var shiftRE = regexp.MustCompile(`^(\d+)\s*<<\s*(10|20)$`)

// humanSize turns "6 << 20" into "6 << 20 (6 MiB)".
func humanSize(v string) string {
	m := shiftRE.FindStringSubmatch(v)
	if m == nil {
		return v
	}
	unit := "KiB"
	if m[2] == "20" {
		unit = "MiB"
	}
	n, _ := strconv.Atoi(m[1])
	return fmt.Sprintf("%s (%d %s)", v, n, unit)
}

func writeNetstackSettings(p func(string, ...any), v *VPNResult) {
	if len(v.Netstack) == 0 {
		return
	}
	p("#### Userspace stack settings in effect\n\n")
	p("Read from the source tree the node was built from (`internal/netstack/tuning.go` explains and measures each choice); `?` means the bench could not find the setting.\n\n")
	p("| Setting | in effect | source | what it does on this path |\n|---|---|---|---|\n")
	for _, s := range v.Netstack {
		p("| %s | `%s` | %s | %s |\n", s.Name, humanSize(s.Value), s.Source, settingNotes[s.Name])
	}
	p("\n")
}

func writeVPNProfile(p func(string, ...any), v *VPNResult) {
	side := v.Profile
	if side == nil {
		return
	}
	p("#### Where the userspace node's time goes (SOCKS5, 1 stream)\n\n")
	if r := v.ProfileRun; r != nil {
		cpu := "–"
		if c := r.ProcCPUPerGB("access"); c != nil {
			cpu = fmt.Sprintf("%.2f", *c)
		}
		p("An extra %.0f s SOCKS5 run (%s Gbit/s; userspace node %s CPU-s/GB) with a %d s CPU profile of the userspace node from its admin socket.\n\n", r.Seconds, gbit(r.BitsPerSecond), cpu, v.ProfileSeconds)
	}
	p("%s\n\n", side.Header)
	p("| Component | share of samples |\n|---|---:|\n")
	for _, c := range side.Components {
		p("| %s | %.1f%% |\n", c.Name, c.FlatPercent)
	}
	p("\n%s\n\n", closingNote(&ProfileResult{Sides: []ProfileSide{*side}}))
	p("`go tool pprof -top -nodecount=25`:\n\n```\n%s```\n\n", side.TopFlat)
	p("<details><summary>by cumulative time (-cum)</summary>\n\n```\n%s```\n\n</details>\n\n", side.TopCum)
}

func writeVPNMethod(p func(string, ...any), v *VPNResult) {
	p("### Method (VPN)\n\n")
	p("- Routed: namespaces `%s` (client), `%s` (gateway) and `%s` (LAN host). Client %s/24 — gateway %s/24 on a veth pair (MTU 1500); gateway and LAN host on a second veth pair carrying four /24s: %s (tomoe, masquerade), %s (tomoe, no masquerade), %s (no tunnel), %s (plain wireguard-go); the gateway has .1 in each, the LAN host .5. The LAN host routes 10.99.0.0/24 via %s, 10.98.0.0/24 via %s and 10.88.3.0/24 via %s; IPv4 forwarding is on in the gateway.\n",
		vpnClient, vpnGW, vpnLAN, vcUnder, vgUnder, lanMasq.prefix, lanPlain.prefix, lanRaw.prefix, lanWG.prefix, lanPlain.gw, lanWG.gw, lanRaw.gw)
	p("- tomoe: kernel-mode `tomoe up` in client and gateway, static peers of each other, tun.mtu %d. Gateway: `[tun] ipv4 = \"%s\"`, `[[routes.offer]]` %s with `masquerade = true` and %s with `masquerade = false`, `[[routes.accept]] from = <client's key>`, `prefix = \"10.99.0.0/24\"`, and `[[policy.allow]]` for the client's key: tcp port %d and icmp. Client: `[tun] ipv4 = \"%s\"`, `[[routes.accept]] from = <gateway's address>`, `prefix = \"192.168.0.0/16\"`, no allow rules. The runs start once the client reaches both LAN addresses; the LAN host's view of the source is from a 1 s `iperf3 --get-server-output` run.\n",
		mtu, gwV4, lanMasq.prefix, lanPlain.prefix, iperfPort, clientV4)
	p("- Plain wireguard-go (same binary as the data-plane section) in client (`wgc`, %s/24) and gateway (`wgg`, %s/24); the client's peer has AllowedIPs %s/32 and %s, routed into `wgc`; MTU %d. Raw: the client's main table routes %s via the gateway's underlay address.\n",
		wgClient, wgGW, wgGW, lanWG.prefix, mtu, lanRaw.prefix)
	p("- Throughput: `iperf3 -c … -t %g -P 1 -J` from the client to `iperf3 -s` in the gateway (direct) or the LAN host (routed); receiver-side bits/s; after one unrecorded %d s run of each scenario, %d repeats, all six scenarios interleaved (reverse order on even repeats); medians. CPU from /proc/PID/stat of each daemon and /proc/stat; ping from the client after the runs. Masquerade makes the gateway's kernel track connections (an nftables nat chain), which also applies to the raw and wireguard-go traffic through the same gateway.\n", v.RunSeconds, warmUpSeconds, v.Repeats)
	p("- Access: namespaces `%s` (access side, %s/24) and `%s` (server side, %s/24). Server side: a kernel-mode node (allow rules: tcp %d and icmp for both access nodes) and `bench/tcpload -sink` listening on its fc.. address. Access side: a kernel-mode node (UDP 4610) and a userspace-mode node (UDP 4611, `[proxy] socks5 = \"%s\"`, `[[connect]] local = \"%s\"`, `remote = \"[server]:%d\"`), both static peers of the server node; the loopback listeners serve the uid running the node (root here, as the sender).\n",
		vpnAccess, vaUnder, vpnServer, vsUnder, iperfPort, socksAddr, forwardAddr, iperfPort)
	p("- Sender: `bench/tcpload`, one process driven over stdin; per run it dials (directly, through the SOCKS5 proxy with golang.org/x/net/proxy, or to the forward's local port), writes 128 KiB buffers for %g s, half-closes the socket and waits for the sink's 8-byte count; a run whose count differs from the bytes written is an error. After one unrecorded %d s run of each scenario, %d repeats, the three scenarios interleaved; medians. Then one extra SOCKS5 run with a CPU profile of the userspace node.\n", v.RunSeconds, warmUpSeconds, v.Repeats)
	p("- Both parts run alone on the machine (the namespaces of the other parts are removed first) but share its %d CPUs among senders, receivers, daemons and the forwarding kernel; compare figures within this section.\n\n", v.Machine.CPUs)
}
