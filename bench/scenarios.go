package main

// This file sets up the four data-plane scenarios side by side in the same
// two namespaces, and measures them: throughput with CPU time, and ping.
//
//	raw veth         iperf3 over 10.88.0.1 -> 10.88.0.2
//	wireguard-go     wga/wgb, fd99::1 -> fd99::2, UDP 51820
//	tomoe kernel     tomoe0 in each namespace, fc.. -> fc.., UDP 4610
//	tomoe userspace  usbench processes (gVisor stacks), fc.. -> fc.., UDP 4611

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/identity"
)

const (
	iperfPort = 5201
	mtu       = 1420 // overlay MTU of wireguard-go and tomoe alike
)

// scenario is one way of carrying TCP from namespace A to namespace B.
type scenario struct {
	res *ScenarioResult
	// daemons are the processes whose CPU time is charged to the scenario
	// (none for raw veth).
	daemons []*proc
	// traffic sends from A to B for secs seconds over streams connections.
	traffic func(ctx context.Context, streams int, secs float64) (Run, error)
	// middle is the process between the two ends that the traffic passes
	// through (a bridge, a wireguard-go hub), or nil. Its CPU time is
	// charged to the scenario too, and also reported on its own.
	middle *proc
	// pings are the latency measurements to take.
	pings []func(ctx context.Context) (PingResult, error)
	// named are processes whose CPU time is also recorded one by one, in
	// Run.ProcCPUSeconds under their key (they may be daemons or not).
	named []namedProc
}

// namedProc is a process whose CPU time a run records on its own.
type namedProc struct {
	key string
	p   *proc
}

// procs are the daemons and the middle process.
func (s *scenario) procs() []*proc {
	if s.middle == nil {
		return s.daemons
	}
	return append(slices.Clone(s.daemons), s.middle)
}

func (s *scenario) pids() []int {
	var out []int
	for _, p := range s.procs() {
		out = append(out, p.Pid())
	}
	return out
}

// measure runs traffic once and adds the CPU time spent meanwhile.
func (s *scenario) measure(ctx context.Context, streams int, secs float64) (Run, error) {
	for _, p := range s.procs() {
		if err := p.failure(); err != nil {
			return Run{}, err
		}
	}
	d0, err := cpuSum(s.pids())
	if err != nil {
		return Run{}, err
	}
	var mid0 float64
	if s.middle != nil {
		if mid0, err = cpuSeconds(s.middle.Pid()); err != nil {
			return Run{}, err
		}
	}
	named0 := make([]float64, len(s.named))
	for i, n := range s.named {
		if named0[i], err = cpuSeconds(n.p.Pid()); err != nil {
			return Run{}, err
		}
	}
	m0, err := machineBusySeconds()
	if err != nil {
		return Run{}, err
	}
	r, err := s.traffic(ctx, streams, secs)
	if err != nil {
		return Run{}, err
	}
	for i, n := range s.named {
		v, err := cpuSeconds(n.p.Pid())
		if err != nil {
			return Run{}, err
		}
		if r.ProcCPUSeconds == nil {
			r.ProcCPUSeconds = map[string]float64{}
		}
		r.ProcCPUSeconds[n.key] = v - named0[i]
	}
	d1, err := cpuSum(s.pids())
	if err != nil {
		return Run{}, err
	}
	m1, _ := machineBusySeconds()
	r.MachineCPUSeconds = m1 - m0
	if len(s.daemons) > 0 {
		v := d1 - d0
		r.DaemonCPUSeconds = &v
	}
	if s.middle != nil {
		mid1, err := cpuSeconds(s.middle.Pid())
		if err != nil {
			return Run{}, err
		}
		v := mid1 - mid0
		r.MiddleCPUSeconds = &v
	}
	return r, nil
}

// iperfServer runs iperf3 -s in namespace ns; the scenarios whose
// traffic ends there share it (one test at a time).
func (e *env) iperfServer(ctx context.Context, ns string) (*proc, error) {
	p, err := e.start(ns, "iperf3-server-"+ns, false, nil, "iperf3", "-s", "-p", strconv.Itoa(iperfPort))
	if err != nil {
		return nil, err
	}
	err = waitFor(ctx, 10*time.Second, "iperf3 server in "+ns, func() bool {
		out, _ := inNS(ctx, ns, "ss", "-Htln", "sport", "= :"+strconv.Itoa(iperfPort))
		return strings.TrimSpace(out) != "" || p.exited()
	})
	if err == nil {
		err = p.failure()
	}
	return p, err
}

