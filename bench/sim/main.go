// Command sim runs thousands of real tomoe nodes in one process, in
// userspace mode, on an in-memory internet (internal/testnet/vnet): each
// node on a site of its own behind a NAT of a random kind (or on the
// internet itself), all of them joined to a few bridges, each node's
// policy letting a few random others in. Every allowed pair then
// exchanges a datagram through the overlay, found by address alone
// through a bridge, and the run reports what that cost and took:
//
//   - heap and resident memory per node, goroutines per node;
//   - the time until every node is registered, and until every allowed
//     pair has exchanged a datagram;
//   - the lookups a second the bridges answered meanwhile;
//   - the share of pairs whose path went direct (hole punched) against
//     those still relayed, and the bytes the bridges relayed;
//   - policy revocations: how long the call takes and whether the
//     revoked client's very next datagram is refused;
//   - with -scenario crl, every node a member of one organisation: how
//     long a revocation list pushed to one node takes to reach every
//     node (through the bridge and the peers), and how long each node
//     that had a session with the revoked member takes to cut it.
//
// Nodes are the real node code (node.New with a typed config, key file,
// policy, WireGuard, gVisor netstack, bridge client and server); only the
// network is simulated. Results go into bench/RESULTS.md, in a section
// between markers that `go run ./bench` keeps, and bench/sim/results.json
// (one row per node count; a run replaces its own row).
//
//	go run ./bench/sim -nodes 1000 -bridges 2
//	go run ./bench/sim -nodes 10000 -bridges 4 -profiles /tmp/simprof
//	go run ./bench/sim -scenario crl -nodes 1000
//
// See README.md in this directory.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

// options are the command-line flags.
type options struct {
	nodes, bridges, perNode, pairs int
	seed                           uint64
	mix                            natMix
	delay, settle, timeout, idle   time.Duration
	loss                           float64 // each node's access link loses this share of datagrams
	parallel, workers, revoke      int
	maxRSSMiB                      int
	bindBatch, stackBatch          int
	out, jsonOut, profiles         string
	noReport, render               bool
	scenario                       string        // scenarioExchange or scenarioCRL
	crlPeers                       int           // sessions of the node the crl scenario revokes
	crlTimeout                     time.Duration // how long the list may take to reach every node
}

// Scenarios (-scenario).
const (
	scenarioExchange = "exchange" // every allowed pair exchanges a datagram; paths; policy revocations
	scenarioCRL      = "crl"      // a revocation list pushed to one member spreads to all (issue 11)
)

func defaultOptions() options {
	mix, _ := parseNATMix(defaultMix)
	return options{
		nodes: 100, bridges: 1, perNode: 1, pairs: 3, seed: 1, mix: mix,
		delay: 10 * time.Millisecond, settle: 3 * time.Second, timeout: 5 * time.Minute, idle: 10 * time.Second,
		parallel: 2 * runtime.GOMAXPROCS(0), workers: 256, revoke: 20, maxRSSMiB: 12 << 10, bindBatch: 1, stackBatch: 1,
		out: "bench/RESULTS.md", scenario: scenarioExchange, crlPeers: 20, crlTimeout: 2 * time.Minute,
	}
}

const defaultMix = "public=10,cone=20,eim=40,sym=30"

