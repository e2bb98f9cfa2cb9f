// Command bridgesim simulates many tomoe nodes registered with one bridge,
// for the benchmark in ../ (go run ./bench). Each simulated node has its
// own key and its own UDP socket, bound to its own address and port (the
// bridge rate-limits control frames from keys it has not seen yet per
// source address, as it should: real nodes come from many addresses). It
// speaks the bridge protocol with internal/bridge's frame functions.
//
//	bridgesim -bridge 10.88.9.1:4610 -bridge-key KEY -keys sims.keys -net 10.89.0.0/16
//
// The keys file holds one base64 private key per line; node i binds the
// (i+1)th address of -net, port 20000+i. The addresses must be local (for
// example `ip route add local 10.89.0.0/16 dev lo`) and routed back to
// this namespace by the bridge's side.
//
// Once its sockets are open it prints {"ready":true,...}, then reads
// commands on stdin, one per line, answering each with one JSON line:
//
//	register TIMEOUT_SECONDS     register every node (keeps at most 256 unanswered)
//	lookup SECONDS WINDOW        look up other nodes' addresses for SECONDS,
//	                             keeping WINDOW lookups outstanding
//
// It exits at the end of stdin.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tomoe-net/tomoe/bench/cmdloop"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
)

const (
	basePort       = 20000
	registerWindow = 256 // unanswered registrations at most
	resendAfter    = time.Second
	lookupLost     = time.Second // a lookup unanswered this long counts as lost
)

// node is one simulated node.
type node struct {
	i      int
	pub    identity.PublicKey
	addr   netip.Addr // overlay address
	local  netip.AddrPort
	shared wire.SharedKey // with the bridge
	conn   *net.UDPConn

	registered atomic.Bool
	refused    atomic.Bool
}

// sim is the simulated population and its counters.
type sim struct {
	nodes  []*node
	bridge netip.AddrPort
	token  string

	regDone chan int // node index, when Registered or Refused arrives

	mu       sync.Mutex // guards pending, latencies, sem accounting by answer and sweep
	pending  map[uint64]pendingLookup
	latency  []time.Duration
	sem      chan struct{}
	endOfRun time.Time

	refusal       atomic.Value // string: the first refusal's reason
	answered      atomic.Int64 // found with the right key, before endOfRun
	answeredLate  atomic.Int64 // likewise, after endOfRun
	wrong         atomic.Int64
	lost          atomic.Int64
	introductions atomic.Int64
	badFrames     atomic.Int64
}

type pendingLookup struct {
	sent time.Time
	want identity.PublicKey
}

