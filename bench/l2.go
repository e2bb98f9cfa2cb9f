package main

// This file is the virtual Ethernet part (issue 14): TCP throughput and
// ping across an [[l2]] segment against the L3 overlay between the same
// two kernel-mode nodes, in one run.
//
//	tbench-l2ha (host, 192.168.77.1) — lan0 in tbench-l2a (node A)
//	        tbench-l2a (10.88.7.1) ——— veth ——— tbench-l2b (10.88.7.2)
//	tbench-l2hb (host, 192.168.77.2) — lan0 in tbench-l2b (node B)
//
//	l2  host A -> host B across the segment: lan0, A's bridge, VXLAN over
//	    tomoe0 (WireGuard), B's bridge, lan0
//	l3  node A -> node B's fc.. address: tomoe0 (WireGuard) only

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Namespaces and addresses of the virtual Ethernet part.
const (
	l2NodeA = nsPrefix + "l2a"
	l2NodeB = nsPrefix + "l2b"
	l2HostA = nsPrefix + "l2ha"
	l2HostB = nsPrefix + "l2hb"

	l2UnderA = "10.88.7.1"
	l2UnderB = "10.88.7.2"
	l2IPA    = "192.168.77.1" // host A on the segment
	l2IPB    = "192.168.77.2" // host B on the segment

	// l2LANMTU is the MTU of the hosts' links to their nodes, a LAN's:
	// larger than the segment's, so TCP relies on the MSS clamp.
	l2LANMTU = 1500
)

// L2Result is the virtual Ethernet part. Like the bridge, VPN and flood
// parts it carries its own date and settings: `-only l2` replaces just
// this part of an earlier results.json.
type L2Result struct {
	PartRun
	Streams      []int    `json:"streams"`
	PingInterval float64  `json:"ping_interval"`
	Machine      Machine  `json:"machine"`
	Versions     Versions `json:"versions"`
	// Scenarios are keyed l2 (host to host across the segment) and l3
	// (node to node over the overlay).
	Scenarios []*ScenarioResult `json:"scenarios"`
	// Syscalls are the daemons' TUN reads and writes per run, by
	// scenario key, in the order of Scenarios' runs.
	Syscalls map[string][]L2Syscalls `json:"syscalls,omitempty"`
	// Devices is what `ip -d link` said about node A's devices after
	// the set-up: the TUN interface, the bridge and the VXLAN tunnel.
	Devices map[string]string `json:"devices,omitempty"`
	Errors  []string          `json:"errors,omitempty"`
}

// L2Syscalls are read and write system calls of the two daemons during
// one run (syscr and syscw of /proc/PID/io: the TUN device's reads and
// writes; the UDP socket's recvmmsg and sendmmsg are not counted there),
// and the packets the sender's TUN interface dropped (its queue full).
type L2Syscalls struct {
	Streams        int   `json:"streams"`
	BytesReceived  int64 `json:"bytes_received"`
	SenderReads    int64 `json:"sender_reads"`
	SenderWrites   int64 `json:"sender_writes"`
	ReceiverReads  int64 `json:"receiver_reads"`
	ReceiverWrites int64 `json:"receiver_writes"`
	TUNTxDropped   int64 `json:"tun_tx_dropped"`
}

// l2Params are the part's settings.
type l2Params struct {
	repeats      int
	runSeconds   float64
	streams      []int
	pingCount    int
	pingInterval float64
	// profileDir, if set, gets 8 s CPU profiles of both nodes during one
	// extra L2 run (l2-a.pprof, l2-b.pprof); the opt-in TestL2AB sets it.
	profileDir string
}

// runL2Part measures the virtual Ethernet part with the run's settings.
func (e *env) runL2Part(ctx context.Context, o options, b bins, res *Results) (*L2Result, error) {
	started := time.Now()
	p := l2Params{repeats: res.Repeats, runSeconds: res.RunSeconds, streams: streamCounts, pingCount: 500, pingInterval: 0.01}
	if o.quick {
		p.pingCount = 100
	}
	lr := &L2Result{
		PartRun: newPartRun(started, o.quick, p.repeats, p.runSeconds, p.pingCount),
		Streams: p.streams, PingInterval: p.pingInterval,
		Machine: res.Machine, Versions: res.Versions, Syscalls: map[string][]L2Syscalls{},
	}
	if err := e.l2Part(ctx, b, p, lr); err != nil {
		return nil, err
	}
	lr.LoadavgEnd = loadavg()
	lr.Machine.LoadavgEnd = lr.LoadavgEnd
	lr.DurationSeconds = time.Since(started).Seconds()
	return lr, nil
}

