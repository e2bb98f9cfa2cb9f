package main

import (
	"strings"
	"testing"

	"github.com/tomoe-net/tomoe/internal/config"
)

// TestCompareConfig: the defaults scenario's config leaves tomoe's
// defaults alone, and the tuned one is the same with tunedConfig merged.
func TestCompareConfig(t *testing.T) {
	e := &env{work: t.TempDir()}
	n, err := e.newTomoeNode("x")
	if err != nil {
		t.Fatal(err)
	}
	_, peer, err := newKey()
	if err != nil {
		t.Fatal(err)
	}
	def := config.Default()
	for _, c := range []struct {
		mode, overlay string
		port          int
		wantMode      string
		wantMTU       int
		wantPort      uint16
	}{
		{"kernel", "", config.DefaultPort, "kernel", config.DefaultMTU, config.DefaultPort},
		{"kernel", tunedConfig, config.DefaultPort, "kernel", tunedMTU(), config.DefaultPort},
		{"userspace", tunedConfig, 4611, "userspace", tunedMTU(), 4611},
	} {
		if err := compareConfig(c.mode, c.overlay)(n, c.port, []peerEntry{{peer, "10.88.2.1:4610"}}); err != nil {
			t.Fatal(err)
		}
		got, err := config.Load(n.config)
		if err != nil {
			t.Fatal(err)
		}
		if got.TUN.Mode.String() != c.wantMode || got.TUN.MTU != c.wantMTU || got.Listen.UDP.Port != c.wantPort {
			t.Errorf("%s %q: mode %s, MTU %d, port %d; want %s, %d, %d", c.mode, c.overlay, got.TUN.Mode, got.TUN.MTU, got.Listen.UDP.Port, c.wantMode, c.wantMTU, c.wantPort)
		}
		if got.TUN.Name != def.TUN.Name || got.Log.Level != def.Log.Level || len(got.Peers) != 1 || len(got.Policy.Allow) != 1 {
			t.Errorf("%s %q: TUN %q, log %v, %d peers, %d allow rules", c.mode, c.overlay, got.TUN.Name, got.Log.Level, len(got.Peers), len(got.Policy.Allow))
		}
	}
}

func TestMergeTables(t *testing.T) {
	dst := map[string]any{"tun": map[string]any{"mode": "kernel"}, "key_file": "k"}
	mergeTables(dst, map[string]any{"tun": map[string]any{"mtu": 1420}, "log": map[string]any{"level": "warn"}})
	if tun := dst["tun"].(map[string]any); tun["mode"] != "kernel" || tun["mtu"] != 1420 || dst["key_file"] != "k" || dst["log"] == nil {
		t.Errorf("merged: %v", dst)
	}
}

func TestMergeResultsCompare(t *testing.T) {
	prev := &Results{Date: "old", Scenarios: []*ScenarioResult{{Key: "raw"}}, Flood: &FloodResult{PartRun: PartRun{Date: "old flood"}}, Compare: &CompareResult{PartRun: PartRun{Date: "old compare"}}}
	got := mergeResults(prev, &Results{Date: "new", Compare: &CompareResult{PartRun: PartRun{Date: "new compare"}}}, "compare")
	if got.Date != "old" || len(got.Scenarios) != 1 || got.Flood.Date != "old flood" || got.Compare.Date != "new compare" {
		t.Errorf("-only compare: got date %q, %d scenarios, flood %+v, compare %+v", got.Date, len(got.Scenarios), got.Flood, got.Compare)
	}
	for _, only := range []string{"vpn", "bridge", "flood", "dataplane"} {
		if got := mergeResults(prev, &Results{Date: "new"}, only); got.Compare == nil || got.Compare.Date != "old compare" {
			t.Errorf("-only %s lost the compare part: %+v", only, got.Compare)
		}
	}
}

func TestWriteMarkdownCompare(t *testing.T) {
	cpu := func(v float64) *float64 { return &v }
	sc := func(key, name string, g1, g4, c1 float64, rtts ...float64) *ScenarioResult {
		s := &ScenarioResult{Key: key, Name: name}
		for _, x := range []struct {
			n int
			g float64
		}{{1, g1}, {4, g4}} {
			t := &Throughput{Streams: x.n, Runs: []Run{{Streams: x.n, BitsPerSecond: x.g * 1e9, BytesReceived: 1e9, DaemonCPUSeconds: cpu(c1)}}}
			t.summarize()
			s.Throughput = append(s.Throughput, t)
		}
		if len(rtts) > 0 {
			pr := PingResult{Tool: "ping -i 0.01", Sent: len(rtts), RTTsMs: rtts}
			pr.summarize()
			s.Pings = []PingResult{pr}
		}
		return s
	}
	c := &CompareResult{PartRun: PartRun{Date: "d", Repeats: 1, RunSeconds: 8, PingCount: 4}, Streams: []int{1, 4}, PingIntervalMs: 10, DefaultMTU: 1400,
		Others: map[string]string{"yggdrasil": "0.4.7", "nebula": "1.6.1"}, MTUs: map[string]int{"wg-direct": 1420, "tomoe-kernel-default": 1400},
		Scenarios: []*ScenarioResult{
			sc("wg-direct", "wireguard-go direct", 1, 2, 10, 1, 1, 1, 2),
			sc("tomoe-kernel-default", "tomoe kernel, defaults", 1.5, 3, 7, 0.5, 0.5, 0.5, 4),
			sc("tomoe-kernel-tuned", "tomoe kernel, tuned", 2, 4, 5),
			sc("tomoe-userspace", "tomoe userspace", 1.6, 2, 5),
			sc("tomoe-relay-udp", "tomoe relay, UDP", 1, 1, 10),
		}}
	var b strings.Builder
	writeMarkdown(&b, &Results{Date: "d", Compare: c})
	md := b.String()
	for _, want := range []string{
		"## Compared: tomoe, wireguard-go, yggdrasil and nebula (issue 15)",
		"| tomoe kernel, defaults | 1400 | 1.50 | 3.00 | 1.50× / 1.50× | ≥ 1.5× (stretch 2×) |",
		"| tomoe kernel, defaults | 7.00 | 7.00 | 0.70× / 0.70× |",
		"| tomoe kernel, defaults | `ping -i 0.01` | 0.500 | 4.000 | 4.000 | 4/4 | 0.50× |",
		"| tomoe kernel, tuned: throughput × wireguard-go direct | 2.00× / 2.00× | ≥ 1.5× (stretch 2×) |",
		"| tomoe relay, UDP (through a bridge): throughput × wireguard-go direct | 1.00× / 0.50× | ≥ 1.0× |",
		"| tomoe userspace (its own stack) × tomoe kernel, tuned (same config) | 0.80× / 0.50× | ≥ 0.8× |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}
