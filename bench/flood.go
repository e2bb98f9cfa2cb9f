package main

// This file is the handshake-flood part (issue 9 §1): an attacker sends
// handshake initiations with a valid mac1 for the victim's key, as fast as
// one core allows, while an allowed peer runs iperf3 and ping to the
// victim through the overlay. Four namespaces on one bridge:
//
//	tbench-fv  victim    fd88:f::1  tomoe (UDP 4610), wireguard-go wgv (51820), iperf3 -s
//	tbench-fp  peer      fd88:f::2  tomoe, wireguard-go wgp: static peers of the victim's
//	tbench-fa  attacker  fd88:f::3  bench/hsflood; 2001:db8:a::/64 and 2001:db8:b::/48 local
//	tbench-fs  switch               br0, one port per namespace
//
// The underlay is IPv6, so the flood and the peer's packets arrive on the
// same socket of the victim, as they would in the wild.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// Namespaces and addresses of the flood part.
const (
	floodVictim   = nsPrefix + "fv"
	floodPeer     = nsPrefix + "fp"
	floodAttacker = nsPrefix + "fa"
	floodSwitch   = nsPrefix + "fs"

	fvUnder = "fd88:f::1"
	fpUnder = "fd88:f::2"
	faUnder = "fd88:f::3"

	floodOne64  = "2001:db8:a::/64" // mode one64's sources
	floodMany64 = "2001:db8:b::/48" // the /64s of modes many64 and smart

	wgFloodVictim = "fd96::1" // plain wireguard-go's tunnel addresses
	wgFloodPeer   = "fd96::2"

	// floodClosedPort is where the control flood goes: nothing listens
	// on it in the victim's namespace, so the kernel drops the packets
	// after the UDP socket lookup.
	floodClosedPort = 9

	floodSources      = 65536 // addresses of one64 and many64 (/64s of many64)
	floodSmartSources = 4096  // /64s of the smart flood: each gets its cookie within ~2 s at tomoe's cookie budget
	floodPool         = 1024  // initiations per flood, each from its own key
	floodBatch        = 64    // messages per sendmmsg
	// floodPacedRate is the one paced flood: about what a 100 Mbit/s
	// link carries (an initiation is ~230 bytes on the wire with
	// Ethernet, IPv6 and UDP headers), a third of what the victim's
	// receive goroutine screened at most in trials.
	floodPacedRate = 50000
)

// floodKind is one way of flooding.
type floodKind struct {
	key    string
	mode   string  // hsflood's mode; "" for no flood
	closed bool    // to floodClosedPort instead of the daemon
	rate   float64 // packets per second; 0 = as fast as one core goes
}

var floodKinds = []floodKind{
	{key: "none"},
	{key: "control", mode: "many64", closed: true},
	{key: "one64", mode: "one64"},
	{key: "many64-paced", mode: "many64", rate: floodPacedRate},
	{key: "many64", mode: "many64"},
	{key: "smart", mode: "smart"},
}

// startCommand is hsflood's command that starts k against the victim
// with key at port.
func (k floodKind) startCommand(port int, key identity.PublicKey) string {
	cmd := fmt.Sprintf("start %s [%s]:%d %s", k.mode, fvUnder, port, key)
	if k.rate > 0 {
		cmd += " " + strconv.FormatFloat(k.rate, 'f', -1, 64)
	}
	return cmd
}

// floodVictimd is one daemon under attack, and its peer.
type floodVictimd struct {
	key, name string
	victim    *proc
	peer      *proc
	pub       identity.PublicKey
	port      int
	overlay   string // the victim's overlay address (iperf3 and ping target)
	sock      string // admin socket (tomoe only)
	traffic   func(context.Context, int, float64) (Run, error)
}

// floodParams are the flood part's settings.
type floodParams struct {
	repeats      int
	runSeconds   float64
	pingCount    int
	pingInterval float64
	settle       time.Duration
	profSeconds  int
	profDir      string
}

