package main

// This file measures a bridge's capacity: one userspace-mode bridge and
// many simulated registered nodes (bench/bridgesim), for the bridge's
// memory per registered idle node and the lookups it answers per second.
//
//	tbench-cap-m   the bridge at 10.88.9.1:4610
//	tbench-cap-s   bridgesim; node i at the (i+1)th address of 10.89.0.0/16,
//	               all local to the namespace (ip route add local … dev lo)

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
)

const (
	capBridge = "10.88.9.1"
	capSim    = "10.88.9.2"
	capNet    = "10.89.0.0/16"
	// lookupWindow is how many lookups the simulator keeps outstanding:
	// enough that the bridge, not the round trip, sets the pace (on 2
	// cores 64 already do; more only queue).
	lookupWindow = 256
)

// bridgeCapacity starts a bridge that lets p.simNodes keys register
// (config [[bridge.allow]]), reads its memory, registers the simulated
// nodes, reads it again, and runs the lookup load.
func (e *env) bridgeCapacity(ctx context.Context, b bins, p bridgeParams) (*CapacityResult, error) {
	res := &CapacityResult{Nodes: p.simNodes, Window: lookupWindow}
	m, s := nsPrefix+"cap-m", nsPrefix+"cap-s"
	steps := [][]string{
		{"ip", "netns", "add", m},
		{"ip", "netns", "add", s},
		{"ip", "-n", m, "link", "add", "vs", "mtu", "1500", "type", "veth", "peer", "name", "veth0", "netns", s},
		{"ip", "-n", m, "link", "set", "lo", "up"},
		{"ip", "-n", s, "link", "set", "lo", "up"},
		{"ip", "-n", m, "addr", "add", capBridge + "/24", "dev", "vs"},
		{"ip", "-n", s, "addr", "add", capSim + "/24", "dev", "veth0"},
		{"ip", "-n", m, "link", "set", "vs", "up"},
		{"ip", "-n", s, "link", "set", "veth0", "up"},
		// Every address of capNet is this namespace's own: the simulated
		// nodes bind them without configuring 10,000 addresses.
		{"ip", "-n", s, "route", "add", "local", capNet, "dev", "lo"},
		{"ip", "-n", m, "route", "add", capNet, "via", capSim},
	}
	for _, st := range steps {
		if _, err := run(ctx, st[0], st[1:]...); err != nil {
			return nil, fmt.Errorf("capacity namespaces: %w", err)
		}
	}

	keysFile := filepath.Join(e.work, "sims.keys")
	pubs, err := writeSimKeys(keysFile, p.simNodes)
	if err != nil {
		return nil, err
	}
	bn, err := e.newTomoeNode("cap-bridge")
	if err != nil {
		return nil, err
	}
	pb, err := e.startBridge(ctx, b.tomoe, "tomoe-cap-bridge", m, bn, pubs)
	if err != nil {
		return nil, err
	}
	defer pb.stop(10 * time.Second)
	if res.Before, err = readMem(ctx, pb.Pid(), p.settle, 5); err != nil {
		return nil, err
	}
	res.Before.HeapInuseBytes = heapInuse(ctx, bn.sock)

	sim, err := e.start(s, "bridgesim", true, nil, b.bridgesim,
		"-bridge", fmt.Sprintf("%s:%d", capBridge, bridgePort), "-bridge-key", bn.pub.String(), "-keys", keysFile, "-net", capNet)
	if err != nil {
		return nil, err
	}
	defer sim.stop(5 * time.Second)
	if _, err := readLine(ctx, sim, 60*time.Second); err != nil {
		return nil, err
	}

	var reg struct {
		Error      string  `json:"error"`
		Registered int     `json:"registered"`
		Refused    int     `json:"refused"`
		Refusal    string  `json:"refusal"`
		Resends    int     `json:"resends"`
		Seconds    float64 `json:"seconds"`
	}
	if err := simCommand(ctx, sim, "register 60", 90*time.Second, &reg); err != nil {
		return nil, err
	}
	res.Registered, res.Refused, res.RegisterResends, res.RegisterSeconds = reg.Registered, reg.Refused, reg.Resends, reg.Seconds
	if reg.Error != "" {
		return res, fmt.Errorf("bridgesim register: %s", reg.Error)
	}
	if reg.Refused > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d registrations refused: %s", reg.Refused, reg.Refusal))
	}
	if res.After, err = readMem(ctx, pb.Pid(), p.settle, 5); err != nil {
		return res, err
	}
	res.After.HeapInuseBytes = heapInuse(ctx, bn.sock)
	out, err := run(ctx, b.tomoe, "bridge", "nodes", "--json", "--socket", bn.sock)
	if err != nil {
		return res, err
	}
	var listed []json.RawMessage
	if err := json.Unmarshal([]byte(out), &listed); err != nil {
		return res, fmt.Errorf("tomoe bridge nodes --json: %w", err)
	}
	res.Listed = len(listed)

	var lk struct {
		Error         string  `json:"error"`
		Seconds       float64 `json:"seconds"`
		Requesters    int     `json:"requesters"`
		Sent          int64   `json:"sent"`
		Answered      int64   `json:"answered"`
		Wrong         int64   `json:"wrong"`
		Lost          int64   `json:"lost"`
		Introductions int64   `json:"introductions"`
		PerSecond     float64 `json:"per_second"`
		MedianMs      float64 `json:"median_ms"`
		P99Ms         float64 `json:"p99_ms"`
	}
	b0, err1 := cpuSeconds(pb.Pid())
	s0, err2 := cpuSeconds(sim.Pid())
	m0, err3 := machineBusySeconds()
	if err := firstErr(err1, err2, err3); err != nil {
		return res, err
	}
	cmd := fmt.Sprintf("lookup %g %d", p.lookupSeconds, lookupWindow)
	if err := simCommand(ctx, sim, cmd, time.Duration(p.lookupSeconds*float64(time.Second))+30*time.Second, &lk); err != nil {
		return res, err
	}
	b1, err1 := cpuSeconds(pb.Pid())
	s1, err2 := cpuSeconds(sim.Pid())
	m1, err3 := machineBusySeconds()
	if err := firstErr(err1, err2, err3); err != nil {
		return res, err
	}
	if lk.Error != "" {
		return res, fmt.Errorf("bridgesim lookup: %s", lk.Error)
	}
	res.BridgeCPUSeconds, res.SimCPUSeconds, res.MachineCPUSeconds = b1-b0, s1-s0, m1-m0
	res.LookupSeconds, res.Requesters = lk.Seconds, lk.Requesters
	res.LookupsSent, res.LookupsAnswered, res.LookupsWrong, res.LookupsLost = lk.Sent, lk.Answered, lk.Wrong, lk.Lost
	res.Introductions, res.LookupsPerSecond = lk.Introductions, lk.PerSecond
	res.LookupMedianMs, res.LookupP99Ms = lk.MedianMs, lk.P99Ms
	if res.AfterLookups, err = readMem(ctx, pb.Pid(), p.settle, 5); err != nil {
		return res, err
	}
	res.AfterLookups.HeapInuseBytes = heapInuse(ctx, bn.sock)
	res.compute()
	return res, pb.failure()
}

