package main

// This file runs a simulation: bridges first, then the nodes (in
// parallel, bounded, watching the process's memory), then every allowed
// pair's exchange, the paths they took, and revocations.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/node"
)

// running is a started member.
type running struct {
	*member
	node *node.Node
	echo net.PacketConn
}

// sim is one run in progress.
type sim struct {
	o       options
	log     *slog.Logger
	plan    *plan
	bridges []*running
	nodes   []*running // nil where a node was not started
	res     *Result
}

// run builds the world, runs the phases and fills in a Result. A phase
// that cannot finish (memory, time) ends the run early with the figures
// so far and Result.Stopped saying why.
func run(ctx context.Context, o options, log *slog.Logger) (res *Result, err error) {
	started := time.Now()
	res = newResult(o)
	stopProfile := func() {}
	dir, err := os.MkdirTemp("", "tomoe-sim-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if o.maxRSSMiB > 0 {
		debug.SetMemoryLimit(int64(o.maxRSSMiB) << 20)
	}
	if o.profiles != "" {
		if err := os.MkdirAll(o.profiles, 0o755); err != nil {
			return nil, err
		}
		f, err := os.Create(filepath.Join(o.profiles, fmt.Sprintf("cpu-%d.pprof", o.nodes)))
		if err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, err
		}
		res.Profiles = append(res.Profiles, f.Name())
		var once sync.Once
		stopProfile = func() {
			once.Do(func() {
				pprof.StopCPUProfile()
				f.Close()
			})
		}
		defer stopProfile()
	}

	peak := watchRSS()
	defer func() { res.PeakRSSMiB = float64(peak()) / (1 << 20) }()
	log.Info("building the world", "nodes", o.nodes, "bridges", o.bridges, "nat", o.mix.String())
	p, err := buildPlan(o, dir)
	if err != nil {
		return nil, err
	}
	s := &sim{o: o, log: log, plan: p, res: res, nodes: make([]*running, len(p.nodes))}
	defer func() {
		stopProfile() // the profile is of the simulation, not of its teardown
		t0 := time.Now()
		s.close()
		log.Info("closed every node", "seconds", time.Since(t0).Seconds())
	}()
	res.Pairs = len(p.pairs)
	for _, m := range p.nodes {
		res.Sites[m.kind]++
	}

	for _, m := range p.bridges {
		r, err := s.start(m)
		if err != nil {
			return nil, fmt.Errorf("bridge %s: %w", m.name, err)
		}
		s.bridges = append(s.bridges, r)
	}
	base := measureMemory()
	if err := s.startNodes(ctx); err != nil {
		return nil, err
	}
	up := measureMemory()
	res.Load[0] = loadavg()
	res.memory(base, up)
	if s.o.profiles != "" {
		s.heapProfile("heap-up")
	}
	if res.Stopped == "" && ctx.Err() == nil && o.scenario == scenarioCRL {
		s.exchange(ctx) // the sessions the list will cut, and the certificates the peers hold
		s.crl(ctx)
	} else if res.Stopped == "" && ctx.Err() == nil {
		if s.o.idle > 0 {
			s.idle(ctx)
		}
		s.exchange(ctx)
		after := measureMemory()
		res.HeapAfterExchangeKB = float64(after.heap-base.heap) / 1024 / float64(max(res.Started, 1))
		res.RSSAfterExchangeKB = float64(int64(after.rss)-int64(base.rss)) / 1024 / float64(max(res.Started, 1))
		if s.o.profiles != "" {
			s.heapProfile("heap-exchanged")
		}
		s.paths(ctx)
		s.revocations(ctx)
	}
	res.DurationSeconds = time.Since(started).Seconds()
	return res, ctx.Err()
}

// watchRSS samples the resident memory every 200 ms until the function
// it returns is called, which returns the highest sample.
func watchRSS() func() uint64 {
	var peak atomic.Uint64
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			if r := rssBytes(); r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		return peak.Load()
	}
}

