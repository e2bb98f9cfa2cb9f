package main

// This file measures memory per peer: a userspace-mode tomoe node with 0
// and with 1,000 static peers (idle: registered, not in the WireGuard
// device; then active: each put into the device by a ping), and, for
// reference, plain wireguard-go with 1,000 configured peers.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// memSample is one memory reading of a process.
type memSample struct {
	RSSKB      int64   `json:"rss_kb"`       // min of RSSReadsKB
	RSSReadsKB []int64 `json:"rss_reads_kb"` // the individual VmRSS reads
	// HeapInuseBytes is go_memstats_heap_inuse_bytes after a forced GC
	// (tomoe only; 0 if unavailable).
	HeapInuseBytes int64 `json:"heap_inuse_bytes,omitempty"`
}

// readMem waits settle, then reads VmRSS reads times and keeps the minimum:
// the Go runtime returns freed pages lazily, so single reads are noisy
// upwards.
func readMem(ctx context.Context, pid int, settle time.Duration, reads int) (memSample, error) {
	select {
	case <-ctx.Done():
		return memSample{}, ctx.Err()
	case <-time.After(settle):
	}
	var s memSample
	for i := range reads {
		if i > 0 {
			select {
			case <-ctx.Done():
				return s, ctx.Err()
			case <-time.After(400 * time.Millisecond):
			}
		}
		kb, err := rssKB(pid)
		if err != nil {
			return s, err
		}
		s.RSSReadsKB = append(s.RSSReadsKB, kb)
	}
	s.RSSKB = slices.Min(s.RSSReadsKB)
	return s, nil
}

// heapInuse forces a GC in the node (the heap profile handler does so with
// gc=1) and reads go_memstats_heap_inuse_bytes from its metrics.
func heapInuse(ctx context.Context, sock string) int64 {
	hc := unixHTTP(sock)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://tomoe/debug/pprof/heap?gc=1", nil)
	if resp, err := hc.Do(req); err == nil {
		resp.Body.Close()
	}
	text, err := adminapi.NewClient(sock).Metrics(ctx)
	if err != nil {
		return 0
	}
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return int64(f)
			}
		}
	}
	return 0
}