func main() {
	var (
		bridgeEP, bridgeKey, keysPath, network, token string
	)
	flag.StringVar(&bridgeEP, "bridge", "", "the bridge's UDP IP:PORT")
	flag.StringVar(&bridgeKey, "bridge-key", "", "the bridge's public key")
	flag.StringVar(&keysPath, "keys", "", "file of base64 private keys, one per simulated node")
	flag.StringVar(&network, "net", "10.89.0.0/16", "the nodes' source addresses (local to this namespace)")
	flag.StringVar(&token, "token", "", "join token to present in registrations (default: none, keys are in bridge.allow)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, bridgeEP, bridgeKey, keysPath, network, token); err != nil {
		fmt.Fprintln(os.Stderr, "bridgesim:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, bridgeEP, bridgeKey, keysPath, network, token string) error {
	ep, err := netip.ParseAddrPort(bridgeEP)
	if err != nil {
		return fmt.Errorf("-bridge %q: %w", bridgeEP, err)
	}
	bkey, err := identity.ParsePublicKey(bridgeKey)
	if err != nil {
		return fmt.Errorf("-bridge-key: %w", err)
	}
	pfx, err := netip.ParsePrefix(network)
	if err != nil || !pfx.Addr().Is4() {
		return fmt.Errorf("-net %q: want an IPv4 prefix", network)
	}
	keys, err := readKeys(keysPath)
	if err != nil {
		return err
	}
	if err := raiseFileLimit(len(keys) + 1024); err != nil {
		return err
	}
	s, err := newSim(ep, bkey, keys, pfx, token)
	if err != nil {
		return err
	}
	defer s.close()
	out := json.NewEncoder(os.Stdout)
	out.Encode(map[string]any{"ready": true, "nodes": len(s.nodes)})
	return s.serve(ctx, out)
}

// newSim opens the nodes' sockets and starts reading them.
func newSim(bridgeEP netip.AddrPort, bridgeKey identity.PublicKey, keys []identity.PrivateKey, pfx netip.Prefix, token string) (*sim, error) {
	nodes, err := newNodes(keys, bridgeKey, pfx)
	if err != nil {
		return nil, err
	}
	s := &sim{nodes: nodes, bridge: bridgeEP, token: token, regDone: make(chan int, len(keys)), pending: make(map[uint64]pendingLookup)}
	for _, n := range s.nodes {
		go s.read(n)
	}
	return s, nil
}

// close closes the sockets, which ends the readers.
func (s *sim) close() {
	for _, n := range s.nodes {
		n.conn.Close()
	}
}

func readKeys(path string) ([]identity.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys []identity.PrivateKey
	for i, line := range strings.Fields(string(b)) {
		k, err := identity.ParsePrivateKey(line)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, i+1, err)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 || len(keys) > 40000 {
		return nil, fmt.Errorf("%s: %d keys, want 1..40000", path, len(keys))
	}
	return keys, nil
}

// raiseFileLimit makes room for n open files (root may raise the hard
// limit too).
func raiseFileLimit(n int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= uint64(n) {
		return nil
	}
	lim.Cur = uint64(n)
	lim.Max = max(lim.Max, lim.Cur)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", n, err)
	}
	return nil
}

// newNodes derives every node's public key and shared key with the
// bridge (one X25519 each, in parallel) and opens its socket.
func newNodes(keys []identity.PrivateKey, bridgeKey identity.PublicKey, pfx netip.Prefix) ([]*node, error) {
	nodes := make([]*node, len(keys))
	addr := pfx.Masked().Addr()
	for i := range nodes {
		addr = addr.Next()
		if !pfx.Contains(addr) {
			return nil, fmt.Errorf("%s has fewer than %d addresses", pfx, len(keys))
		}
		nodes[i] = &node{i: i, local: netip.AddrPortFrom(addr, uint16(basePort+i))}
	}
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(nodes); i += workers {
				n := nodes[i]
				n.pub = keys[i].Public()
				n.addr = n.pub.Address()
				n.shared = wire.Precompute(keys[i], bridgeKey)
			}
		})
	}
	wg.Wait()
	for _, n := range nodes {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(n.local))
		if err != nil {
			for _, m := range nodes[:n.i] {
				m.conn.Close()
			}
			return nil, fmt.Errorf("node %d: %w (are the addresses local, e.g. ip route add local %s dev lo?)", n.i, err, pfx)
		}
		n.conn = c
	}
	return nodes, nil
}

// read handles what the bridge sends node n until its socket closes.
func (s *sim) read(n *node) {
	buf := make([]byte, 1024)
	for {
		m, _, err := n.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		msg, err := wire.Open(buf[:m], &n.shared)
		if err != nil {
			s.badFrames.Add(1)
			continue
		}
		switch msg.Kind {
		case wire.KindRegistered:
			if n.registered.CompareAndSwap(false, true) {
				s.regDone <- n.i
			}
		case wire.KindRefused:
			s.refusal.CompareAndSwap(nil, msg.Text)
			if n.refused.CompareAndSwap(false, true) {
				s.regDone <- n.i
			}
		case wire.KindLookupReply:
			s.answer(msg, time.Now())
		case wire.KindIntroduce:
			s.introductions.Add(1)
		}
	}
}

// send seals m from n to the bridge and sends it from n's socket.
func (s *sim) send(n *node, m *wire.Message) error {
	m.Time = time.Now().UnixNano()
	frame, err := wire.Seal(make([]byte, 0, 192), n.pub, &n.shared, m)
	if err != nil {
		return err
	}
	_, err = n.conn.WriteToUDPAddrPort(frame, s.bridge)
	return err
}

func (s *sim) serve(ctx context.Context, out *json.Encoder) error {
	return cmdloop.Serve(ctx, os.Stdin, out, s.command)
}