// start runs m's node and its echo service.
func (s *sim) start(m *member) (*running, error) {
	cfg, err := s.plan.config(m)
	if err != nil {
		return nil, err
	}
	h := m.host
	var udp conn.Bind = h.NewBind()
	if m.kind != "bridge" && s.o.bindBatch > 0 {
		udp = smallBatch{udp, s.o.bindBatch}
	}
	n, err := node.New(cfg, node.Options{Version: "sim", StackBatchSize: s.o.stackBatch, Transport: &node.Transport{
		UDP:            udp,
		DialTCP:        h.Dial, // the bridge protocol's TCP fallback stays in the simulated internet
		ListenTCP:      h.Listen,
		LocalAddrs:     func() []netip.Addr { return []netip.Addr{h.Addr()} },
		InterfaceAddrs: h.InterfaceAddrs,
	}})
	if err != nil {
		return nil, err
	}
	r := &running{member: m, node: n}
	if m.kind == "bridge" {
		return r, nil
	}
	r.echo, err = n.Stack().ListenUDP(netip.AddrPortFrom(n.Address(), echoPort))
	if err != nil {
		n.Close()
		return nil, err
	}
	go echo(r.echo)
	return r, nil
}

// smallBatch is a Bind that tells wireguard-go a smaller batch than the
// world's (which the bridges keep): wireguard-go reads at most that many
// datagrams at once, into as many 64 KiB buffers.
type smallBatch struct {
	conn.Bind
	size int
}

func (b smallBatch) BatchSize() int { return b.size }

// echo answers every datagram with itself until c is closed.
func echo(c net.PacketConn) {
	buf := make([]byte, 256)
	for {
		k, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		c.WriteTo(buf[:k], from)
	}
}

// startNodes starts the nodes, o.parallel at a time, and waits until
// every bridge has registered all of its nodes. It stops starting nodes
// when the process's resident memory passes o.maxRSSMiB.
func (s *sim) startNodes(ctx context.Context) error {
	t0 := time.Now()
	var next atomic.Int64
	var stop atomic.Value // string: why starting stopped
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr error
	var errOnce sync.Once
	progress := time.Now()
	var progressMu sync.Mutex
	for range s.o.parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && stop.Load() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(s.plan.nodes) {
					return
				}
				if i%64 == 0 && s.o.maxRSSMiB > 0 {
					if rss := rssBytes(); rss > uint64(s.o.maxRSSMiB)<<20 {
						stop.CompareAndSwap(nil, fmt.Sprintf("resident memory %d MiB passed -max-rss %d MiB after %d nodes", rss>>20, s.o.maxRSSMiB, i))
						return
					}
				}
				r, err := s.start(s.plan.nodes[i])
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = fmt.Errorf("node %d: %w", i, err) })
					continue
				}
				s.nodes[i] = r
				progressMu.Lock()
				if time.Since(progress) > 10*time.Second {
					progress = time.Now()
					s.log.Info("starting nodes", "started", i, "rss_mib", rssBytes()>>20, "goroutines", runtime.NumGoroutine())
				}
				progressMu.Unlock()
			}
		}()
	}
	wg.Wait()
	s.res.StartSeconds = time.Since(t0).Seconds()
	for _, r := range s.nodes {
		if r != nil {
			s.res.Started++
		}
	}
	if why, _ := stop.Load().(string); why != "" {
		s.res.Stopped = why
		s.log.Warn("stopped starting nodes", "why", why)
	}
	if failed.Load() > 0 {
		s.res.StartFailures = int(failed.Load())
		s.res.Errors = append(s.res.Errors, fmt.Sprintf("%d nodes failed to start; the first: %v", failed.Load(), firstErr))
	}
	if s.res.Started == 0 {
		return fmt.Errorf("no node started: %v", firstErr)
	}
	s.log.Info("nodes started", "started", s.res.Started, "seconds", s.res.StartSeconds)

	// Registered: each bridge counts the nodes that joined it.
	want := make([]int, len(s.bridges))
	for _, r := range s.nodes {
		if r != nil {
			for _, b := range r.bridges {
				want[b]++
			}
		}
	}
	deadline := time.Now().Add(s.o.timeout)
	for {
		all := true
		for b, br := range s.bridges {
			if st, _ := br.node.BridgeStats(); st.Registered < want[b] {
				all = false
			}
		}
		if all {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.res.Stopped = fmt.Sprintf("not every node registered within %v", s.o.timeout)
			return nil
		}
		time.Sleep(100 * time.Millisecond) // polling the bridges' counts: nothing signals registration
	}
	s.res.RegisteredSeconds = time.Since(t0).Seconds()
	s.log.Info("all nodes registered", "seconds", s.res.RegisteredSeconds)
	return nil
}

