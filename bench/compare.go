package main

// This file is the compare part (issue 15): on one topology and one
// overlay MTU, in one run, tomoe against plain wireguard-go and the other
// open overlays Debian ships. Four lines of three namespaces each, A — M
// — B as in the bridge part (setupLine), M forwarding:
//
//	cw  raw            iperf3 A -> B's underlay address, routed by M
//	    wireguard-go   direct (wgda/wgdb) and through a hub in M (setupWireGuardOn)
//	    tomoe defaults kernel mode, a config with nothing but keys, peers, allow
//	    tomoe userspace usbench (gVisor stacks), tunedConfig
//	    yggdrasil      ygg0, B listens on tcp://B:12345, A peers with it
//	    nebula         neb0, 10.97.0.0/24, certificates from nebula-cert, static_host_map
//	ck  tomoe tuned    kernel mode, defaults + tunedConfig (its own line: two
//	                   kernel-mode nodes in one namespace share its ip rules)
//	cu  tomoe relay    through a bridge in M over UDP (M drops forwarded UDP)
//	ct  tomoe relay    the same over TCP (M also drops A's UDP)

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/tomoe-net/tomoe/internal/config"
)

// tunedConfig is what "tomoe kernel, tuned" (and the userspace scenario)
// set on top of tomoe's defaults: the one place for tuned keys. It is
// merged over the generated config table by table, so any key of
// tomoe.toml may go here. Today it only sets the overlay MTU that plain
// wireguard-go, yggdrasil and nebula use in this part (the default, 1400,
// leaves room for the bridge relay's header).
const tunedConfig = `
[tun]
mtu = 1420
`

// Settings of the compare part.
const (
	compareRunSeconds   = 8 // full runs; -quick uses its own 3 s
	comparePingCount    = 200
	comparePingInterval = 10 * time.Millisecond
	yggPort             = 12345
	nebulaPort          = 4242
	nebulaA, nebulaB    = "10.97.0.1", "10.97.0.2"
	wgProfPort          = 51832
	wgProfA, wgProfB    = "fd95::1", "fd95::2"
)

// CompareResult is the compare part. Like the bridge, VPN and flood parts
// it carries its own date and settings: `-only compare` replaces just it.
type CompareResult struct {
	PartRun
	Streams        []int    `json:"streams"`
	PingIntervalMs float64  `json:"ping_interval_ms"`
	Machine        Machine  `json:"machine"`
	Versions       Versions `json:"versions"`
	// Others are the Debian package versions of yggdrasil and nebula.
	Others map[string]string `json:"other_versions,omitempty"`
	// DefaultMTU is tomoe's default overlay MTU; TunedConfig the TOML
	// the tuned scenario adds.
	DefaultMTU  int    `json:"default_mtu"`
	TunedConfig string `json:"tuned_config"`
	// Scenarios are keyed raw, wg-direct, tomoe-kernel-default,
	// tomoe-kernel-tuned, tomoe-userspace, yggdrasil, nebula, wg-hub,
	// tomoe-relay-udp and tomoe-relay-tcp.
	Scenarios []*ScenarioResult `json:"scenarios"`
	// MTUs is each scenario's overlay MTU, by key (none for raw).
	MTUs map[string]int `json:"mtus"`
	// Profiles are CPU profiles of tomoe kernel mode (defaults) and of
	// wireguard-go (bench/wgprof), each during one extra iperf3 run.
	Profiles []*CompareProfile `json:"profiles,omitempty"`
	Errors   []string          `json:"errors,omitempty"`
}

// CompareProfile is the profiles of one scenario's two daemons.
type CompareProfile struct {
	Name string `json:"name"`
	*ProfileResult
}

// scenario returns the result with key, or nil.
func (c *CompareResult) scenario(key string) *ScenarioResult {
	if c == nil {
		return nil
	}
	return byKey(c.Scenarios, key)
}

func (c *CompareResult) fail(log interface{ Error(string, ...any) }, what string, err error) {
	log.Error(what, "err", err)
	c.Errors = append(c.Errors, what+": "+err.Error())
}