// iperfTraffic returns a traffic function that runs iperf3 -c target in
// namespace from, against the server in namespace to. A failed run
// restarts the server and retries once: a client that died mid-test can
// leave iperf3 -s stuck.
func (e *env) iperfTraffic(from, to, target string, server **proc) func(context.Context, int, float64) (Run, error) {
	return func(ctx context.Context, streams int, secs float64) (Run, error) {
		r, err := iperfOnce(ctx, from, target, streams, secs)
		if err == nil || ctx.Err() != nil {
			return r, err
		}
		e.log.Warn("iperf3 failed; restarting the server and retrying once", "target", target, "err", err)
		(*server).stop(2 * time.Second)
		s, serr := e.iperfServer(ctx, to)
		if serr != nil {
			return Run{}, errors.Join(err, serr)
		}
		*server = s
		return iperfOnce(ctx, from, target, streams, secs)
	}
}

func iperfOnce(ctx context.Context, ns, target string, streams int, secs float64) (Run, error) {
	t := int(secs + 0.5)
	ctx, cancel := context.WithTimeout(ctx, time.Duration(t+30)*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "iperf3", "-c", target, "-p", strconv.Itoa(iperfPort),
		"-t", strconv.Itoa(t), "-P", strconv.Itoa(streams), "-J", "--connect-timeout", "5000")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var out struct {
		Error string `json:"error"`
		End   struct {
			SumSent struct {
				Bytes       int64 `json:"bytes"`
				Retransmits int   `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				Seconds       float64 `json:"seconds"`
				Bytes         int64   `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return Run{}, fmt.Errorf("iperf3 -c %s: %v; %v %s", target, runErr, err, strings.TrimSpace(stderr.String()))
	}
	if out.Error != "" || runErr != nil {
		return Run{}, fmt.Errorf("iperf3 -c %s: %v %s", target, runErr, out.Error)
	}
	rcv := out.End.SumReceived
	if rcv.Bytes == 0 {
		return Run{}, fmt.Errorf("iperf3 -c %s: nothing received", target)
	}
	return Run{Streams: streams, Seconds: rcv.Seconds, BytesReceived: rcv.Bytes, BitsPerSecond: rcv.BitsPerSecond,
		BytesSent: out.End.SumSent.Bytes, Retransmits: &out.End.SumSent.Retransmits}, nil
}

// kernelPing runs the system ping in namespace ns, 50 ms apart.
func kernelPing(ns string, count int, target string) func(context.Context) (PingResult, error) {
	return kernelPingEvery(ns, count, 0.05, target)
}

// kernelPingEvery runs the system ping in namespace ns, interval seconds
// apart.
func kernelPingEvery(ns string, count int, interval float64, target string) func(context.Context) (PingResult, error) {
	return func(ctx context.Context) (PingResult, error) {
		iv := strconv.FormatFloat(interval, 'g', -1, 64)
		out, err := inNS(ctx, ns, "ping", "-n", "-c", strconv.Itoa(count), "-i", iv, target)
		res := PingResult{Tool: "ping -i " + iv, Sent: count}
		for line := range strings.Lines(out) {
			_, v, ok := strings.Cut(line, " time=")
			if !ok {
				continue
			}
			v, _, _ = strings.Cut(v, " ")
			if ms, err := strconv.ParseFloat(v, 64); err == nil {
				res.RTTsMs = append(res.RTTsMs, ms)
			}
		}
		if len(res.RTTsMs) == 0 {
			return res, fmt.Errorf("ping %s: no replies: %v", target, err)
		}
		res.summarize()
		return res, nil
	}
}

// tomoePing runs `tomoe ping --json` against a node's admin socket, 50 ms
// apart: the node sends the echo requests itself (works in userspace mode
// too).
func tomoePing(tomoeBin, sock string, count int, target string) func(context.Context) (PingResult, error) {
	return tomoePingEvery(tomoeBin, sock, count, 50*time.Millisecond, target)
}

// tomoePingEvery is tomoePing, interval apart.
func tomoePingEvery(tomoeBin, sock string, count int, interval time.Duration, target string) func(context.Context) (PingResult, error) {
	return func(ctx context.Context) (PingResult, error) {
		iv := interval.String()
		cmd := exec.CommandContext(ctx, tomoeBin, "ping", target, "-c", strconv.Itoa(count), "-i", iv, "-W", "2s", "--json", "--socket", sock)
		out, err := cmd.Output()
		res := PingResult{Tool: "tomoe ping -i " + iv, Sent: count}
		for line := range strings.Lines(string(out)) {
			var r adminapi.PingResponse
			if json.Unmarshal([]byte(line), &r) == nil && r.Error == "" && r.RTTMs > 0 {
				res.RTTsMs = append(res.RTTsMs, r.RTTMs)
			}
		}
		if len(res.RTTsMs) == 0 {
			return res, fmt.Errorf("tomoe ping %s: no replies: %v", target, err)
		}
		res.summarize()
		return res, nil
	}
}

func (p *PingResult) summarize() {
	s := slices.Clone(p.RTTsMs)
	slices.Sort(s)
	var sum float64
	for _, v := range s {
		sum += v
	}
	p.Received = len(s)
	p.MedianMs = median(s)
	p.AvgMs = sum / float64(len(s))
	p.MinMs, p.MaxMs = s[0], s[len(s)-1]
}

// newKey makes a key pair for a node or device.
func newKey() (identity.PrivateKey, identity.PublicKey, error) {
	k, err := identity.GeneratePrivateKey()
	if err != nil {
		return k, identity.PublicKey{}, err
	}
	return k, k.Public(), nil
}

func writeKeyFile(path string, k identity.PrivateKey) error {
	return os.WriteFile(path, []byte(k.Base64()+"\n"), 0o600)
}

// wgDevice is one plain wireguard-go process and its interface.
type wgDevice struct {
	ns, ifname string
	key        identity.PrivateKey
	pub        identity.PublicKey
	proc       *proc
}

// startWireGuardGo starts `wireguard-go -f ifname` in ns with a new key
// and waits for its UAPI socket; env is added to its environment.
func (e *env) startWireGuardGo(ctx context.Context, wgBin, ns, ifname string, env ...string) (*wgDevice, error) {
	d := &wgDevice{ns: ns, ifname: ifname}
	var err error
	if d.key, d.pub, err = newKey(); err != nil {
		return nil, err
	}
	// The UAPI sockets live in /var/run/wireguard, shared by all
	// namespaces: a stale one would make wg talk to nothing.
	sock := "/var/run/wireguard/" + ifname + ".sock"
	os.Remove(sock)
	e.onCleanup(func() { os.Remove(sock) })
	if d.proc, err = e.start(ns, "wireguard-go-"+ifname, false, append([]string{"LOG_LEVEL=error"}, env...), wgBin, "-f", ifname); err != nil {
		return nil, err
	}
	if err := waitFor(ctx, 10*time.Second, "wireguard-go "+ifname, func() bool {
		_, err := os.Stat(sock)
		return err == nil || d.proc.exited()
	}); err != nil {
		return nil, err
	}
	return d, d.proc.failure()
}

// wgPeer is one peer of a wireguard-go device.
type wgPeer struct {
	pub                  identity.PublicKey
	endpoint, allowedIPs string
}

// configure gives the device its key, UDP port and peers with wg(8), and
// brings the interface up with the address prefix addr and MTU mtu.
func (d *wgDevice) configure(ctx context.Context, work string, port int, addr string, peers []wgPeer) error {
	keyFile := filepath.Join(work, d.ifname+".key")
	if err := writeKeyFile(keyFile, d.key); err != nil {
		return err
	}
	set := []string{"ip", "netns", "exec", d.ns, "wg", "set", d.ifname, "private-key", keyFile, "listen-port", strconv.Itoa(port)}
	for _, p := range peers {
		set = append(set, "peer", p.pub.String(), "endpoint", p.endpoint, "allowed-ips", p.allowedIPs)
	}
	steps := [][]string{
		set,
		{"ip", "-n", d.ns, "link", "set", d.ifname, "mtu", strconv.Itoa(mtu)},
		{"ip", "-n", d.ns, "addr", "add", addr, "dev", d.ifname, "nodad"},
		{"ip", "-n", d.ns, "link", "set", d.ifname, "up"},
	}
	for _, st := range steps {
		if _, err := run(ctx, st[0], st[1:]...); err != nil {
			return fmt.Errorf("wireguard-go %s: %w", d.ifname, err)
		}
	}
	return nil
}

// setupWireGuard starts plain wireguard-go in both namespaces, configured
// with wg(8) through its UAPI socket.
func (e *env) setupWireGuard(ctx context.Context, wgBin string, pingCount int) (*scenario, error) {
	a, err := e.startWireGuardGo(ctx, wgBin, nsA, "wga")
	if err != nil {
		return nil, err
	}
	b, err := e.startWireGuardGo(ctx, wgBin, nsB, "wgb")
	if err != nil {
		return nil, err
	}
	const addrA, addrB = "fd99::1", "fd99::2"
	if err := a.configure(ctx, e.work, 51820, addrA+"/64", []wgPeer{{b.pub, underlayB + ":51820", addrB + "/128"}}); err != nil {
		return nil, err
	}
	if err := b.configure(ctx, e.work, 51820, addrB+"/64", []wgPeer{{a.pub, underlayA + ":51820", addrA + "/128"}}); err != nil {
		return nil, err
	}
	if err := waitFor(ctx, 15*time.Second, "ping over wireguard-go", func() bool {
		_, err := inNS(ctx, nsA, "ping", "-n", "-c", "1", "-W", "1", addrB)
		return err == nil
	}); err != nil {
		return nil, err
	}
	return &scenario{
		res:     &ScenarioResult{Key: "wireguard-go", Name: "wireguard-go", Target: addrB},
		daemons: []*proc{a.proc, b.proc},
		pings:   []func(context.Context) (PingResult, error){kernelPing(nsA, pingCount, addrB)},
	}, nil
}

// tomoeNode is one tomoe node's files.
type tomoeNode struct {
	dir, config, sock string
	key               identity.PrivateKey
	pub               identity.PublicKey
}

func (e *env) newTomoeNode(label string) (*tomoeNode, error) {
	dir := filepath.Join(e.work, label)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	k, pub, err := newKey()
	if err != nil {
		return nil, err
	}
	n := &tomoeNode{dir: dir, config: filepath.Join(dir, "tomoe.toml"), sock: filepath.Join(e.work, label+".sock"), key: k, pub: pub}
	return n, writeKeyFile(filepath.Join(dir, "node.key"), k)
}

// peerEntry is one [[peers]] table.
type peerEntry struct {
	key      identity.PublicKey
	endpoint string
}

// writeConfig writes the node's config: the given mode and UDP port, the
// static peers, and an allow-everything rule.
func (n *tomoeNode) writeConfig(mode string, port int, peers []peerEntry) error {
	return n.writeConfigWith(mode, port, peers, "")
}

// writeConfigWith is writeConfig with extra TOML tables at the end.
func (n *tomoeNode) writeConfigWith(mode string, port int, peers []peerEntry, extra string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "key_file = %q\n\n[tun]\nmode = %q\nname = \"tomoe0\"\nmtu = %d\n\n", filepath.Join(n.dir, "node.key"), mode, mtu)
	fmt.Fprintf(&b, "[listen]\nudp = \"0.0.0.0:%d\"\n\n[admin]\nsocket = %q\n\n[log]\nlevel = \"warn\"\n\n", port, n.sock)
	fmt.Fprintf(&b, "[policy]\nstate_file = %q\n\n[[policy.allow]]\nfrom = \"*\"\n", filepath.Join(n.dir, "policy.json"))
	for _, p := range peers {
		fmt.Fprintf(&b, "\n[[peers]]\npublic_key = %q\nendpoint = %q\n", p.key.String(), p.endpoint)
	}
	if extra != "" {
		b.WriteString("\n" + extra)
	}
	return os.WriteFile(n.config, []byte(b.String()), 0o600)
}

// waitNode waits until the node's admin API answers.
func waitNode(ctx context.Context, p *proc, sock string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cl := adminapi.NewClient(sock)
	if err := waitFor(ctx, 20*time.Second, p.name+" admin socket", func() bool {
		_, err := cl.Status(ctx)
		return err == nil || p.exited()
	}); err != nil {
		return fmt.Errorf("%w\n%s", err, p.tail())
	}
	return p.failure()
}

// warmUp pings through a node until a reply comes: the first packet
// activates the peer and starts the handshake.
func warmUp(ctx context.Context, what string, ping func(context.Context) (PingResult, error)) error {
	return waitFor(ctx, 20*time.Second, what, func() bool {
		_, err := ping(ctx)
		return err == nil
	})
}

// pair is two namespaces, A and B, and their underlay addresses; A sends.
type pair struct{ a, b, addrA, addrB string }

// dataPlanePair is the data plane's two namespaces.
var dataPlanePair = pair{nsA, nsB, underlayA, underlayB}

// tomoePairSpec says how to run a pair of tomoe nodes: the scenario's key
// and name, the prefix of the nodes' labels, their UDP port, and how to
// write a node's config.
type tomoePairSpec struct {
	key, name, label string
	port             int
	config           func(n *tomoeNode, port int, peers []peerEntry) error
}

// benchConfig writes the bench's usual config (MTU 1420) in mode.
func benchConfig(mode string) func(*tomoeNode, int, []peerEntry) error {
	return func(n *tomoeNode, port int, peers []peerEntry) error { return n.writeConfig(mode, port, peers) }
}

// setupTomoeKernel starts `tomoe up` in kernel mode in the data plane's
// namespaces.
func (e *env) setupTomoeKernel(ctx context.Context, tomoeBin string, pingCount int) (*scenario, []*tomoeNode, error) {
	return e.setupTomoeKernelPair(ctx, tomoeBin, dataPlanePair,
		tomoePairSpec{key: "tomoe-kernel", name: "tomoe kernel", label: "k", port: 4610, config: benchConfig("kernel")}, pingCount)
}

// setupTomoeKernelPair starts `tomoe up` in kernel mode in both
// namespaces of pr, static peers of each other.
func (e *env) setupTomoeKernelPair(ctx context.Context, tomoeBin string, pr pair, spec tomoePairSpec, pingCount int) (*scenario, []*tomoeNode, error) {
	a, b, err := e.newTomoePair(pr, spec)
	if err != nil {
		return nil, nil, err
	}
	var procs []*proc
	for _, n := range []struct {
		ns, label string
		node      *tomoeNode
	}{{pr.a, "tomoe-" + spec.label + "a", a}, {pr.b, "tomoe-" + spec.label + "b", b}} {
		p, err := e.start(n.ns, n.label, false, nil, tomoeBin, "up", "-c", n.node.config)
		if err != nil {
			return nil, nil, err
		}
		if err := waitNode(ctx, p, n.node.sock); err != nil {
			return nil, nil, err
		}
		procs = append(procs, p)
	}
	target := b.pub.Address().String()
	if err := warmUp(ctx, "ping over "+spec.name, kernelPing(pr.a, 1, target)); err != nil {
		return nil, nil, err
	}
	return &scenario{
		res:     &ScenarioResult{Key: spec.key, Name: spec.name, Target: target},
		daemons: procs,
		pings:   []func(context.Context) (PingResult, error){kernelPing(pr.a, pingCount, target), tomoePing(tomoeBin, a.sock, pingCount, target)},
	}, []*tomoeNode{a, b}, nil
}

// newTomoePair makes the two nodes of spec in pr, static peers of each
// other at their underlay addresses, and writes their configs.
func (e *env) newTomoePair(pr pair, spec tomoePairSpec) (a, b *tomoeNode, err error) {
	if a, err = e.newTomoeNode(spec.label + "a"); err != nil {
		return nil, nil, err
	}
	if b, err = e.newTomoeNode(spec.label + "b"); err != nil {
		return nil, nil, err
	}
	port := strconv.Itoa(spec.port)
	if err := spec.config(a, spec.port, []peerEntry{{b.pub, pr.addrB + ":" + port}}); err != nil {
		return nil, nil, err
	}
	if err := spec.config(b, spec.port, []peerEntry{{a.pub, pr.addrA + ":" + port}}); err != nil {
		return nil, nil, err
	}
	return a, b, nil
}

// setupTomoeUserspace starts two usbench processes (userspace-mode nodes)
// in the data plane's namespaces.
func (e *env) setupTomoeUserspace(ctx context.Context, usbenchBin, tomoeBin string, pingCount int) (*scenario, error) {
	sc, _, err := e.setupTomoeUserspacePair(ctx, usbenchBin, tomoeBin, dataPlanePair,
		tomoePairSpec{key: "tomoe-userspace", name: "tomoe userspace", label: "u", port: 4611, config: benchConfig("userspace")}, pingCount)
	return sc, err
}

// setupTomoeUserspacePair starts two usbench processes (userspace-mode
// nodes): a sink in B and a source in A that the benchmark drives over
// stdin. It returns the scenario and nodes A and B.
func (e *env) setupTomoeUserspacePair(ctx context.Context, usbenchBin, tomoeBin string, pr pair, spec tomoePairSpec, pingCount int) (*scenario, []*tomoeNode, error) {
	a, b, err := e.newTomoePair(pr, spec)
	if err != nil {
		return nil, nil, err
	}
	sink, err := e.start(pr.b, "usbench-sink-"+spec.label, true, nil, usbenchBin, "-c", b.config, "-sink", "-port", strconv.Itoa(iperfPort))
	if err != nil {
		return nil, nil, err
	}
	source, err := e.start(pr.a, "usbench-source-"+spec.label, true, nil, usbenchBin, "-c", a.config)
	if err != nil {
		return nil, nil, err
	}
	for _, p := range []*proc{sink, source} {
		if _, err := readLine(ctx, p, 20*time.Second); err != nil {
			return nil, nil, err
		}
	}
	target := b.pub.Address().String()
	if err := warmUp(ctx, "ping over "+spec.name, tomoePing(tomoeBin, a.sock, 1, target)); err != nil {
		return nil, nil, err
	}
	addrPort := netip.AddrPortFrom(b.pub.Address(), iperfPort).String()
	traffic := func(ctx context.Context, streams int, secs float64) (Run, error) {
		return loadRun(ctx, source, "usbench source", fmt.Sprintf("run %s %g %d", addrPort, secs, streams), streams, time.Duration(secs)*time.Second+60*time.Second)
	}
	return &scenario{
		res:     &ScenarioResult{Key: spec.key, Name: spec.name, Target: addrPort},
		daemons: []*proc{source, sink},
		traffic: traffic,
		pings:   []func(context.Context) (PingResult, error){tomoePing(tomoeBin, a.sock, pingCount, target)},
	}, []*tomoeNode{a, b}, nil
}

// readLine reads one line of a piped process's stdout within timeout.
func readLine(ctx context.Context, p *proc, timeout time.Duration) (string, error) {
	type line struct {
		s   string
		err error
	}
	ch := make(chan line, 1)
	go func() {
		s, err := p.stdout.ReadString('\n')
		ch <- line{s, err}
	}()
	select {
	case l := <-ch:
		if l.err != nil {
			return "", fmt.Errorf("%s: %w\n%s", p.name, l.err, p.tail())
		}
		return strings.TrimSpace(l.s), nil
	case <-time.After(timeout):
		// The process is broken: stop it, which also ends the reader.
		p.stop(2 * time.Second)
		return "", fmt.Errorf("%s: no answer within %s\n%s", p.name, timeout, p.tail())
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// loadRun sends one run command to a load generator (bench/usbench,
// bench/tcpload; see bench/loadgen) and decodes its answer.
func loadRun(ctx context.Context, p *proc, name, command string, streams int, timeout time.Duration) (Run, error) {
	if _, err := fmt.Fprintln(p.stdin, command); err != nil {
		return Run{}, fmt.Errorf("%s: %w", name, err)
	}
	line, err := readLine(ctx, p, timeout)
	if err != nil {
		return Run{}, err
	}
	var r struct {
		Error         string  `json:"error"`
		Seconds       float64 `json:"seconds"`
		BytesSent     int64   `json:"bytes_sent"`
		BytesReceived int64   `json:"bytes_received"`
		BitsPerSecond float64 `json:"bits_per_second"`
	}
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		return Run{}, fmt.Errorf("%s said %q: %w", name, line, err)
	}
	if r.Error != "" {
		return Run{}, fmt.Errorf("%s: %s", name, r.Error)
	}
	return Run{Streams: streams, Seconds: r.Seconds, BytesSent: r.BytesSent, BytesReceived: r.BytesReceived, BitsPerSecond: r.BitsPerSecond}, nil
}
