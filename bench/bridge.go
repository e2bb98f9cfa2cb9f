package main

// This file is the bridge part's data plane and lookups. Three namespaces
// in a row, A — M — B: two veth pairs, and M routes between A's and B's
// underlay subnets. M runs a tomoe bridge (userspace mode) or a
// wireguard-go hub. Five scenarios, measured as the data-plane ones are:
//
//	wireguard-go direct   wgda -> wgdb, fd97::1 -> fd97::2, routed by M
//	wireguard-go hub      wgha -> wghm in M (decrypts, re-encrypts) -> wghb, fd98::
//	tomoe direct          kernel-mode nodes that know only M's bridge; path "direct"
//	tomoe relay, UDP      the same, but M drops UDP it forwards: path "relay"
//	tomoe relay, TCP      also A's UDP to M: A registers and relays over TCP
//
// Each tomoe scenario has its own three namespaces, since M's rules
// differ; the wireguard-go scenarios share the direct one's.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// The underlay of every line: the same addresses in each, since each line
// has namespaces of its own.
const (
	lineA      = "10.88.1.1"
	lineMA     = "10.88.1.254" // M on A's side: the bridge's endpoint
	lineMB     = "10.88.2.254" // M on B's side
	lineB      = "10.88.2.1"
	bridgePort = 4610
)

// block is what M drops.
type block int

const (
	blockNone   block = iota
	blockDirect       // UDP forwarded between A and B: no direct path
	blockAUDP         // that, and UDP from A to M itself: A must use TCP
)

// nftables rules in M; the input chain is added for blockAUDP.
const (
	nftForward = `table inet tbench {
	chain forward {
		type filter hook forward priority filter; policy accept;
		meta l4proto udp drop
	}
%s}
`
	nftInputA = `	chain input {
		type filter hook input priority filter; policy accept;
		ip saddr ` + lineA + ` meta l4proto udp drop
	}
`
)

// line is three namespaces in a row, A — M — B.
type line struct {
	a, m, b string
	server  *proc // iperf3 -s in B
}