// idle measures the process's CPU time over o.idle with every node up
// and registered and no traffic but their own (keepalives, probe rounds,
// polls).
func (s *sim) idle(ctx context.Context) {
	c0, t0 := cpuTime(), time.Now()
	select {
	case <-ctx.Done():
		return
	case <-time.After(s.o.idle): // the window is what is measured
	}
	s.res.IdleCores = (cpuTime() - c0).Seconds() / time.Since(t0).Seconds()
	s.log.Info("at rest", "cores", s.res.IdleCores)
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// exchange has every allowed pair whose nodes both run exchange a
// datagram: the client sends to the server's echo port through its
// overlay (looking the server up through a bridge) and waits for the
// answer, retrying each second until o.timeout.
func (s *sim) exchange(ctx context.Context) {
	var pairs []pair
	for _, p := range s.plan.pairs {
		if s.nodes[p.client] != nil && s.nodes[p.server] != nil {
			pairs = append(pairs, p)
		}
	}
	s.res.PairsRun = len(pairs)
	lookups0 := s.bridgeStats().Lookups
	t0 := time.Now()
	deadline := t0.Add(s.o.timeout)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var over atomic.Bool
	lat := make([]time.Duration, len(pairs))
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range min(s.o.workers, len(pairs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(pairs) || ctx.Err() != nil {
					return
				}
				if i%64 == 0 && s.o.maxRSSMiB > 0 && rssBytes() > uint64(s.o.maxRSSMiB)<<20 && over.CompareAndSwap(false, true) {
					mu.Lock()
					s.res.Stopped = fmt.Sprintf("resident memory %d MiB passed -max-rss %d MiB during the exchange, after %d pairs had started", rssBytes()>>20, s.o.maxRSSMiB, i)
					mu.Unlock()
					cancel()
					return
				}
				_, err := s.exchangeOne(ctx, pairs[i], deadline)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					if errors.Is(err, errNoAnswer) {
						s.res.NoAnswer++
					} else {
						s.res.DialFailed++
					}
					mu.Unlock()
					continue
				}
				mu.Lock()
				lat[i] = time.Since(t0) // when, in the phase, this pair had exchanged
				mu.Unlock()
			}
		}()
	}
	stopProgress := s.progress("exchanging", func() []any {
		n := 0
		mu.Lock()
		for _, d := range lat {
			if d > 0 {
				n++
			}
		}
		mu.Unlock()
		return []any{"pairs_done", n, "pairs", len(pairs), "rss_mib", rssBytes() >> 20}
	})
	wg.Wait()
	stopProgress()
	s.res.Load[1] = loadavg()
	elapsed := time.Since(t0)
	lookups := s.bridgeStats().Lookups - lookups0
	var done []time.Duration
	for _, d := range lat {
		if d > 0 {
			done = append(done, d)
		}
	}
	slices.Sort(done)
	s.res.PairsOK = len(done)
	if len(done) > 0 {
		s.res.AllPairsSeconds = done[len(done)-1].Seconds()
		s.res.HalfPairsSeconds = done[len(done)/2].Seconds()
	}
	if firstErr != nil {
		s.res.Errors = append(s.res.Errors, fmt.Sprintf("%d of %d pairs exchanged nothing; the first: %v", len(pairs)-len(done), len(pairs), firstErr))
	}
	s.res.Lookups = lookups
	s.res.Drops = s.plan.world.Stats()
	for _, b := range s.bridges {
		st, _ := b.node.BridgeStats()
		s.res.LookupsLimited += st.LookupsLimited
		s.res.StrangersLimited += st.StrangersLimited
		s.res.RelayDroppedQueue += st.RelayDroppedQueue
	}
	s.res.LookupsPerSecond = float64(lookups) / elapsed.Seconds()
	s.log.Info("pairs exchanged", "ok", len(done), "pairs", len(pairs), "seconds", elapsed.Seconds(), "lookups", lookups)
}