// runComparePart measures the compare part with the run's settings.
func (e *env) runComparePart(ctx context.Context, o options, b bins, res *Results, profSecs int, profDir string) (*CompareResult, error) {
	started := time.Now()
	cr := &CompareResult{
		PartRun: newPartRun(started, o.quick, res.Repeats, compareRunSeconds, comparePingCount),
		Streams: streamCounts, PingIntervalMs: float64(comparePingInterval.Milliseconds()),
		Machine: res.Machine, Versions: res.Versions,
		DefaultMTU: config.DefaultMTU, TunedConfig: strings.TrimSpace(tunedConfig), MTUs: map[string]int{},
	}
	if o.quick {
		cr.RunSeconds = res.RunSeconds
	}
	root, err := moduleRoot(ctx)
	if err != nil {
		return nil, err
	}
	wgprof := filepath.Join(e.work, "wgprof")
	if err := build(ctx, root, wgprof, "./bench/wgprof"); err != nil {
		return nil, err
	}
	if profDir != e.work {
		if err := copyFile(wgprof, filepath.Join(profDir, "wgprof")); err != nil {
			return nil, err
		}
	}
	if err := e.installOthers(ctx); err != nil {
		cr.fail(e.log, "compare: installing yggdrasil and nebula", err)
	}
	cr.Others = otherVersions(ctx)
	if err := e.compare(ctx, b, wgprof, o.profStreams, profSecs, profDir, cr); err != nil {
		return nil, err
	}
	cr.LoadavgEnd = loadavg()
	cr.Machine.LoadavgEnd = cr.LoadavgEnd
	cr.DurationSeconds = time.Since(started).Seconds()
	return cr, nil
}

// otherPackages are the Debian packages of the other overlays, and the
// programs the part runs from each.
var otherPackages = []struct{ pkg, bin string }{
	{"yggdrasil", "yggdrasil"}, {"nebula", "nebula"}, {"nebula", "nebula-cert"},
}