// runFloodPart measures the flood part with the run's settings.
func (e *env) runFloodPart(ctx context.Context, o options, b bins, res *Results, profSecs int, profDir string) (*FloodResult, error) {
	started := time.Now()
	p := floodParams{repeats: res.Repeats, runSeconds: res.RunSeconds, pingCount: 500, pingInterval: 0.01, settle: 2 * time.Second,
		profSeconds: profSecs, profDir: profDir}
	if o.quick {
		p.pingCount, p.settle = 100, time.Second
	}
	fr := &FloodResult{
		PartRun: newPartRun(started, o.quick, p.repeats, p.runSeconds, p.pingCount), Streams: 1,
		PingInterval: p.pingInterval, SettleSeconds: p.settle.Seconds(),
		Sources: floodSources, SmartSources: floodSmartSources, Pool: floodPool, Batch: floodBatch, PacedRate: floodPacedRate,
		Machine: res.Machine, Versions: res.Versions,
	}
	if err := e.floodPart(ctx, b, p, fr); err != nil {
		return nil, err
	}
	fr.LoadavgEnd = loadavg()
	fr.Machine.LoadavgEnd = fr.LoadavgEnd
	fr.DurationSeconds = time.Since(started).Seconds()
	return fr, nil
}

// floodFail records an error of the flood part that does not end it.
func (e *env) floodFail(fr *FloodResult, what string, err error) {
	e.log.Error(what, "err", err)
	fr.Errors = append(fr.Errors, what+": "+err.Error())
}