// progress logs what fields says every 10 s until the function it
// returns is called.
func (s *sim) progress(msg string, fields func() []any) func() {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				s.log.Info(msg, fields()...)
			}
		}
	}()
	return func() { close(done) }
}

var errNoAnswer = errors.New("no answer before the deadline")

// exchangeOne sends datagrams from p's client to p's server until one
// comes back, and returns how long that took.
func (s *sim) exchangeOne(ctx context.Context, p pair, deadline time.Time) (time.Duration, error) {
	t0 := time.Now()
	c, err := s.dial(ctx, p, deadline)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if roundTrip(c, time.Second) == nil {
			return time.Since(t0), nil
		}
	}
	return 0, fmt.Errorf("%s -> %s: %w", s.plan.nodes[p.client].name, s.plan.nodes[p.server].name, errNoAnswer)
}

// dial opens p's client's UDP socket to p's server's echo port, retrying
// while the lookup fails (a bridge that has not heard of the server yet).
func (s *sim) dial(ctx context.Context, p pair, deadline time.Time) (net.Conn, error) {
	cl, sv := s.nodes[p.client], s.nodes[p.server]
	to := netip.AddrPortFrom(sv.node.Address(), echoPort).String()
	for {
		dctx, cancel := context.WithDeadline(ctx, deadline)
		c, err := cl.node.DialContext(dctx, "udp6", to)
		cancel()
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("%s -> %s: %w", cl.name, sv.name, err)
		}
		time.Sleep(200 * time.Millisecond) // the lookup's own retries are done: back off before asking again
	}
}

// roundTrip sends one datagram on c and waits up to wait for it to come back.
func roundTrip(c net.Conn, wait time.Duration) error {
	msg := []byte("tomoe-sim")
	c.SetWriteDeadline(time.Now().Add(wait)) // a full stack send queue blocks a write
	if _, err := c.Write(msg); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 64)
	k, err := c.Read(buf)
	if err != nil {
		return err
	}
	if string(buf[:k]) != string(msg) {
		return errors.New("echo: wrong answer")
	}
	return nil
}

// paths counts the pairs whose client reaches its server directly, once
// the prober has had o.settle to find direct paths, and the bytes the
// bridges relayed.
func (s *sim) paths(ctx context.Context) {
	if s.o.settle > 0 {
		time.Sleep(s.o.settle) // what is measured is the paths after this much time
	}
	byClient := map[int][]int{}
	for _, p := range s.plan.pairs {
		if s.nodes[p.client] != nil && s.nodes[p.server] != nil {
			byClient[p.client] = append(byClient[p.client], p.server)
		}
	}
	for c, servers := range byClient {
		if ctx.Err() != nil {
			return
		}
		peers, err := s.nodes[c].node.StatusArea().Peers(ctx)
		if err != nil {
			continue
		}
		path := map[string]string{}
		for _, pe := range peers {
			path[pe.Address] = pe.Path
		}
		for _, sv := range servers {
			switch path[s.nodes[sv].node.Address().String()] {
			case "direct":
				s.res.Direct++
			case "relay":
				s.res.Relayed++
			}
		}
	}
	st := s.bridgeStats()
	s.res.RelayBytes = st.RelayedBytes
	s.res.RelayFrames = st.RelayedFrames
	s.res.Introductions = st.Introductions
}