func (s *sim) command(ctx context.Context, f []string) (any, error) {
	switch {
	case f[0] == "register" && len(f) == 2:
		secs, err := strconv.ParseFloat(f[1], 64)
		if err != nil || secs <= 0 {
			return nil, fmt.Errorf("TIMEOUT_SECONDS %q: want a positive number", f[1])
		}
		return s.register(ctx, time.Duration(secs*float64(time.Second)))
	case f[0] == "lookup" && len(f) == 3:
		secs, err := strconv.ParseFloat(f[1], 64)
		if err != nil || secs <= 0 {
			return nil, fmt.Errorf("SECONDS %q: want a positive number", f[1])
		}
		window, err := strconv.Atoi(f[2])
		if err != nil || window < 1 || window > 1<<16 {
			return nil, fmt.Errorf("WINDOW %q: want 1..65536", f[2])
		}
		return s.lookup(ctx, time.Duration(secs*float64(time.Second)), window)
	}
	return nil, errors.New("want: register TIMEOUT_SECONDS | lookup SECONDS WINDOW")
}

// registerResult answers the register command.
type registerResult struct {
	Nodes      int     `json:"nodes"`
	Registered int     `json:"registered"`
	Refused    int     `json:"refused"`
	Refusal    string  `json:"refusal,omitempty"`
	Resends    int     `json:"resends"`
	Seconds    float64 `json:"seconds"` // first Register until the last answer
}

// register registers every node, at most registerWindow unanswered at a
// time, resending a Register unanswered after resendAfter.
func (s *sim) register(ctx context.Context, timeout time.Duration) (registerResult, error) {
	res := registerResult{Nodes: len(s.nodes)}
	start := time.Now()
	sent := make([]time.Time, len(s.nodes))
	answered := make([]bool, len(s.nodes))
	next, inflight, done := 0, 0, 0
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	register := func(n *node) error {
		m := wire.Message{Kind: wire.KindRegister, Token: s.token, Endpoints: []netip.AddrPort{n.local}}
		sent[n.i] = time.Now()
		return s.send(n, &m)
	}
	for done < len(s.nodes) {
		for inflight < registerWindow && next < len(s.nodes) {
			if err := register(s.nodes[next]); err != nil {
				return res, fmt.Errorf("node %d: %w", next, err)
			}
			next++
			inflight++
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-deadline:
			return res, fmt.Errorf("%d of %d nodes answered within %s", done, len(s.nodes), timeout)
		case i := <-s.regDone:
			if !answered[i] {
				answered[i] = true
				done++
				inflight--
			}
		case now := <-tick.C:
			for i := range next {
				if !answered[i] && now.Sub(sent[i]) > resendAfter {
					if err := register(s.nodes[i]); err != nil {
						return res, fmt.Errorf("node %d: %w", i, err)
					}
					res.Resends++
				}
			}
		}
	}
	res.Seconds = time.Since(start).Seconds()
	for _, n := range s.nodes {
		switch {
		case n.registered.Load():
			res.Registered++
		case n.refused.Load():
			res.Refused++
		}
	}
	if r, ok := s.refusal.Load().(string); ok {
		res.Refusal = r
	}
	return res, nil
}

// lookupResult answers the lookup command.
type lookupResult struct {
	Seconds       float64 `json:"seconds"`
	Window        int     `json:"window"`
	Requesters    int     `json:"requesters"`
	Sent          int64   `json:"sent"`
	Answered      int64   `json:"answered"` // found, right key, within the run
	AnsweredLate  int64   `json:"answered_late"`
	Wrong         int64   `json:"wrong"`
	Lost          int64   `json:"lost"`
	Introductions int64   `json:"introductions"`
	BadFrames     int64   `json:"bad_frames"`
	PerSecond     float64 `json:"per_second"`
	MedianMs      float64 `json:"median_ms"`
	P99Ms         float64 `json:"p99_ms"`
}