// fetchHeap saves the node's heap profile (in-use and allocated memory).
func fetchHeap(ctx context.Context, sock, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://tomoe/debug/pprof/heap", nil)
	if err != nil {
		return err
	}
	resp, err := unixHTTP(sock).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("heap profile: %s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// heapTop saves the node's heap profile to path and returns pprof -top of
// the in-use space, or "" after adding a note.
func heapTop(ctx context.Context, tomoeBin, sock, path string, notes *[]string) string {
	if err := fetchHeap(ctx, sock, path); err != nil {
		*notes = append(*notes, "heap profile: "+err.Error())
		return ""
	}
	out, err := pprofTop(ctx, tomoeBin, path, "-sample_index=inuse_space", "-nodecount=15")
	if err != nil {
		*notes = append(*notes, "heap profile: "+err.Error())
		return ""
	}
	_, top := trimTop(out)
	return top
}

// unreachableEndpoint is peer i's endpoint: 10.250.0.0/16 has no route in
// the namespace, so handshake initiations fail at once and nothing answers.
func unreachableEndpoint(i int) string {
	return fmt.Sprintf("10.250.%d.%d:4610", i/250, i%250+1)
}

// measureMemory runs the memory scenario in namespace A. The data-plane
// scenarios must be stopped first.
//
// If late is positive, the active node is read once more that long after
// the peers were activated.
func (e *env) measureMemory(ctx context.Context, tomoeBin, wgBin string, peers int, settle, late time.Duration, profDir string) (*MemoryResult, error) {
	res := &MemoryResult{Peers: peers, Settle: settle.String()}
	keys := make([]identity.PublicKey, peers)
	for i := range keys {
		_, pub, err := newKey()
		if err != nil {
			return nil, err
		}
		keys[i] = pub
	}

	// tomoe, no peers.
	n0, err := e.newTomoeNode("m0")
	if err != nil {
		return nil, err
	}
	if err := n0.writeConfig("userspace", 4612, nil); err != nil {
		return nil, err
	}
	p0, err := e.start(nsA, "tomoe-mem-0", false, nil, tomoeBin, "up", "-c", n0.config)
	if err != nil {
		return nil, err
	}
	if err := waitNode(ctx, p0, n0.sock); err != nil {
		return nil, err
	}
	if res.Tomoe0, err = readMem(ctx, p0.Pid(), settle, 5); err != nil {
		return nil, err
	}
	res.Tomoe0.HeapInuseBytes = heapInuse(ctx, n0.sock)
	p0.stop(5 * time.Second)

	// tomoe, 1,000 static peers: idle, then active.
	n1, err := e.newTomoeNode("m1")
	if err != nil {
		return nil, err
	}
	entries := make([]peerEntry, peers)
	for i, k := range keys {
		entries[i] = peerEntry{k, unreachableEndpoint(i)}
	}
	if err := n1.writeConfig("userspace", 4612, entries); err != nil {
		return nil, err
	}
	p1, err := e.start(nsA, "tomoe-mem-1000", false, nil, tomoeBin, "up", "-c", n1.config)
	if err != nil {
		return nil, err
	}
	defer p1.stop(5 * time.Second)
	if err := waitNode(ctx, p1, n1.sock); err != nil {
		return nil, err
	}
	if res.TomoeIdle, err = readMem(ctx, p1.Pid(), settle, 5); err != nil {
		return nil, err
	}
	res.TomoeIdle.HeapInuseBytes = heapInuse(ctx, n1.sock)

	start := time.Now()
	res.PingErrors = activateAll(ctx, n1.sock, keys)
	activated := time.Now()
	res.ActivationSeconds = activated.Sub(start).Seconds()
	cl := adminapi.NewClient(n1.sock)
	if list, err := cl.Peers(ctx); err == nil {
		for _, p := range list {
			if p.Active {
				res.ActivePeers++
			}
		}
	}
	if res.TomoeActive, err = readMem(ctx, p1.Pid(), settle, 5); err != nil {
		return nil, err
	}
	res.TomoeActive.HeapInuseBytes = heapInuse(ctx, n1.sock)
	if list, err := cl.Peers(ctx); err == nil {
		res.ActivePeersAfter = 0
		for _, p := range list {
			if p.Active {
				res.ActivePeersAfter++
			}
		}
	}
	res.HeapTopActive = heapTop(ctx, tomoeBin, n1.sock, filepath.Join(profDir, "tomoe-heap-active.pprof"), &res.Notes)
	if late > 0 {
		// wireguard-go gives up on a handshake after its 20th attempt
		// (about 103 s, at most 107 s with jitter) and drops the packets it
		// staged for the peer; tomoe removes a peer that never answered
		// after 2 minutes, checked every 30 s (so not before ~140 s here).
		// In between, an active peer costs what the device keeps for it
		// without staged packets.
		// Two forced GCs 5 s before the reading: the dropped buffers go
		// back to wireguard-go's sync.Pool-based pools, which the first GC
		// only moves to the victim cache.
		sleep(ctx, late-5*time.Second-time.Since(activated))
		heapInuse(ctx, n1.sock)
		heapInuse(ctx, n1.sock)
		if res.TomoeLate, err = readMem(ctx, p1.Pid(), 5*time.Second, 5); err != nil {
			return nil, err
		}
		res.TomoeLate.HeapInuseBytes = heapInuse(ctx, n1.sock)
		res.HeapTopLate = heapTop(ctx, tomoeBin, n1.sock, filepath.Join(profDir, "tomoe-heap-late.pprof"), &res.Notes)
		res.LateAfter = time.Since(activated).Round(time.Second).String()
		if list, err := cl.Peers(ctx); err == nil {
			for _, p := range list {
				if p.Active {
					res.ActivePeersLate++
				}
			}
		}
	}
	if err := p1.failure(); err != nil {
		return nil, err
	}
	p1.stop(5 * time.Second)

	// wireguard-go with the same peers configured in an up device.
	if res.WireGuard0, res.WireGuardN, err = e.wireguardMemory(ctx, wgBin, keys, settle); err != nil {
		res.Notes = append(res.Notes, "wireguard-go reference failed: "+err.Error())
	}
	res.compute()
	return res, nil
}

// activateAll pings every peer once through the node (in parallel, 200 ms
// timeout): each ping puts its peer into the WireGuard device. No reply
// comes; that is expected. It returns how many pings failed for another
// reason than a timeout.
func activateAll(ctx context.Context, sock string, keys []identity.PublicKey) int {
	cl := adminapi.NewClient(sock)
	work := make(chan identity.PublicKey)
	var errs atomic.Int64
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := cl.Ping(pctx, adminapi.PingRequest{Address: k.Address().String(), TimeoutMs: 200})
				cancel()
				if err != nil {
					errs.Add(1)
				}
			}
		}()
	}
	for _, k := range keys {
		select {
		case work <- k:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	return int(errs.Load())
}

// wireguardMemory measures plain wireguard-go with no peers, then with
// keys configured (each with its /128 and site /64 as tomoe would, and an
// unreachable endpoint) on an up interface, without traffic.
func (e *env) wireguardMemory(ctx context.Context, wgBin string, keys []identity.PublicKey, settle time.Duration) (memSample, memSample, error) {
	const ifname = "wgm"
	sock := "/var/run/wireguard/" + ifname + ".sock"
	os.Remove(sock)
	e.onCleanup(func() { os.Remove(sock) })
	p, err := e.start(nsA, "wireguard-go-mem", false, []string{"LOG_LEVEL=error"}, wgBin, "-f", ifname)
	if err != nil {
		return memSample{}, memSample{}, err
	}
	defer p.stop(5 * time.Second)
	if err := waitFor(ctx, 10*time.Second, "wireguard-go "+ifname, func() bool {
		_, err := os.Stat(sock)
		return err == nil || p.exited()
	}); err != nil {
		return memSample{}, memSample{}, err
	}
	k, _, err := newKey()
	if err != nil {
		return memSample{}, memSample{}, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[Interface]\nPrivateKey = %s\nListenPort = 51821\n", k.Base64())
	conf0 := filepath.Join(e.work, "wgm0.conf")
	if err := os.WriteFile(conf0, []byte(b.String()), 0o600); err != nil {
		return memSample{}, memSample{}, err
	}
	for i, pk := range keys {
		fmt.Fprintf(&b, "\n[Peer]\nPublicKey = %s\nAllowedIPs = %s/128, %s\nEndpoint = %s\n", pk, pk.Address(), pk.SitePrefix(), unreachableEndpoint(i))
	}
	confN := filepath.Join(e.work, "wgmN.conf")
	if err := os.WriteFile(confN, []byte(b.String()), 0o600); err != nil {
		return memSample{}, memSample{}, err
	}
	if _, err := inNS(ctx, nsA, "wg", "setconf", ifname, conf0); err != nil {
		return memSample{}, memSample{}, err
	}
	if _, err := run(ctx, "ip", "-n", nsA, "link", "set", ifname, "up"); err != nil {
		return memSample{}, memSample{}, err
	}
	m0, err := readMem(ctx, p.Pid(), settle, 5)
	if err != nil {
		return m0, memSample{}, err
	}
	if _, err := inNS(ctx, nsA, "wg", "setconf", ifname, confN); err != nil {
		return m0, memSample{}, err
	}
	mN, err := readMem(ctx, p.Pid(), settle, 5)
	if err != nil {
		return m0, mN, err
	}
	return m0, mN, p.failure()
}

// compute derives the per-peer figures.
func (m *MemoryResult) compute() {
	n := float64(m.Peers)
	m.IdlePerPeerKB = float64(m.TomoeIdle.RSSKB-m.Tomoe0.RSSKB) / n
	m.ActivePerPeerKB = float64(m.TomoeActive.RSSKB-m.Tomoe0.RSSKB) / n
	m.IdleHeapPerPeerKB = float64(m.TomoeIdle.HeapInuseBytes-m.Tomoe0.HeapInuseBytes) / 1024 / n
	m.ActiveHeapPerPeerKB = float64(m.TomoeActive.HeapInuseBytes-m.Tomoe0.HeapInuseBytes) / 1024 / n
	if m.TomoeLate.RSSKB > 0 {
		m.LatePerPeerKB = float64(m.TomoeLate.RSSKB-m.Tomoe0.RSSKB) / n
		m.LateHeapPerPeerKB = float64(m.TomoeLate.HeapInuseBytes-m.Tomoe0.HeapInuseBytes) / 1024 / n
	}
	if m.WireGuardN.RSSKB > 0 {
		m.WireGuardPerPeerKB = float64(m.WireGuardN.RSSKB-m.WireGuard0.RSSKB) / n
	}
}