// setupL2Net creates the two nodes' namespaces joined by a veth pair, and
// a host behind each on a veth whose node end (lan0) the node attaches
// to the segment.
func setupL2Net(ctx context.Context) error {
	var steps [][]string
	for _, ns := range []string{l2NodeA, l2NodeB, l2HostA, l2HostB} {
		steps = append(steps, []string{"ip", "netns", "add", ns}, []string{"ip", "-n", ns, "link", "set", "lo", "up"})
	}
	steps = append(steps,
		[]string{"ip", "-n", l2NodeA, "link", "add", "veth0", "mtu", "1500", "type", "veth", "peer", "name", "veth0", "netns", l2NodeB},
		[]string{"ip", "-n", l2NodeA, "addr", "add", l2UnderA + "/24", "dev", "veth0"},
		[]string{"ip", "-n", l2NodeB, "addr", "add", l2UnderB + "/24", "dev", "veth0"},
		[]string{"ip", "-n", l2NodeA, "link", "set", "veth0", "up"},
		[]string{"ip", "-n", l2NodeB, "link", "set", "veth0", "up"},
	)
	for _, s := range []struct{ node, host, ip string }{{l2NodeA, l2HostA, l2IPA}, {l2NodeB, l2HostB, l2IPB}} {
		mtu := strconv.Itoa(l2LANMTU)
		steps = append(steps,
			[]string{"ip", "-n", s.node, "link", "add", "lan0", "mtu", mtu, "type", "veth", "peer", "name", "eth0", "netns", s.host},
			[]string{"ip", "-n", s.host, "addr", "add", s.ip + "/24", "dev", "eth0"},
			[]string{"ip", "-n", s.host, "link", "set", "eth0", "up"},
		)
	}
	if err := runSteps(ctx, "l2 namespaces", steps); err != nil {
		return err
	}
	return waitFor(ctx, 10*time.Second, "l2 underlay ping", func() bool {
		_, err := inNS(ctx, l2NodeA, "ping", "-n", "-c", "1", "-W", "1", l2UnderB)
		return err == nil
	})
}

// l2Part sets up both nodes with the segment, measures both scenarios
// interleaved, then the pings.
func (e *env) l2Part(ctx context.Context, b bins, p l2Params, lr *L2Result) error {
	log := e.log
	log.Info("virtual Ethernet: setting up two nodes with an [[l2]] segment")
	if err := setupL2Net(ctx); err != nil {
		return err
	}
	na, err := e.newTomoeNode("l2a")
	if err != nil {
		return err
	}
	nb, err := e.newTomoeNode("l2b")
	if err != nil {
		return err
	}
	segment := fmt.Sprintf("[[l2]]\nname = \"bench\"\nmembers = [%q, %q]\nattach = \"lan0\"\n", na.pub.String(), nb.pub.String())
	if err := na.writeConfigWith("kernel", 4610, []peerEntry{{nb.pub, l2UnderB + ":4610"}}, segment); err != nil {
		return err
	}
	if err := nb.writeConfigWith("kernel", 4610, []peerEntry{{na.pub, l2UnderA + ":4610"}}, segment); err != nil {
		return err
	}
	pa, err := e.startNode(ctx, b.tomoe, l2NodeA, "tomoe-l2-a", na)
	if err != nil {
		return err
	}
	pb, err := e.startNode(ctx, b.tomoe, l2NodeB, "tomoe-l2-b", nb)
	if err != nil {
		return err
	}
	l3Server, err := e.iperfServer(ctx, l2NodeB)
	if err != nil {
		return err
	}
	l2Server, err := e.iperfServer(ctx, l2HostB)
	if err != nil {
		return err
	}
	defer func() {
		for _, p := range []*proc{l3Server, l2Server, pa, pb} {
			p.stop(10 * time.Second)
		}
	}()
	l3Target := nb.pub.Address().String()
	if err := warmUp(ctx, "ping over the overlay", kernelPing(l2NodeA, 1, l3Target)); err != nil {
		return err
	}
	if err := warmUp(ctx, "ping across the segment", kernelPing(l2HostA, 1, l2IPB)); err != nil {
		return err
	}
	lr.Devices = l2Devices(ctx)

	daemons := []*proc{pa, pb}
	named := []namedProc{{"sender", pa}, {"receiver", pb}}
	mk := func(key, name, from, to, target string, server **proc) *scenario {
		sc := &scenario{
			res:     &ScenarioResult{Key: key, Name: name, Target: target},
			daemons: daemons, named: named,
			pings: []func(context.Context) (PingResult, error){kernelPingEvery(from, p.pingCount, p.pingInterval, target)},
		}
		sc.traffic = e.l2Counted(lr, key, pa, pb, e.iperfTraffic(from, to, target, server))
		return sc
	}
	scenarios := []*scenario{
		mk("l2", "L2 segment, host to host", l2HostA, l2HostB, l2IPB, &l2Server),
		mk("l3", "L3 overlay, node to node", l2NodeA, l2NodeB, l3Target, &l3Server),
	}
	for _, sc := range scenarios {
		lr.Scenarios = append(lr.Scenarios, sc.res)
		// One unrecorded run each: the first after set-up is slower.
		if _, err := sc.traffic(ctx, 1, warmUpSeconds); err != nil {
			return fmt.Errorf("l2: warm-up run %s: %w", sc.res.Name, err)
		}
	}
	for k := range lr.Syscalls {
		lr.Syscalls[k] = nil // the warm-up runs' counts
	}
	if err := measureInterleaved(ctx, log, scenarios, p.streams, p.repeats, p.runSeconds); err != nil {
		return err
	}
	measurePings(ctx, log, scenarios)
	for _, sc := range scenarios {
		lr.Errors = append(lr.Errors, sc.res.Errors...)
	}
	if p.profileDir != "" {
		if _, err := e.profileSides(ctx, scenarios[0], []profileTarget{
			{na.sock, filepath.Join(p.profileDir, "l2-a.pprof"), "A: sends across the segment"},
			{nb.sock, filepath.Join(p.profileDir, "l2-b.pprof"), "B: receives"},
		}, b.tomoe, 8, 1); err != nil {
			return fmt.Errorf("l2: profiles: %w", err)
		}
	}
	return ctx.Err()
}