func main() {
	o := defaultOptions()
	flag.IntVar(&o.nodes, "nodes", o.nodes, "nodes to simulate (bridges not counted)")
	flag.IntVar(&o.bridges, "bridges", o.bridges, "bridges")
	flag.IntVar(&o.perNode, "bridges-per-node", o.perNode, "bridges each node joins (node i joins i mod B and the next ones)")
	flag.IntVar(&o.pairs, "pairs", o.pairs, "nodes each node's policy allows (udp to its echo port), drawn among those sharing a bridge with it; with -scenario crl, pairs that exchange (0: only the revoked node's -crl-peers)")
	flag.Uint64Var(&o.seed, "seed", o.seed, "seed of the world, the policies and the NAT kinds")
	mix := flag.String("nat", defaultMix, "weights of the site kinds: public (no NAT), cone (full cone), eim (port-restricted cone), sym (symmetric, random ports)")
	flag.DurationVar(&o.delay, "delay", o.delay, "each node's access link has a one-way delay drawn up to this")
	flag.Float64Var(&o.loss, "loss", o.loss, "each node's access link loses this share (0 to 1) of the datagrams crossing it")
	flag.DurationVar(&o.settle, "settle", o.settle, "time after the last exchange before the paths are counted (the prober's rounds)")
	flag.DurationVar(&o.idle, "idle", o.idle, "how long the CPU of the nodes at rest is measured, once all are registered (0: not measured)")
	flag.DurationVar(&o.timeout, "timeout", o.timeout, "limit of the registration phase and of the exchange phase")
	flag.IntVar(&o.parallel, "parallel", o.parallel, "nodes started at once")
	flag.IntVar(&o.workers, "workers", o.workers, "pairs exchanging at once")
	flag.IntVar(&o.revoke, "revoke", o.revoke, "policy revocations to measure")
	flag.IntVar(&o.maxRSSMiB, "max-rss", o.maxRSSMiB, "stop starting nodes when resident memory passes this many MiB (also the Go memory limit); 0: no limit")
	flag.IntVar(&o.bindBatch, "bind-batch", o.bindBatch, "the in-memory UDP sockets' batch size (0: vnet's default, 16); wireguard-go keeps a 64 KiB buffer per slot")
	flag.IntVar(&o.stackBatch, "stack-batch", o.stackBatch, "the userspace stacks' batch size (0: netstack's default, 128); wireguard-go keeps a 64 KiB buffer per slot")
	flag.StringVar(&o.scenario, "scenario", o.scenario, "exchange: every allowed pair exchanges a datagram, then paths and policy revocations; crl: every node is a member of one organisation, the allowed pairs exchange, then a revocation list pushed to one node spreads to all and cuts the revoked member's sessions")
	flag.IntVar(&o.crlPeers, "crl-peers", o.crlPeers, "crl: nodes the revoked node has a live session with when the list is pushed")
	flag.DurationVar(&o.crlTimeout, "crl-timeout", o.crlTimeout, "crl: how long to wait for the list to reach every node")
	flag.StringVar(&o.out, "out", o.out, "report to update (its simulation section)")
	flag.StringVar(&o.jsonOut, "json", "", "raw numbers, one row per node count (default: results.json in this command's directory, bench/sim)")
	flag.StringVar(&o.profiles, "profiles", "", "write CPU and heap profiles into this directory")
	flag.BoolVar(&o.noReport, "no-report", false, "print the figures only; write no files")
	flag.BoolVar(&o.render, "render", false, "only rewrite the report's section from -json (and findings.md beside it); run nothing")
	flag.Parse()
	var err error
	if o.mix, err = parseNATMix(*mix); err != nil {
		fmt.Fprintln(os.Stderr, "sim:", err)
		os.Exit(2)
	}
	if o.loss < 0 || o.loss >= 1 {
		fmt.Fprintln(os.Stderr, "sim: -loss must be in [0, 1)")
		os.Exit(2)
	}
	if o.nodes < 2 || o.bridges < 1 || o.perNode < 1 || o.pairs < 0 || (o.pairs == 0 && o.scenario != scenarioCRL) || o.parallel < 1 || o.workers < 1 {
		fmt.Fprintln(os.Stderr, "sim: -nodes must be at least 2; -bridges, -bridges-per-node, -pairs (but 0 with -scenario crl: only the revoked node's sessions), -parallel and -workers at least 1")
		os.Exit(2)
	}
	if o.scenario != scenarioExchange && o.scenario != scenarioCRL {
		fmt.Fprintf(os.Stderr, "sim: -scenario %q: want %s or %s\n", o.scenario, scenarioExchange, scenarioCRL)
		os.Exit(2)
	}
	if o.jsonOut == "" {
		o.jsonOut = "bench/sim/results.json"
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if o.render {
		if err := writeReport(o, nil); err != nil {
			log.Error("cannot write the report", "err", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	res, err := run(ctx, o, log)
	stop()
	if res == nil {
		log.Error("simulation failed", "err", err)
		os.Exit(1)
	}
	if err != nil {
		res.Errors = append(res.Errors, err.Error())
	}
	res.summarizeProfiles(log)
	fmt.Println(res.text())
	if o.noReport {
		return
	}
	if err := writeReport(o, res); err != nil {
		log.Error("cannot write the report", "err", err)
		os.Exit(1)
	}
	log.Info("wrote results", "markdown", o.out, "json", o.jsonOut)
}