// installOthers installs yggdrasil and nebula with apt-get if a program
// of theirs is missing.
func (e *env) installOthers(ctx context.Context) error {
	var missing []string
	for _, p := range otherPackages {
		if _, err := exec.LookPath(p.bin); err != nil && !slices.Contains(missing, p.pkg) {
			missing = append(missing, p.pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	e.log.Info("compare: installing with apt-get", "packages", missing)
	cmd := exec.CommandContext(ctx, "apt-get", append([]string{"install", "-y", "-qq", "--no-install-recommends"}, missing...)...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get install %s: %w\n%s", strings.Join(missing, " "), err, out)
	}
	return nil
}

// otherVersions are the installed versions of the other overlays'
// packages.
func otherVersions(ctx context.Context) map[string]string {
	out := map[string]string{}
	for _, p := range otherPackages {
		if _, ok := out[p.pkg]; ok {
			continue
		}
		v, err := run(ctx, "dpkg-query", "-W", "-f", "${Version}", p.pkg)
		if err != nil {
			v = "not installed"
		}
		out[p.pkg] = strings.TrimSpace(v)
	}
	return out
}

// compare sets up every scenario of the part, measures them interleaved,
// pings through each and profiles tomoe and wireguard-go. A scenario
// whose set-up fails is recorded in cr.Errors and left out.
func (e *env) compare(ctx context.Context, b bins, wgprof string, profStreams, profSecs int, profDir string, cr *CompareResult) error {
	log := e.log
	var (
		scenarios []*scenario
		lines     []*line
	)
	defer func() {
		for _, sc := range scenarios {
			for _, p := range sc.procs() {
				p.stop(10 * time.Second)
			}
		}
		for _, l := range lines {
			l.server.stop(5 * time.Second)
		}
	}()
	// add takes sc into the part with ns's system ping (or ping) to its
	// target.
	add := func(sc *scenario, mtu int, ns string, ping func(context.Context) (PingResult, error)) {
		if ping == nil {
			ping = kernelPingEvery(ns, comparePingCount, comparePingInterval.Seconds(), sc.res.Target)
		}
		sc.pings = []func(context.Context) (PingResult, error){ping}
		if mtu > 0 {
			cr.MTUs[sc.res.Key] = mtu
		}
		scenarios = append(scenarios, sc)
	}
	newLine := func(name string, blk block) (*line, error) {
		l, err := e.setupLine(ctx, name, blk)
		if l != nil && l.server != nil {
			lines = append(lines, l)
		}
		return l, err
	}

	log.Info("compare: setting up raw, wireguard-go, tomoe defaults and userspace, yggdrasil, nebula")
	l, err := newLine("cw", blockNone)
	if err != nil {
		return err
	}
	pr := pair{l.a, l.b, lineA, lineB}
	add(&scenario{res: &ScenarioResult{Key: "raw", Name: "raw veth (routed by M)", Target: lineB},
		traffic: e.iperfTraffic(l.a, l.b, lineB, &l.server)}, 0, l.a, nil)
	var hub *scenario
	wgs, err := e.setupWireGuardOn(ctx, b.wireguardGo, l, 1)
	if err != nil {
		cr.fail(log, "compare: wireguard-go setup", err)
	} else {
		add(wgs[0], mtu, l.a, nil)
		hub = wgs[1]
	}
	defaults := tomoePairSpec{key: "tomoe-kernel-default", name: "tomoe kernel, defaults", label: "cd", port: config.DefaultPort, config: compareConfig("kernel", "")}
	var defaultNodes []*tomoeNode
	if sc, nodes, err := e.setupTomoeKernelPair(ctx, b.tomoe, pr, defaults, 1); err != nil {
		cr.fail(log, "compare: "+defaults.name+" setup", err)
	} else {
		sc.traffic = e.iperfTraffic(l.a, l.b, sc.res.Target, &l.server)
		add(sc, config.DefaultMTU, l.a, nil)
		defaultNodes = nodes
	}

	log.Info("compare: setting up tomoe tuned")
	tuned := tomoePairSpec{key: "tomoe-kernel-tuned", name: "tomoe kernel, tuned", label: "ck", port: config.DefaultPort, config: compareConfig("kernel", tunedConfig)}
	if lk, err := newLine("ck", blockNone); err != nil {
		cr.fail(log, "compare: "+tuned.name+" setup", err)
	} else if sc, _, err := e.setupTomoeKernelPair(ctx, b.tomoe, pair{lk.a, lk.b, lineA, lineB}, tuned, 1); err != nil {
		cr.fail(log, "compare: "+tuned.name+" setup", err)
	} else {
		sc.traffic = e.iperfTraffic(lk.a, lk.b, sc.res.Target, &lk.server)
		add(sc, tunedMTU(), lk.a, nil)
	}

	user := tomoePairSpec{key: "tomoe-userspace", name: "tomoe userspace", label: "cs", port: 4611, config: compareConfig("userspace", tunedConfig)}
	if sc, nodes, err := e.setupTomoeUserspacePair(ctx, b.usbench, b.tomoe, pr, user, 1); err != nil {
		cr.fail(log, "compare: "+user.name+" setup", err)
	} else {
		host, _, _ := strings.Cut(strings.TrimPrefix(sc.res.Target, "["), "]")
		add(sc, tunedMTU(), l.a, tomoePingEvery(b.tomoe, nodes[0].sock, comparePingCount, comparePingInterval, host))
	}
	if sc, err := e.setupYggdrasil(ctx, l); err != nil {
		cr.fail(log, "compare: yggdrasil setup", err)
	} else {
		add(sc, mtu, l.a, nil)
	}
	if sc, err := e.setupNebula(ctx, l); err != nil {
		cr.fail(log, "compare: nebula setup", err)
	} else {
		add(sc, mtu, l.a, nil)
	}
	if hub != nil {
		add(hub, mtu, l.a, nil)
	}

	type relay struct {
		sc   *scenario
		tl   *tomoeLine
		want string
	}
	var relays []relay
	for _, r := range []struct {
		key, name, line string
		blk             block
		transport       string
	}{
		{"tomoe-relay-udp", "tomoe relay, UDP", "cu", blockDirect, "udp"},
		{"tomoe-relay-tcp", "tomoe relay, TCP", "ct", blockAUDP, "tcp"},
	} {
		log.Info("compare: setting up", "scenario", r.name)
		tl, err := e.setupTomoeLine(ctx, b.tomoe, r.line, r.blk)
		if tl != nil {
			lines = append(lines, tl.l)
		}
		if err != nil {
			cr.fail(log, "compare: "+r.name+" setup", err)
			continue
		}
		want := relayVia(r.transport)
		sc, err := e.tomoeScenario(ctx, tl, r.key, r.name, want, 1)
		if err != nil {
			for _, p := range []*proc{tl.pA, tl.pB, tl.pBridge} {
				p.stop(5 * time.Second)
			}
			cr.fail(log, "compare: "+r.name+" setup", err)
			continue
		}
		add(sc, mtu, tl.l.a, nil)
		relays = append(relays, relay{sc, tl, want})
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for _, sc := range scenarios {
		cr.Scenarios = append(cr.Scenarios, sc.res)
	}

	warmUpRuns(ctx, log, scenarios)
	if err := measureInterleaved(ctx, log, scenarios, cr.Streams, cr.Repeats, cr.RunSeconds); err != nil {
		return err
	}
	for _, r := range relays {
		notePath(ctx, r.sc, r.tl, r.want)
	}
	measurePings(ctx, log, scenarios)

	if defaultNodes != nil {
		sc := scenarios[slices.IndexFunc(scenarios, func(s *scenario) bool { return s.res.Key == defaults.key })]
		log.Info("compare: profiling tomoe kernel mode (defaults)", "seconds", profSecs, "streams", profStreams)
		p, err := e.profileSides(ctx, sc, []profileTarget{
			{defaultNodes[0].sock, filepath.Join(profDir, "compare-tomoe-sender.pprof"), "sender (namespace A: encrypts)"},
			{defaultNodes[1].sock, filepath.Join(profDir, "compare-tomoe-receiver.pprof"), "receiver (namespace B: decrypts)"},
		}, b.tomoe, profSecs, profStreams)
		if err != nil {
			cr.fail(log, "compare: tomoe profile", err)
		} else {
			cr.Profiles = append(cr.Profiles, &CompareProfile{Name: defaults.name, ProfileResult: p})
		}
	}
	if ctx.Err() == nil {
		log.Info("compare: profiling wireguard-go (bench/wgprof)", "seconds", profSecs, "streams", profStreams)
		p, err := e.profileWireGuard(ctx, wgprof, l, profSecs, profStreams, profDir)
		if err != nil {
			cr.fail(log, "compare: wireguard-go profile", err)
		} else {
			cr.Profiles = append(cr.Profiles, &CompareProfile{Name: "wireguard-go (bench/wgprof: the same library, with pprof)", ProfileResult: p})
		}
	}
	return ctx.Err()
}

// tunedMTU is the overlay MTU tunedConfig gives, or the default.
func tunedMTU() int {
	var c struct {
		TUN struct {
			MTU int `toml:"mtu"`
		} `toml:"tun"`
	}
	if toml.Unmarshal([]byte(tunedConfig), &c) != nil || c.TUN.MTU == 0 {
		return config.DefaultMTU
	}
	return c.TUN.MTU
}

// compareConfig returns a config writer for mode: tomoe's defaults, with
// only what a node of the benchmark cannot do without (its key and admin
// socket and policy state files, the peer, an allow-everything rule, the
// mode and the UDP port where they differ from the defaults), and the
// TOML overlay merged over that.
func compareConfig(mode, overlay string) func(*tomoeNode, int, []peerEntry) error {
	return func(n *tomoeNode, port int, peers []peerEntry) error {
		var ps []any
		for _, p := range peers {
			ps = append(ps, map[string]any{"public_key": p.key.String(), "endpoint": p.endpoint})
		}
		c := map[string]any{
			"key_file": filepath.Join(n.dir, "node.key"),
			"admin":    map[string]any{"socket": n.sock},
			"policy": map[string]any{
				"state_file": filepath.Join(n.dir, "policy.json"),
				"allow":      []any{map[string]any{"from": "*"}},
			},
			"peers": ps,
		}
		if mode != config.Default().TUN.Mode.String() {
			c["tun"] = map[string]any{"mode": mode}
		}
		if port != config.DefaultPort {
			c["listen"] = map[string]any{"udp": "0.0.0.0:" + strconv.Itoa(port)}
		}
		var over map[string]any
		if err := toml.Unmarshal([]byte(overlay), &over); err != nil {
			return fmt.Errorf("tuned config: %w", err)
		}
		mergeTables(c, over)
		b, err := toml.Marshal(c)
		if err != nil {
			return err
		}
		return os.WriteFile(n.config, b, 0o600)
	}
}

// mergeTables sets every key of over in dst, merging tables that both
// have.
func mergeTables(dst, over map[string]any) {
	for k, v := range over {
		sub, ok := v.(map[string]any)
		if d, isTable := dst[k].(map[string]any); ok && isTable {
			mergeTables(d, sub)
			continue
		}
		dst[k] = v
	}
}

// setupYggdrasil runs yggdrasil in A and B of line l: fresh keys from
// `yggdrasil -genconf`, B listening on TCP, A peering with it, interface
// ygg0 with the part's MTU, no multicast discovery and no admin socket.
func (e *env) setupYggdrasil(ctx context.Context, l *line) (*scenario, error) {
	listen := fmt.Sprintf("tcp://%s:%d", lineB, yggPort)
	var procs []*proc
	var target string
	for _, side := range []struct {
		ns, label string
		set       map[string]any
	}{
		{l.b, "yggdrasil-b", map[string]any{"Listen": []string{listen}}},
		{l.a, "yggdrasil-a", map[string]any{"Peers": []string{listen}}},
	} {
		out, err := run(ctx, "yggdrasil", "-genconf", "-json")
		if err != nil {
			return nil, err
		}
		var c map[string]any
		if err := json.Unmarshal([]byte(out), &c); err != nil {
			return nil, fmt.Errorf("yggdrasil -genconf -json: %w", err)
		}
		maps.Copy(c, map[string]any{"IfName": "ygg0", "IfMTU": mtu, "MulticastInterfaces": []any{}, "AdminListen": "none"})
		maps.Copy(c, side.set)
		js, err := json.MarshalIndent(c, "", "  ")
		if err != nil {
			return nil, err
		}
		path := filepath.Join(e.work, side.label+".conf")
		if err := os.WriteFile(path, js, 0o600); err != nil {
			return nil, err
		}
		if side.ns == l.b {
			addr, err := run(ctx, "yggdrasil", "-useconffile", path, "-address")
			if err != nil {
				return nil, err
			}
			target = strings.TrimSpace(addr)
		}
		p, err := e.start(side.ns, side.label, false, nil, "yggdrasil", "-useconffile", path, "-loglevel", "warn")
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	if err := pingUntil(ctx, l.a, target, procs); err != nil {
		return nil, fmt.Errorf("yggdrasil: %w", err)
	}
	return &scenario{
		res:     &ScenarioResult{Key: "yggdrasil", Name: "yggdrasil", Target: target},
		daemons: procs,
		traffic: e.iperfTraffic(l.a, l.b, target, &l.server),
	}, nil
}

// pingUntil waits until ns reaches target through the overlay, or one of
// procs exits.
func pingUntil(ctx context.Context, ns, target string, procs []*proc) error {
	err := waitFor(ctx, 30*time.Second, "ping "+target, func() bool {
		for _, p := range procs {
			if p.exited() {
				return true
			}
		}
		_, err := inNS(ctx, ns, "ping", "-n", "-c", "1", "-W", "1", target)
		return err == nil
	})
	for _, p := range procs {
		if perr := p.failure(); perr != nil {
			return perr
		}
	}
	if err != nil {
		var tails []string
		for _, p := range procs {
			tails = append(tails, p.name+": "+p.tail())
		}
		return fmt.Errorf("%w\n%s", err, strings.Join(tails, "\n"))
	}
	return nil
}

// nebulaConfig is a nebula host's config: no lighthouse, the other host
// in static_host_map, the part's MTU, everything allowed.
const nebulaConfig = `pki:
  ca: %[1]s/ca.crt
  cert: %[1]s/%[2]s.crt
  key: %[1]s/%[2]s.key
static_host_map:
  "%[3]s": ["%[4]s:%[5]d"]
lighthouse:
  am_lighthouse: false
  hosts: []
listen:
  host: 0.0.0.0
  port: %[5]d
punchy:
  punch: false
tun:
  dev: neb0
  mtu: %[6]d
logging:
  level: warning
firewall:
  outbound:
    - port: any
      proto: any
      host: any
  inbound:
    - port: any
      proto: any
      host: any
`

// setupNebula runs nebula in A and B of line l: a CA and two host
// certificates from nebula-cert, each host with the other in its
// static_host_map.
func (e *env) setupNebula(ctx context.Context, l *line) (*scenario, error) {
	dir := filepath.Join(e.work, "nebula")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	steps := [][]string{{"nebula-cert", "ca", "-name", "tbench", "-out-crt", dir + "/ca.crt", "-out-key", dir + "/ca.key"}}
	for _, h := range []struct{ name, ip string }{{"a", nebulaA}, {"b", nebulaB}} {
		steps = append(steps, []string{"nebula-cert", "sign", "-ca-crt", dir + "/ca.crt", "-ca-key", dir + "/ca.key",
			"-name", h.name, "-ip", h.ip + "/24", "-out-crt", dir + "/" + h.name + ".crt", "-out-key", dir + "/" + h.name + ".key"})
	}
	if err := runSteps(ctx, "nebula-cert", steps); err != nil {
		return nil, err
	}
	var procs []*proc
	for _, h := range []struct{ ns, name, peer, peerUnder string }{{l.b, "b", nebulaA, lineA}, {l.a, "a", nebulaB, lineB}} {
		path := filepath.Join(dir, h.name+".yml")
		if err := os.WriteFile(path, fmt.Appendf(nil, nebulaConfig, dir, h.name, h.peer, h.peerUnder, nebulaPort, mtu), 0o600); err != nil {
			return nil, err
		}
		p, err := e.start(h.ns, "nebula-"+h.name, false, nil, "nebula", "-config", path)
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	if err := pingUntil(ctx, l.a, nebulaB, procs); err != nil {
		return nil, fmt.Errorf("nebula: %w", err)
	}
	return &scenario{
		res:     &ScenarioResult{Key: "nebula", Name: "nebula", Target: nebulaB},
		daemons: procs,
		traffic: e.iperfTraffic(l.a, l.b, nebulaB, &l.server),
	}, nil
}

// profileWireGuard runs bench/wgprof (wireguard-go's library with pprof)
// in A and B of line l as direct peers, profiles both during one extra
// iperf3 run, and stops them.
func (e *env) profileWireGuard(ctx context.Context, wgprof string, l *line, secs, streams int, dir string) (*ProfileResult, error) {
	socks := []string{filepath.Join(e.work, "wgpa.pprof.sock"), filepath.Join(e.work, "wgpb.pprof.sock")}
	a, err := e.startWireGuardGo(ctx, wgprof, l.a, "wgpa", "WGPROF_SOCKET="+socks[0])
	if a != nil && a.proc != nil {
		defer a.proc.stop(5 * time.Second)
	}
	if err != nil {
		return nil, err
	}
	b, err := e.startWireGuardGo(ctx, wgprof, l.b, "wgpb", "WGPROF_SOCKET="+socks[1])
	if b != nil && b.proc != nil {
		defer b.proc.stop(5 * time.Second)
	}
	if err != nil {
		return nil, err
	}
	ep := func(ip string) string { return fmt.Sprintf("%s:%d", ip, wgProfPort) }
	if err := a.configure(ctx, e.work, wgProfPort, wgProfA+"/64", []wgPeer{{b.pub, ep(lineB), wgProfB + "/128"}}); err != nil {
		return nil, err
	}
	if err := b.configure(ctx, e.work, wgProfPort, wgProfB+"/64", []wgPeer{{a.pub, ep(lineA), wgProfA + "/128"}}); err != nil {
		return nil, err
	}
	if err := pingUntil(ctx, l.a, wgProfB, []*proc{a.proc, b.proc}); err != nil {
		return nil, fmt.Errorf("wgprof: %w", err)
	}
	sc := &scenario{
		res:     &ScenarioResult{Key: "wgprof", Name: "wireguard-go (wgprof)", Target: wgProfB},
		daemons: []*proc{a.proc, b.proc},
		traffic: e.iperfTraffic(l.a, l.b, wgProfB, &l.server),
	}
	return e.profileSides(ctx, sc, []profileTarget{
		{socks[0], filepath.Join(dir, "compare-wireguard-go-sender.pprof"), "sender (namespace A: encrypts)"},
		{socks[1], filepath.Join(dir, "compare-wireguard-go-receiver.pprof"), "receiver (namespace B: decrypts)"},
	}, wgprof, secs, streams)
}