// setupFloodNet creates the four namespaces: victim, peer and attacker on
// one bridge, the attacker's source prefixes local to it and routed to it
// by the victim.
func setupFloodNet(ctx context.Context) error {
	steps := [][]string{
		{"ip", "netns", "add", floodSwitch},
		{"ip", "-n", floodSwitch, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", floodSwitch, "link", "set", "lo", "up"},
		{"ip", "-n", floodSwitch, "link", "set", "br0", "up"},
	}
	for _, n := range []struct{ ns, port, addr string }{{floodVictim, "to-victim", fvUnder}, {floodPeer, "to-peer", fpUnder}, {floodAttacker, "to-attacker", faUnder}} {
		steps = append(steps,
			[]string{"ip", "netns", "add", n.ns},
			[]string{"ip", "-n", n.ns, "link", "add", "veth0", "mtu", "1500", "type", "veth", "peer", "name", n.port, "netns", floodSwitch},
			[]string{"ip", "-n", floodSwitch, "link", "set", n.port, "master", "br0"},
			[]string{"ip", "-n", floodSwitch, "link", "set", n.port, "up"},
			[]string{"ip", "-n", n.ns, "link", "set", "lo", "up"},
			[]string{"ip", "-n", n.ns, "addr", "add", n.addr + "/64", "dev", "veth0", "nodad"},
			[]string{"ip", "-n", n.ns, "link", "set", "veth0", "up"})
	}
	for _, prefix := range []string{floodOne64, floodMany64} {
		steps = append(steps,
			[]string{"ip", "-n", floodAttacker, "-6", "route", "add", "local", prefix, "dev", "lo"},
			[]string{"ip", "-n", floodVictim, "-6", "route", "add", prefix, "via", faUnder})
	}
	if err := runSteps(ctx, "flood namespaces", steps); err != nil {
		return err
	}
	for _, ns := range []string{floodPeer, floodAttacker} {
		if err := waitFor(ctx, 10*time.Second, ns+" -> victim underlay ping", func() bool {
			_, err := inNS(ctx, ns, "ping", "-n", "-c", "1", "-W", "1", fvUnder)
			return err == nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// setupFloodTomoe starts kernel-mode tomoe in the victim and the peer,
// static peers of each other; the victim allows the peer tcp 5201 and
// icmp, nothing else.
func (e *env) setupFloodTomoe(ctx context.Context, tomoeBin string, server **proc) (*floodVictimd, error) {
	victim, err := e.newTomoeNode("flood-victim")
	if err != nil {
		return nil, err
	}
	peer, err := e.newTomoeNode("flood-peer")
	if err != nil {
		return nil, err
	}
	if err := victim.vpnNodeConfig("kernel", 4610, "", []peerEntry{{peer.pub, "[" + fpUnder + "]:4610"}},
		[]string{allowRule(peer.pub, "tcp", strconv.Itoa(iperfPort)), allowRule(peer.pub, "icmp", "")}, ""); err != nil {
		return nil, err
	}
	if err := peer.vpnNodeConfig("kernel", 4610, "", []peerEntry{{victim.pub, "[" + fvUnder + "]:4610"}}, nil, ""); err != nil {
		return nil, err
	}
	pv, err := e.startNode(ctx, tomoeBin, floodVictim, "tomoe-flood-victim", victim)
	if err != nil {
		return nil, err
	}
	pp, err := e.startNode(ctx, tomoeBin, floodPeer, "tomoe-flood-peer", peer)
	if err != nil {
		pv.stop(5 * time.Second)
		return nil, err
	}
	target := victim.pub.Address().String()
	if err := warmUp(ctx, "ping over tomoe to the victim", kernelPing(floodPeer, 1, target)); err != nil {
		pp.stop(5 * time.Second)
		pv.stop(5 * time.Second)
		return nil, err
	}
	return &floodVictimd{
		key: "tomoe", name: "tomoe", victim: pv, peer: pp, pub: victim.pub, port: 4610, overlay: target, sock: victim.sock,
		traffic: e.iperfTraffic(floodPeer, floodVictim, target, server),
	}, nil
}

// setupFloodWireGuard starts plain wireguard-go in the victim (wgv) and
// the peer (wgp), the reference: what the same flood costs stock
// WireGuard.
func (e *env) setupFloodWireGuard(ctx context.Context, wgBin string, server **proc) (*floodVictimd, error) {
	v, err := e.startWireGuardGo(ctx, wgBin, floodVictim, "wgv")
	if err != nil {
		return nil, err
	}
	p, err := e.startWireGuardGo(ctx, wgBin, floodPeer, "wgp")
	if err != nil {
		return nil, err
	}
	const port = 51820
	ep := func(a string) string { return "[" + a + "]:" + strconv.Itoa(port) }
	if err := v.configure(ctx, e.work, port, wgFloodVictim+"/64", []wgPeer{{p.pub, ep(fpUnder), wgFloodPeer + "/128"}}); err != nil {
		return nil, err
	}
	if err := p.configure(ctx, e.work, port, wgFloodPeer+"/64", []wgPeer{{v.pub, ep(fvUnder), wgFloodVictim + "/128"}}); err != nil {
		return nil, err
	}
	if err := warmUp(ctx, "ping over wireguard-go to the victim", kernelPing(floodPeer, 1, wgFloodVictim)); err != nil {
		return nil, err
	}
	return &floodVictimd{
		key: "wireguard-go", name: "wireguard-go", victim: v.proc, peer: p.proc, pub: v.pub, port: port, overlay: wgFloodVictim,
		traffic: e.iperfTraffic(floodPeer, floodVictim, wgFloodVictim, server),
	}, nil
}

// floodPart sets up the namespaces, both victims and the attacker,
// measures every victim under every kind of flood, interleaved, and
// profiles the tomoe victim under the flood that hurt it most.
func (e *env) floodPart(ctx context.Context, b bins, p floodParams, fr *FloodResult) error {
	log := e.log
	log.Info("flood: setting up victim, peer and attacker")
	if err := setupFloodNet(ctx); err != nil {
		return err
	}
	server, err := e.iperfServer(ctx, floodVictim)
	if err != nil {
		return err
	}
	var victims []*floodVictimd
	defer func() {
		for _, v := range victims {
			v.peer.stop(10 * time.Second)
			v.victim.stop(10 * time.Second)
		}
		server.stop(5 * time.Second)
	}()
	if v, err := e.setupFloodTomoe(ctx, b.tomoe, &server); err != nil {
		e.floodFail(fr, "flood: tomoe setup", err)
	} else {
		victims = append(victims, v)
	}
	if v, err := e.setupFloodWireGuard(ctx, b.wireguardGo, &server); err != nil {
		e.floodFail(fr, "flood: wireguard-go setup", err)
	} else {
		victims = append(victims, v)
	}
	if len(victims) == 0 {
		return errors.New("flood: no victim could be set up")
	}
	atk, err := e.startAttacker(ctx, b.hsflood)
	if err != nil {
		return err
	}
	defer atk.p.stop(5 * time.Second)
	if ctx.Err() != nil {
		return ctx.Err()
	}

	type cell struct {
		v *floodVictimd
		k floodKind
		c *FloodCase
	}
	var cells []cell
	for _, v := range victims {
		for _, k := range floodKinds {
			c := &FloodCase{Victim: v.key, Flood: k.key}
			fr.Cases = append(fr.Cases, c)
			cells = append(cells, cell{v, k, c})
		}
	}
	for _, v := range victims {
		if _, err := v.traffic(ctx, 1, warmUpSeconds); err != nil {
			log.Warn("warm-up run failed", "victim", v.name, "err", err)
		}
	}
	for rep := 1; rep <= p.repeats; rep++ {
		order := slices.Clone(cells)
		if rep%2 == 0 {
			slices.Reverse(order)
		}
		for _, x := range order {
			log.Info("flood", "victim", x.v.name, "flood", x.k.key, "repeat", rep)
			r, err := e.floodRun(ctx, atk, x.v, x.k, p)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				log.Error("flood run failed", "victim", x.v.name, "flood", x.k.key, "err", err)
				x.c.Errors = append(x.c.Errors, fmt.Sprintf("repeat %d: %v", rep, err))
				continue
			}
			r.Repeat = rep
			x.c.Runs = append(x.c.Runs, r)
			log.Info("result", "victim", x.v.name, "flood", x.k.key, "gbit_s", gbit(r.Throughput.BitsPerSecond),
				"attacker_pps", int(r.During.rate(r.During.AttackerPackets)), "x25519_s", int(r.During.rate(r.During.Counters["x25519"])),
				"ping_p50_ms", r.Ping.MedianMs)
			sleep(ctx, time.Second)
		}
	}
	if v := victims[0]; v.key == "tomoe" {
		fr.ProfileSeconds = p.profSeconds
		for _, k := range floodKinds {
			if k.mode == "" || k.closed {
				continue
			}
			log.Info("flood: profiling the tomoe victim", "flood", k.key, "seconds", p.profSeconds)
			if err := e.profileFlood(ctx, atk, v, k, b.tomoe, p, fr); err != nil {
				e.floodFail(fr, "flood: profile under "+k.key, err)
			}
		}
	}
	return ctx.Err()
}

// attacker is the running hsflood process.
type attacker struct {
	p  *proc
	mu sync.Mutex // one command at a time on its pipes
}

func (e *env) startAttacker(ctx context.Context, bin string) (*attacker, error) {
	p, err := e.start(floodAttacker, "hsflood", true, nil, bin,
		"-one64", floodOne64, "-many64", floodMany64, "-sources", strconv.Itoa(floodSources),
		"-smart-sources", strconv.Itoa(floodSmartSources), "-pool", strconv.Itoa(floodPool), "-batch", strconv.Itoa(floodBatch))
	if err != nil {
		return nil, err
	}
	if _, err := readLine(ctx, p, 30*time.Second); err != nil {
		return nil, err
	}
	return &attacker{p: p}, nil
}

// do sends one command to hsflood and decodes its answer into out.
func (a *attacker) do(ctx context.Context, out any, command string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, err := fmt.Fprintln(a.p.stdin, command); err != nil {
		return fmt.Errorf("hsflood: %w", err)
	}
	line, err := readLine(ctx, a.p, 60*time.Second)
	if err != nil {
		return err
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal([]byte(line), &e) == nil && e.Error != "" {
		return fmt.Errorf("hsflood %s: %s", command, e.Error)
	}
	if err := json.Unmarshal([]byte(line), out); err != nil {
		return fmt.Errorf("hsflood said %q: %w", line, err)
	}
	return nil
}

// floodStats is hsflood's answer to stats and stop.
type floodStats struct {
	Packets     float64 `json:"packets"`
	SendErrors  float64 `json:"send_errors"`
	Replies     float64 `json:"replies"`
	Cookies     float64 `json:"cookies"`
	WithCookie  float64 `json:"sources_with_cookie"`
	MAC2Packets float64 `json:"mac2_packets"`
}

// floodRun measures v under flood k once: the flood starts and settles,
// then iperf3 runs through the overlay, then ping, all under the flood.
func (e *env) floodRun(ctx context.Context, atk *attacker, v *floodVictimd, k floodKind, p floodParams) (r FloodRun, err error) {
	for _, pr := range []*proc{v.victim, v.peer, atk.p} {
		if err := pr.failure(); err != nil {
			return r, err
		}
	}
	if k.mode != "" {
		port := v.port
		if k.closed {
			port = floodClosedPort
		}
		var start FloodStart
		if err := atk.do(ctx, &start, k.startCommand(port, v.pub)); err != nil {
			return r, err
		}
		r.Start = &start
		defer func() {
			var st floodStats
			if serr := atk.do(ctx, &st, "stop"); serr != nil && err == nil {
				err = serr
			}
		}()
		sleep(ctx, p.settle)
	}
	s0, err := e.floodSnapshot(ctx, atk, v, k)
	if err != nil {
		return r, err
	}
	if r.Throughput, err = v.traffic(ctx, 1, p.runSeconds); err != nil {
		return r, err
	}
	s1, err := e.floodSnapshot(ctx, atk, v, k)
	if err != nil {
		return r, err
	}
	// No reply at all is a result here (Received 0), not a failure.
	r.Ping, _ = kernelPingEvery(floodPeer, p.pingCount, p.pingInterval, v.overlay)(ctx)
	s2, err := e.floodSnapshot(ctx, atk, v, k)
	if err != nil {
		return r, err
	}
	r.During, r.PingWindow = s1.since(s0), s2.since(s1)
	return r, nil
}

// floodSnapshot is what the counters say at one moment.
type floodSnapshot struct {
	at          time.Time
	cpu         map[string]float64 // victim, peer, attacker: process CPU seconds
	machine     float64
	flood       floodStats
	counters    map[string]float64 // the tomoe victim's handshake counters
	victimUDP   map[string]float64 // Udp6* of /proc/net/snmp6 in the victim's namespace
	attackerUDP map[string]float64
}

func (e *env) floodSnapshot(ctx context.Context, atk *attacker, v *floodVictimd, k floodKind) (floodSnapshot, error) {
	s := floodSnapshot{cpu: map[string]float64{}}
	if k.mode != "" {
		if err := atk.do(ctx, &s.flood, "stats"); err != nil {
			return s, err
		}
	}
	if v.sock != "" {
		text, err := adminapi.NewClient(v.sock).Metrics(ctx)
		if err != nil {
			return s, fmt.Errorf("victim metrics: %w", err)
		}
		s.counters = handshakeCounters(text)
	}
	var err error
	if s.victimUDP, err = udp6Counters(v.victim.Pid()); err != nil {
		return s, err
	}
	if s.attackerUDP, err = udp6Counters(atk.p.Pid()); err != nil {
		return s, err
	}
	for _, x := range []struct {
		key string
		p   *proc
	}{{"victim", v.victim}, {"peer", v.peer}, {"attacker", atk.p}} {
		if s.cpu[x.key], err = cpuSeconds(x.p.Pid()); err != nil {
			return s, err
		}
	}
	if s.machine, err = machineBusySeconds(); err != nil {
		return s, err
	}
	s.at = time.Now()
	return s, nil
}

// since is the window from s0 to s.
func (s floodSnapshot) since(s0 floodSnapshot) FloodWindow {
	w := FloodWindow{
		Seconds: s.at.Sub(s0.at).Seconds(), CPUSeconds: diff(s.cpu, s0.cpu), MachineCPUSeconds: s.machine - s0.machine,
		AttackerPackets: s.flood.Packets - s0.flood.Packets, MAC2Packets: s.flood.MAC2Packets - s0.flood.MAC2Packets,
		CookiesOpened: s.flood.Cookies - s0.flood.Cookies, SourcesWithCookie: s.flood.WithCookie,
		VictimUDP: diff(s.victimUDP, s0.victimUDP), AttackerUDP: diff(s.attackerUDP, s0.attackerUDP),
	}
	if s.counters != nil {
		w.Counters = diff(s.counters, s0.counters)
	}
	return w
}

func diff(b, a map[string]float64) map[string]float64 {
	out := make(map[string]float64, len(b))
	for k, v := range b {
		out[k] = v - a[k]
	}
	return out
}

// handshakeCounters picks tomoe's handshake counters out of its
// Prometheus metrics: x25519, cookies_sent and initiations_RESULT.
func handshakeCounters(text string) map[string]float64 {
	out := map[string]float64{}
	for line := range strings.Lines(text) {
		name, val, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		switch {
		case name == "tomoe_handshake_x25519_total":
			out["x25519"] = v
		case name == "tomoe_handshake_cookies_sent_total":
			out["cookies_sent"] = v
		case strings.HasPrefix(name, `tomoe_handshake_initiations_total{result="`):
			r := strings.TrimSuffix(strings.TrimPrefix(name, `tomoe_handshake_initiations_total{result="`), `"}`)
			out["initiations_"+r] = v
		}
	}
	return out
}

// udp6Counters reads the Udp6 counters of /proc/net/snmp6 in the network
// namespace of process pid, without their prefix (InDatagrams, NoPorts,
// InErrors, RcvbufErrors, OutDatagrams, ...).
func udp6Counters(pid int) (map[string]float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/snmp6", pid))
	if err != nil {
		return nil, err
	}
	return parseUDP6(string(b)), nil
}

func parseUDP6(text string) map[string]float64 {
	out := map[string]float64{}
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) != 2 || !strings.HasPrefix(f[0], "Udp6") {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			out[strings.TrimPrefix(f[0], "Udp6")] = v
		}
	}
	return out
}

// profileFlood runs v under flood k once more, with iperf3 for
// profSeconds+3 s and a CPU profile of the victim for profSeconds of it,
// and adds it to fr.Profiles.
func (e *env) profileFlood(ctx context.Context, atk *attacker, v *floodVictimd, k floodKind, tomoeBin string, p floodParams, fr *FloodResult) (err error) {
	var start FloodStart
	if err := atk.do(ctx, &start, k.startCommand(v.port, v.pub)); err != nil {
		return err
	}
	defer func() {
		var st floodStats
		if serr := atk.do(ctx, &st, "stop"); serr != nil && err == nil {
			err = serr
		}
	}()
	sleep(ctx, p.settle)
	path := filepath.Join(p.profDir, "tomoe-flood-victim-"+k.key+".pprof")
	var (
		wg      sync.WaitGroup
		run     Run
		runErr  error
		profErr error
	)
	wg.Go(func() { run, runErr = v.traffic(ctx, 1, float64(p.profSeconds+3)) })
	sleep(ctx, 1500*time.Millisecond)
	wg.Go(func() { profErr = fetchProfile(ctx, v.sock, p.profSeconds, path) })
	wg.Wait()
	if err := errors.Join(runErr, profErr); err != nil {
		return err
	}
	side, err := summarize(ctx, tomoeBin, path)
	if err != nil {
		return err
	}
	all, err := pprofTop(ctx, tomoeBin, path, "-noinlines", "-nodecount=100000", "-nodefraction=0", "-edgefraction=0")
	if err != nil {
		return err
	}
	side.Components = sharesBy(all, floodComponentOf)
	side.File = path
	side.Role = "tomoe victim under flood " + k.key + " with iperf3 from its peer"
	fr.Profiles = append(fr.Profiles, FloodProfile{Flood: k.key, Run: run, Side: side})
	return nil
}

// floodComponentOf splits the victim's time finer than componentOf where
// the flood's work shows: X25519 apart from the data plane's crypto, the
// Bind's screening apart from the rest of tomoe.
func floodComponentOf(fn string) string {
	switch {
	case strings.Contains(fn, "edwards25519") || strings.Contains(fn, "curve25519") || strings.Contains(fn, "crypto/ecdh"):
		return "X25519 (opening initiations)"
	case strings.Contains(fn, "blake2s"):
		return "BLAKE2s (mac1, mac2, cookies, handshake hashes)"
	case strings.Contains(fn, "chacha20") || strings.Contains(fn, "poly1305"):
		return "ChaCha20-Poly1305 (data plane, cookie replies)"
	case strings.HasPrefix(fn, "github.com/tomoe-net/tomoe/internal/transport"):
		return "tomoe transport (Bind: screening, budgets, queues)"
	case strings.HasPrefix(fn, "github.com/tomoe-net/tomoe/internal/ratelimit"):
		return "tomoe ratelimit (per-/64 budgets)"
	}
	return componentOf(fn)
}