// lookup keeps window lookups outstanding for d: node r (round robin over
// all nodes, so each stays far below the bridge's per-node rate limit)
// asks for the address of another node, and each correct answer lets the
// next lookup go.
func (s *sim) lookup(ctx context.Context, d time.Duration, window int) (lookupResult, error) {
	if len(s.nodes) < 2 {
		return lookupResult{}, errors.New("lookups need at least two nodes")
	}
	for _, n := range s.nodes {
		if !n.registered.Load() {
			return lookupResult{}, fmt.Errorf("node %d is not registered: run register first", n.i)
		}
	}
	s.mu.Lock()
	clear(s.pending)
	s.latency = s.latency[:0]
	s.sem = make(chan struct{}, window)
	start := time.Now()
	s.endOfRun = start.Add(d)
	s.mu.Unlock()
	intro0, bad0 := s.introductions.Load(), s.badFrames.Load()
	s.answered.Store(0)
	s.answeredLate.Store(0)
	s.wrong.Store(0)
	s.lost.Store(0)

	sweepDone := make(chan struct{})
	sweepStop := make(chan struct{})
	go s.sweep(sweepStop, sweepDone)

	res := lookupResult{Window: window, Requesters: len(s.nodes)}
	total := len(s.nodes)
	end := time.NewTimer(d)
	defer end.Stop()
	var seq uint64
	var sendErr error
loop:
	for r := 0; ; r++ {
		select {
		case s.sem <- struct{}{}:
		case <-end.C:
			break loop
		case <-ctx.Done():
			sendErr = ctx.Err()
			break loop
		}
		i, j := pair(r, total)
		from, to := s.nodes[i], s.nodes[j]
		seq++
		s.mu.Lock()
		s.pending[seq] = pendingLookup{sent: time.Now(), want: to.pub}
		s.mu.Unlock()
		m := wire.Message{Kind: wire.KindLookup, Seq: seq, Address: to.addr}
		if err := s.send(from, &m); err != nil {
			sendErr = fmt.Errorf("node %d: %w", from.i, err)
			break
		}
		res.Sent++
	}
	elapsed := time.Since(start)
	// Let the last answers arrive, or be swept as lost.
	deadline := time.Now().Add(lookupLost + 200*time.Millisecond)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		n := len(s.pending)
		s.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(sweepStop)
	<-sweepDone
	if sendErr != nil {
		return res, sendErr
	}

	res.Seconds = elapsed.Seconds()
	res.Answered, res.AnsweredLate = s.answered.Load(), s.answeredLate.Load()
	res.Wrong, res.Lost = s.wrong.Load(), s.lost.Load()
	res.Introductions = s.introductions.Load() - intro0
	res.BadFrames = s.badFrames.Load() - bad0
	res.PerSecond = float64(res.Answered) / res.Seconds
	s.mu.Lock()
	lat := slices.Clone(s.latency)
	s.mu.Unlock()
	if len(lat) > 0 {
		slices.Sort(lat)
		res.MedianMs = float64(lat[len(lat)/2].Microseconds()) / 1000
		res.P99Ms = float64(lat[len(lat)*99/100].Microseconds()) / 1000
	}
	return res, nil
}

// answer takes a LookupReply: it frees a window slot if the lookup was
// outstanding.
func (s *sim) answer(m wire.Message, now time.Time) {
	s.mu.Lock()
	p, ok := s.pending[m.Seq]
	if ok {
		delete(s.pending, m.Seq)
		if m.Found && m.Key == p.want {
			s.latency = append(s.latency, now.Sub(p.sent))
		}
	}
	end := s.endOfRun
	s.mu.Unlock()
	if !ok {
		return // swept as lost already
	}
	<-s.sem
	switch {
	case !m.Found || m.Key != p.want:
		s.wrong.Add(1)
	case now.Before(end):
		s.answered.Add(1)
	default:
		s.answeredLate.Add(1)
	}
}

// sweep counts lookups unanswered for lookupLost as lost and frees their
// window slots, until stop closes.
func (s *sim) sweep(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			s.mu.Lock()
			var freed int
			for seq, p := range s.pending {
				if now.Sub(p.sent) > lookupLost {
					delete(s.pending, seq)
					freed++
				}
			}
			s.mu.Unlock()
			for range freed {
				<-s.sem
			}
			s.lost.Add(int64(freed))
		}
	}
}

// pair is the r-th lookup's requester and target among n nodes (n >= 2):
// the requesters take turns, and each asks for a different node every
// round.
func pair(r, n int) (from, to int) {
	from = r % n
	return from, (from + 1 + (r/n)%(n-1)) % n
}