// setupLine creates the namespaces tbench-NAME-a, -m and -b, their
// links and routes, and M's rules.
func (e *env) setupLine(ctx context.Context, name string, blk block) (*line, error) {
	l := &line{a: nsPrefix + name + "-a", m: nsPrefix + name + "-m", b: nsPrefix + name + "-b"}
	steps := [][]string{
		{"ip", "netns", "add", l.a},
		{"ip", "netns", "add", l.m},
		{"ip", "netns", "add", l.b},
		{"ip", "-n", l.a, "link", "add", "veth0", "mtu", "1500", "type", "veth", "peer", "name", "va", "netns", l.m},
		{"ip", "-n", l.b, "link", "add", "veth0", "mtu", "1500", "type", "veth", "peer", "name", "vb", "netns", l.m},
		{"ip", "-n", l.a, "addr", "add", lineA + "/24", "dev", "veth0"},
		{"ip", "-n", l.m, "addr", "add", lineMA + "/24", "dev", "va"},
		{"ip", "-n", l.m, "addr", "add", lineMB + "/24", "dev", "vb"},
		{"ip", "-n", l.b, "addr", "add", lineB + "/24", "dev", "veth0"},
	}
	for _, ns := range []string{l.a, l.m, l.b} {
		steps = append(steps, []string{"ip", "-n", ns, "link", "set", "lo", "up"})
	}
	steps = append(steps,
		[]string{"ip", "-n", l.a, "link", "set", "veth0", "up"},
		[]string{"ip", "-n", l.m, "link", "set", "va", "up"},
		[]string{"ip", "-n", l.m, "link", "set", "vb", "up"},
		[]string{"ip", "-n", l.b, "link", "set", "veth0", "up"},
		[]string{"ip", "-n", l.a, "route", "add", "default", "via", lineMA},
		[]string{"ip", "-n", l.b, "route", "add", "default", "via", lineMB},
		// IPv6 forwarding is for the wireguard-go hub's tunnel addresses.
		[]string{"ip", "netns", "exec", l.m, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward && echo 1 > /proc/sys/net/ipv6/conf/all/forwarding"},
	)
	for _, s := range steps {
		if _, err := run(ctx, s[0], s[1:]...); err != nil {
			return nil, fmt.Errorf("line %s: %w", name, err)
		}
	}
	if blk != blockNone {
		input := ""
		if blk == blockAUDP {
			input = nftInputA
		}
		rules := filepath.Join(e.work, name+"-m.nft")
		if err := os.WriteFile(rules, fmt.Appendf(nil, nftForward, input), 0o644); err != nil {
			return nil, err
		}
		if _, err := inNS(ctx, l.m, "nft", "-f", rules); err != nil {
			return nil, fmt.Errorf("line %s: %w", name, err)
		}
	}
	err := waitFor(ctx, 10*time.Second, "line "+name+" underlay ping", func() bool {
		_, err := inNS(ctx, l.a, "ping", "-n", "-c", "1", "-W", "1", lineB)
		return err == nil
	})
	if err != nil {
		return nil, err
	}
	l.server, err = e.iperfServer(ctx, l.b)
	return l, err
}

// tomoeLine is a line running tomoe: a userspace-mode bridge in M and
// kernel-mode nodes in A and B that know only the bridge.
type tomoeLine struct {
	l               *line
	name            string
	bridge, a, b    *tomoeNode
	pBridge, pA, pB *proc
}

// startBridge starts a userspace-mode bridge in ns with the node's
// config plus the bridge role, letting allow register.
func (e *env) startBridge(ctx context.Context, tomoeBin, label, ns string, n *tomoeNode, allow []identity.PublicKey) (*proc, error) {
	var extra strings.Builder
	fmt.Fprintf(&extra, "[bridge]\nenable = true\ntcp = \"0.0.0.0:%d\"\nstate_file = %q\n", bridgePort, filepath.Join(n.dir, "bridge.json"))
	for _, k := range allow {
		fmt.Fprintf(&extra, "\n[[bridge.allow]]\npublic_key = %q\n", k.String())
	}
	if err := n.writeConfigWith("userspace", bridgePort, nil, extra.String()); err != nil {
		return nil, err
	}
	p, err := e.start(ns, label, false, nil, tomoeBin, "up", "-c", n.config)
	if err != nil {
		return nil, err
	}
	return p, waitNode(ctx, p, n.sock)
}

// setupTomoeLine builds line name with M's rules blk, a bridge in M and
// nodes in A and B, and waits until both are registered (A over TCP when
// its UDP is blocked).
func (e *env) setupTomoeLine(ctx context.Context, tomoeBin, name string, blk block) (*tomoeLine, error) {
	l, err := e.setupLine(ctx, name, blk)
	if err != nil {
		return nil, err
	}
	tl := &tomoeLine{l: l, name: name}
	for _, n := range []struct {
		label string
		node  **tomoeNode
	}{{name + "-m", &tl.bridge}, {name + "-a", &tl.a}, {name + "-b", &tl.b}} {
		if *n.node, err = e.newTomoeNode(n.label); err != nil {
			return nil, err
		}
	}
	if tl.pBridge, err = e.startBridge(ctx, tomoeBin, "tomoe-"+name+"-bridge", l.m, tl.bridge, []identity.PublicKey{tl.a.pub, tl.b.pub}); err != nil {
		return nil, err
	}
	// Each node joins the bridge at M's address on its own link. The
	// bridge listens on 0.0.0.0 and its answers leave from the address
	// the route to the node picks, while a node takes relay frames only
	// from the address it registered with.
	for _, n := range []struct {
		ns, bridgeIP string
		node         *tomoeNode
		p            **proc
	}{{l.a, lineMA, tl.a, &tl.pA}, {l.b, lineMB, tl.b, &tl.pB}} {
		join := fmt.Sprintf("[[bridges]]\nendpoint = \"%s:%d\"\npublic_key = %q\n", n.bridgeIP, bridgePort, tl.bridge.pub.String())
		if err := n.node.writeConfigWith("kernel", bridgePort, nil, join); err != nil {
			return nil, err
		}
		if *n.p, err = e.startMember(ctx, tomoeBin, n.ns, "tomoe-"+filepath.Base(n.node.dir), n.node); err != nil {
			return nil, err
		}
	}
	transportA := "udp"
	if blk == blockAUDP {
		transportA = "tcp" // after three unanswered UDP registrations, about 3 s
	}
	for _, w := range []struct {
		n         *tomoeNode
		transport string
	}{{tl.a, transportA}, {tl.b, "udp"}} {
		if err := waitRegistered(ctx, w.n.sock, w.transport, 30*time.Second); err != nil {
			return nil, fmt.Errorf("line %s: %w", name, err)
		}
	}
	return tl, nil
}

// startMember starts a node that joins a bridge and waits for its admin
// socket.
func (e *env) startMember(ctx context.Context, tomoeBin, ns, label string, n *tomoeNode) (*proc, error) {
	p, err := e.start(ns, label, false, nil, tomoeBin, "up", "-c", n.config)
	if err != nil {
		return nil, err
	}
	return p, waitNode(ctx, p, n.sock)
}

// bridgeState is the state of the first bridge the node at sock joins,
// and its transport.
func bridgeState(ctx context.Context, sock string) (state, transport string) {
	st, err := adminapi.NewClient(sock).Status(ctx)
	if err != nil || len(st.Bridges) == 0 {
		return "", ""
	}
	return st.Bridges[0].State, st.Bridges[0].Transport
}

// waitRegistered waits until the node at sock is registered with its
// bridge over transport.
func waitRegistered(ctx context.Context, sock, transport string, timeout time.Duration) error {
	var state, got string
	err := pollFor(ctx, timeout, 10*time.Millisecond, "registration over "+transport, func() bool {
		state, got = bridgeState(ctx, sock)
		return state == "registered" && got == transport
	})
	if err != nil {
		return fmt.Errorf("%w (state %q, transport %q)", err, state, got)
	}
	return nil
}

// peerPath is how the node at sock reaches addr: "direct", "relay via
// BRIDGE", or "" if addr is not its peer.
func peerPath(ctx context.Context, sock, addr string) string {
	peers, err := adminapi.NewClient(sock).Peers(ctx)
	if err != nil {
		return ""
	}
	for _, p := range peers {
		if p.Address != addr {
			continue
		}
		if p.Path == "relay" && p.Bridge != nil {
			return "relay via " + *p.Bridge
		}
		return p.Path
	}
	return ""
}

// paths describes both directions of a tomoe line.
func (tl *tomoeLine) paths(ctx context.Context) string {
	return fmt.Sprintf("A→B %s; B→A %s",
		orDash(peerPath(ctx, tl.a.sock, tl.b.pub.Address().String())),
		orDash(peerPath(ctx, tl.b.sock, tl.a.pub.Address().String())))
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

// tomoeScenario makes a scenario of a tomoe line once A reaches B by
// address alone and A's path to B is want ("direct", or "relay via …/udp"
// or "…/tcp").
func (e *env) tomoeScenario(ctx context.Context, tl *tomoeLine, key, name, want string, pingCount int) (*scenario, error) {
	target := tl.b.pub.Address().String()
	if err := warmUp(ctx, "ping over "+name, kernelPing(tl.l.a, 1, target)); err != nil {
		return nil, err
	}
	var got string
	if err := waitFor(ctx, 15*time.Second, name+" path "+want, func() bool {
		got = peerPath(ctx, tl.a.sock, target)
		return got == want
	}); err != nil {
		return nil, fmt.Errorf("%w: A's path to B is %q", err, got)
	}
	sc := &scenario{
		res:     &ScenarioResult{Key: key, Name: name, Target: target},
		daemons: []*proc{tl.pA, tl.pB},
		middle:  tl.pBridge,
		pings:   []func(context.Context) (PingResult, error){kernelPing(tl.l.a, pingCount, target)},
	}
	sc.traffic = e.iperfTraffic(tl.l.a, tl.l.b, target, &tl.l.server)
	return sc, nil
}

// notePath records both directions' paths of tl in sc's result, and an
// error if A's path to B is not want (after the runs: it must not have
// changed under the load).
func notePath(ctx context.Context, sc *scenario, tl *tomoeLine, want string) {
	sc.res.Path = tl.paths(ctx)
	if got := peerPath(ctx, tl.a.sock, sc.res.Target); got != want {
		sc.res.Errors = append(sc.res.Errors, fmt.Sprintf("A's path to B was %q after the runs, want %q", got, want))
	}
}

// relayVia is the path `peers` on A shows for a relay through its line's
// bridge over transport.
func relayVia(transport string) string {
	return fmt.Sprintf("relay via %s:%d/%s", lineMA, bridgePort, transport)
}

// setupWireGuardLine builds line bw with plain wireguard-go twice (see
// setupWireGuardOn).
func (e *env) setupWireGuardLine(ctx context.Context, wgBin string, pingCount int) ([]*scenario, *line, error) {
	l, err := e.setupLine(ctx, "bw", blockNone)
	if err != nil {
		return nil, nil, err
	}
	scs, err := e.setupWireGuardOn(ctx, wgBin, l, pingCount)
	return scs, l, err
}

// setupWireGuardOn runs plain wireguard-go twice on line l: A and B as
// direct peers of each other (the packets routed by M), and A and B as
// peers of a hub in M only. The hub routes between them: M's kernel
// forwards what the hub's wireguard-go decrypted back into it, to be
// encrypted for the other end.
func (e *env) setupWireGuardOn(ctx context.Context, wgBin string, l *line, pingCount int) ([]*scenario, error) {
	devs := map[string]*wgDevice{}
	var err error
	for _, d := range []struct{ ns, ifname string }{
		{l.a, "wgda"}, {l.b, "wgdb"}, {l.a, "wgha"}, {l.m, "wghm"}, {l.b, "wghb"},
	} {
		if devs[d.ifname], err = e.startWireGuardGo(ctx, wgBin, d.ns, d.ifname); err != nil {
			return nil, err
		}
	}
	da, db, ha, hm, hb := devs["wgda"], devs["wgdb"], devs["wgha"], devs["wghm"], devs["wghb"]
	const (
		directPort, hubPort = 51830, 51831
		directA, directB    = "fd97::1", "fd97::2"
		hubA, hubB, hubM    = "fd98::1", "fd98::2", "fd98::fe"
		hubNet              = "fd98::/64"
	)
	ep := func(ip string, port int) string { return fmt.Sprintf("%s:%d", ip, port) }
	configs := []struct {
		d     *wgDevice
		port  int
		addr  string
		peers []wgPeer
	}{
		{da, directPort, directA + "/64", []wgPeer{{db.pub, ep(lineB, directPort), directB + "/128"}}},
		{db, directPort, directB + "/64", []wgPeer{{da.pub, ep(lineA, directPort), directA + "/128"}}},
		{ha, hubPort, hubA + "/64", []wgPeer{{hm.pub, ep(lineMA, hubPort), hubNet}}},
		{hb, hubPort, hubB + "/64", []wgPeer{{hm.pub, ep(lineMB, hubPort), hubNet}}},
		{hm, hubPort, hubM + "/64", []wgPeer{{ha.pub, ep(lineA, hubPort), hubA + "/128"}, {hb.pub, ep(lineB, hubPort), hubB + "/128"}}},
	}
	for _, c := range configs {
		if err := c.d.configure(ctx, e.work, c.port, c.addr, c.peers); err != nil {
			return nil, err
		}
	}
	for _, target := range []string{directB, hubB} {
		if err := waitFor(ctx, 15*time.Second, "ping over wireguard-go to "+target, func() bool {
			_, err := inNS(ctx, l.a, "ping", "-n", "-c", "1", "-W", "1", target)
			return err == nil
		}); err != nil {
			return nil, err
		}
	}
	direct := &scenario{
		res:     &ScenarioResult{Key: "wg-direct", Name: "wireguard-go direct", Target: directB},
		daemons: []*proc{da.proc, db.proc},
		pings:   []func(context.Context) (PingResult, error){kernelPing(l.a, pingCount, directB)},
		traffic: e.iperfTraffic(l.a, l.b, directB, &l.server),
	}
	hub := &scenario{
		res:     &ScenarioResult{Key: "wg-hub", Name: "wireguard-go hub", Target: hubB},
		daemons: []*proc{ha.proc, hb.proc},
		middle:  hm.proc,
		pings:   []func(context.Context) (PingResult, error){kernelPing(l.a, pingCount, hubB)},
		traffic: e.iperfTraffic(l.a, l.b, hubB, &l.server),
	}
	return []*scenario{direct, hub}, nil
}

// bridgeParams are the bridge part's settings.
type bridgeParams struct {
	repeats       int
	runSeconds    float64
	streams       []int
	pingCount     int
	coldLookups   int           // restarts of node A for the cold lookup
	simNodes      int           // simulated nodes of the capacity test
	lookupSeconds float64       // length of the lookup load
	settle        time.Duration // before each memory reading
}

// tomoeLines are the tomoe scenarios: line name, what M blocks, the path
// A's packets to B must take.
var tomoeLines = []struct {
	key, name, line string
	blk             block
	transport       string // "" for direct
}{
	{"tomoe-direct", "tomoe direct", "bd", blockNone, ""},
	{"tomoe-relay-udp", "tomoe relay, UDP", "bu", blockDirect, "udp"},
	{"tomoe-relay-tcp", "tomoe relay, TCP", "bt", blockAUDP, "tcp"},
}

// bridgePart runs the bridge part: the throughput scenarios, the cold
// lookups and the capacity test. Failures of one piece are recorded in
// res.Errors and the rest goes on.
func (e *env) bridgePart(ctx context.Context, b bins, p bridgeParams, res *BridgeResult) error {
	log := e.log
	fail := func(what string, err error) {
		log.Error(what, "err", err)
		res.Errors = append(res.Errors, what+": "+err.Error())
	}
	var scenarios []*scenario
	type tomoeRun struct {
		sc   *scenario
		tl   *tomoeLine
		want string
	}
	var runs []tomoeRun
	var direct, relayed *tomoeLine
	var servers []*line
	stop := func() {
		for _, sc := range scenarios {
			for _, p := range sc.procs() {
				p.stop(10 * time.Second)
			}
		}
		for _, r := range runs {
			r.tl.pA.stop(10 * time.Second) // restarted by the cold lookups
		}
		for _, l := range servers {
			l.server.stop(5 * time.Second)
		}
	}
	defer stop()

	log.Info("bridge: setting up wireguard-go direct and hub")
	scs, wl, err := e.setupWireGuardLine(ctx, b.wireguardGo, p.pingCount)
	if wl != nil && wl.server != nil {
		servers = append(servers, wl)
	}
	if err != nil {
		fail("bridge: wireguard-go setup", err)
	} else {
		scenarios = append(scenarios, scs...)
	}
	for _, t := range tomoeLines {
		log.Info("bridge: setting up", "scenario", t.name)
		tl, err := e.setupTomoeLine(ctx, b.tomoe, t.line, t.blk)
		if err != nil {
			fail("bridge: "+t.name+" setup", err)
			continue
		}
		want := "direct"
		if t.transport != "" {
			want = relayVia(t.transport)
		}
		sc, err := e.tomoeScenario(ctx, tl, t.key, t.name, want, p.pingCount)
		if err != nil {
			fail("bridge: "+t.name+" setup", err)
			continue
		}
		scenarios = append(scenarios, sc)
		runs = append(runs, tomoeRun{sc, tl, want})
		servers = append(servers, tl.l)
		switch t.blk {
		case blockNone:
			direct = tl
		case blockDirect:
			relayed = tl
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	for _, sc := range scenarios {
		res.Scenarios = append(res.Scenarios, sc.res)
	}
	if err := measureInterleaved(ctx, log, scenarios, p.streams, p.repeats, p.runSeconds); err != nil {
		return err
	}
	for _, r := range runs {
		notePath(ctx, r.sc, r.tl, r.want)
	}
	measurePings(ctx, log, scenarios)

	if direct != nil {
		log.Info("bridge: cold lookups", "line", direct.name, "repeats", p.coldLookups)
		if res.Lookup, err = e.coldLookups(ctx, b.tomoe, direct, p.coldLookups, true); err != nil {
			fail("bridge: cold lookups", err)
		}
	}
	if relayed != nil && ctx.Err() == nil {
		log.Info("bridge: cold lookups", "line", relayed.name, "repeats", p.coldLookups)
		if res.LookupRelay, err = e.coldLookups(ctx, b.tomoe, relayed, p.coldLookups, false); err != nil {
			fail("bridge: cold lookups over the relay", err)
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	stop() // the capacity test runs alone

	log.Info("bridge: capacity", "nodes", p.simNodes)
	if res.Capacity, err = e.bridgeCapacity(ctx, b, p); err != nil {
		fail("bridge: capacity", err)
	}
	return ctx.Err()
}

// coldLookups restarts node A of tl n times. Each time, once the fresh
// process is registered, it pings B's address, which it has never heard
// of: the first packet waits for the lookup, the peer's set-up and the
// WireGuard handshake. Then, if waitDirect, it polls every 50 ms until
// A's path to B is direct.
func (e *env) coldLookups(ctx context.Context, tomoeBin string, tl *tomoeLine, n int, waitDirect bool) (*ColdLookupResult, error) {
	res := &ColdLookupResult{Repeats: n}
	target := tl.b.pub.Address().String()
	cl := adminapi.NewClient(tl.a.sock)
	for i := range n {
		tl.pA.stop(10 * time.Second)
		start := time.Now()
		p, err := e.startMember(ctx, tomoeBin, tl.l.a, fmt.Sprintf("tomoe-%s-a-cold%d", tl.name, i), tl.a)
		tl.pA = p
		if err != nil {
			return res, err
		}
		if err := waitRegistered(ctx, tl.a.sock, "udp", 20*time.Second); err != nil {
			return res, err
		}
		res.RegisterMs = append(res.RegisterMs, ms(time.Since(start)))

		t0 := time.Now()
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := cl.Ping(pctx, adminapi.PingRequest{Address: target, TimeoutMs: 2000})
		cancel()
		call := time.Since(t0)
		if err != nil {
			return res, fmt.Errorf("ping %s: %w", target, err)
		}
		rtt := resp.RTTMs
		if resp.Error != "" {
			rtt = 0
			res.Failures = append(res.Failures, fmt.Sprintf("line %s, repeat %d: ping: %s", tl.name, i+1, resp.Error))
		}
		res.RTTMs = append(res.RTTMs, rtt)
		res.CallMs = append(res.CallMs, ms(call))

		if !waitDirect {
			e.log.Info("cold lookup", "repeat", i+1, "rtt_ms", rtt, "call_ms", ms(call))
			continue
		}
		direct := 0.0
		if err := pollFor(ctx, 10*time.Second, 50*time.Millisecond, "direct path", func() bool {
			return peerPath(ctx, tl.a.sock, target) == "direct"
		}); err == nil {
			direct = ms(time.Since(t0))
		} else {
			res.Failures = append(res.Failures, fmt.Sprintf("line %s, repeat %d: %v", tl.name, i+1, err))
		}
		res.DirectMs = append(res.DirectMs, direct)
		e.log.Info("cold lookup", "repeat", i+1, "rtt_ms", rtt, "call_ms", ms(call), "direct_ms", direct)
	}
	res.summarize()
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// summarize fills in the medians and maxima over the successful repeats.
func (r *ColdLookupResult) summarize() {
	ok := func(xs []float64) []float64 {
		var out []float64
		for _, x := range xs {
			if x > 0 {
				out = append(out, x)
			}
		}
		return out
	}
	rtt, direct := ok(r.RTTMs), ok(r.DirectMs)
	r.MedianRTTMs, r.MaxRTTMs = median(rtt), maxOf(rtt)
	r.MedianCallMs, r.MaxCallMs = median(r.CallMs), maxOf(r.CallMs)
	r.MedianDirectMs, r.MaxDirectMs = median(direct), maxOf(direct)
	r.MedianRegister = median(r.RegisterMs)
}

// maxOf is the largest of xs, 0 for none.
func maxOf(xs []float64) float64 {
	m := 0.0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}