// writeSimKeys writes n new private keys to path, one per line, and
// returns their public keys.
func writeSimKeys(path string, n int) ([]identity.PublicKey, error) {
	var b strings.Builder
	pubs := make([]identity.PublicKey, n)
	for i := range pubs {
		k, pub, err := newKey()
		if err != nil {
			return nil, err
		}
		pubs[i] = pub
		b.WriteString(k.Base64() + "\n")
	}
	return pubs, os.WriteFile(path, []byte(b.String()), 0o600)
}

// simCommand sends one command to bridgesim and decodes its answer.
func simCommand(ctx context.Context, sim *proc, cmd string, timeout time.Duration, out any) error {
	if _, err := fmt.Fprintln(sim.stdin, cmd); err != nil {
		return fmt.Errorf("bridgesim: %w", err)
	}
	line, err := readLine(ctx, sim, timeout)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(line), out); err != nil {
		return fmt.Errorf("bridgesim said %q: %w", line, err)
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// compute derives the per-node figures.
func (c *CapacityResult) compute() {
	if c.Registered == 0 {
		return
	}
	n := float64(c.Registered)
	c.RSSPerNodeKB = float64(c.After.RSSKB-c.Before.RSSKB) / n
	if c.After.HeapInuseBytes > 0 && c.Before.HeapInuseBytes > 0 {
		c.HeapPerNodeKB = float64(c.After.HeapInuseBytes-c.Before.HeapInuseBytes) / 1024 / n
	}
}