// l2Counted wraps a traffic function: it records the daemons' system
// calls and the sender's TUN drops during each run in lr.Syscalls[key].
func (e *env) l2Counted(lr *L2Result, key string, sender, receiver *proc, traffic func(context.Context, int, float64) (Run, error)) func(context.Context, int, float64) (Run, error) {
	return func(ctx context.Context, streams int, secs float64) (Run, error) {
		s0, err1 := procIO(sender.Pid())
		r0, err2 := procIO(receiver.Pid())
		d0, err3 := tunTxDropped(ctx, l2NodeA)
		r, err := traffic(ctx, streams, secs)
		if err != nil {
			return r, err
		}
		s1, err4 := procIO(sender.Pid())
		r1, err5 := procIO(receiver.Pid())
		d1, err6 := tunTxDropped(ctx, l2NodeA)
		if cerr := errors.Join(err1, err2, err3, err4, err5, err6); cerr != nil {
			e.log.Warn("l2: counters", "err", cerr)
			return r, nil
		}
		lr.Syscalls[key] = append(lr.Syscalls[key], L2Syscalls{
			Streams: streams, BytesReceived: r.BytesReceived,
			SenderReads: s1.syscr - s0.syscr, SenderWrites: s1.syscw - s0.syscw,
			ReceiverReads: r1.syscr - r0.syscr, ReceiverWrites: r1.syscw - r0.syscw,
			TUNTxDropped: d1 - d0,
		})
		return r, nil
	}
}

// ioCounts are a process's read and write system calls (/proc/PID/io).
type ioCounts struct{ syscr, syscw int64 }

func procIO(pid int) (ioCounts, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return ioCounts{}, err
	}
	var c ioCounts
	var seen int
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "syscr":
			c.syscr, seen = n, seen+1
		case "syscw":
			c.syscw, seen = n, seen+1
		}
	}
	if seen != 2 {
		return c, fmt.Errorf("/proc/%d/io: no syscr and syscw", pid)
	}
	return c, nil
}

// tunTxDropped reads tomoe0's tx_dropped in namespace ns: packets the
// kernel could not queue to the TUN device's reader.
func tunTxDropped(ctx context.Context, ns string) (int64, error) {
	out, err := inNS(ctx, ns, "cat", "/sys/class/net/tomoe0/statistics/tx_dropped")
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(out), 10, 64)
}

// l2Devices is what `ip -d link show` says of node A's TUN interface,
// bridge and VXLAN tunnel, shortened to the attributes that bear on the
// figures (MTU, queue, offload header, VXLAN checksums, port flags).
func l2Devices(ctx context.Context) map[string]string {
	out := map[string]string{}
	for _, q := range []struct {
		key, what string
		keep      []string
	}{
		{"tun", "dev tomoe0", []string{"mtu", "qdisc", "qlen", "vnet_hdr", "gso_max_size"}},
		{"bridge", "type bridge", []string{"mtu", "ageing_time", "stp_state", "mcast_snooping", "nf_call_iptables"}},
		{"vxlan", "type vxlan", []string{"mtu", "vxlan", "id", "srcport", "dstport", "udpcsum", "noudpcsum", "udp6zerocsumtx", "noudp6zerocsumtx", "udp6zerocsumrx", "noudp6zerocsumrx", "hairpin", "learning", "isolated", "gso_max_size"}},
	} {
		s, err := inNS(ctx, l2NodeA, "ip", append([]string{"-d", "-o", "link", "show"}, strings.Fields(q.what)...)...)
		if err != nil {
			continue
		}
		f := strings.Fields(strings.ReplaceAll(s, `\`, " "))
		if len(f) < 2 {
			continue
		}
		short := []string{strings.TrimSuffix(f[1], ":")}
		for i := 2; i < len(f); i++ {
			if !slices.Contains(q.keep, f[i]) {
				continue
			}
			switch {
			case f[i] == "vxlan" || strings.HasPrefix(f[i], "udp") || strings.HasPrefix(f[i], "noudp"):
				short = append(short, f[i]) // flags without a value
			case f[i] == "srcport" && i+2 < len(f):
				short = append(short, f[i], f[i+1], f[i+2])
				i += 2
			case i+1 < len(f):
				short = append(short, f[i], f[i+1])
				i++
			}
		}
		out[q.key] = strings.Join(short, " ")
	}
	return out
}