// revocations revokes, on up to o.revoke servers, the rule that lets an
// allowed client in (POST /v1/policy/revoke, called in process), and
// checks that the client's next datagram goes unanswered. The pairs share
// no node, and run at once.
func (s *sim) revocations(ctx context.Context) {
	rng := rand.New(rand.NewPCG(s.o.seed, 0x7265766f6b65))
	var cands []pair
	for _, p := range s.plan.pairs {
		if s.nodes[p.client] != nil && s.nodes[p.server] != nil {
			cands = append(cands, p)
		}
	}
	rng.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	used := map[int]bool{}
	var chosen []pair
	for _, p := range cands {
		if len(chosen) >= s.o.revoke {
			break
		}
		if !used[p.server] && !used[p.client] {
			used[p.server], used[p.client] = true, true
			chosen = append(chosen, p)
		}
	}
	var mu sync.Mutex
	var calls []time.Duration
	var wg sync.WaitGroup
	for _, p := range chosen {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, cut, err := s.revokeOne(ctx, p)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				s.res.Errors = append(s.res.Errors, err.Error())
				return
			}
			calls = append(calls, d)
			if cut {
				s.res.RevokedCut++
			}
		}()
	}
	wg.Wait()
	s.res.Revocations = len(calls)
	if len(calls) > 0 {
		slices.Sort(calls)
		s.res.RevokeMedianMS = ms(calls[len(calls)/2])
		s.res.RevokeMaxMS = ms(calls[len(calls)-1])
	}
}

// revokeOne checks that p's client gets answers, revokes its rule on p's
// server, and reports how long the call took and whether the client's
// next datagram went unanswered.
func (s *sim) revokeOne(ctx context.Context, p pair) (time.Duration, bool, error) {
	c, err := s.dial(ctx, p, time.Now().Add(10*time.Second))
	if err != nil {
		return 0, false, fmt.Errorf("revocation: %w", err)
	}
	defer c.Close()
	if err := roundTrip(c, 2*time.Second); err != nil { // a live session first
		return 0, false, fmt.Errorf("revocation: before it: %w", err)
	}
	t0 := time.Now()
	_, err = s.nodes[p.server].node.PolicyArea().Revoke(ctx, adminapi.RevokeRequest{From: s.nodes[p.client].node.PublicKey().String()})
	d := time.Since(t0)
	if err != nil {
		return 0, false, fmt.Errorf("revoke: %w", err)
	}
	return d, roundTrip(c, time.Second) != nil, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// bridgeStats adds up the bridges' counters.
func (s *sim) bridgeStats() (sum struct{ Lookups, RelayedBytes, RelayedFrames, Introductions uint64 }) {
	for _, b := range s.bridges {
		st, _ := b.node.BridgeStats()
		sum.Lookups += st.Lookups
		sum.RelayedBytes += st.RelayedBytes
		sum.RelayedFrames += st.RelayedFrames
		sum.Introductions += st.Introductions
	}
	return sum
}

// heapProfile writes a heap profile called name into o.profiles.
func (s *sim) heapProfile(name string) {
	path := filepath.Join(s.o.profiles, fmt.Sprintf("%s-%d.pprof", name, s.o.nodes))
	f, err := os.Create(path)
	if err != nil {
		s.log.Warn("heap profile", "err", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		s.log.Warn("heap profile", "err", err)
		return
	}
	s.res.Profiles = append(s.res.Profiles, path)
}

// close stops every node, 64 at a time (Close mostly waits), then the world.
func (s *sim) close() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, r := range append(slices.Clone(s.nodes), s.bridges...) {
		if r == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if r.echo != nil {
				r.echo.Close()
			}
			r.node.Close()
		}()
	}
	wg.Wait()
	s.plan.world.Close()
}
