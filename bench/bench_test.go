package main

import (
	"strings"
	"testing"
)

func TestComponentOf(t *testing.T) {
	for _, tc := range []struct{ fn, want string }{
		{"golang.org/x/crypto/chacha20poly1305.chacha20Poly1305Seal", "crypto"},
		{"crypto/internal/fips140/sha256.block", "crypto"},
		{"internal/runtime/syscall/linux.Syscall6", "system calls"},
		{"syscall.RawSyscall6", "system calls"},
		{"runtime.memmove", "memory copy"},
		{"runtime.mallocgc", "Go runtime"},
		{"github.com/tomoe-net/tomoe/internal/tunwrap.(*Wrapper).outbound", "tomoe"},
		{"golang.zx2c4.com/wireguard/device.(*Device).RoutineEncryption", "wireguard-go"},
		{"gvisor.dev/gvisor/pkg/tcpip/stack.(*NIC).DeliverNetworkPacket", "gVisor"},
		{"sync.(*poolDequeue).popHead", "Go standard library"},
		{"internal/poll.(*FD).Write", "Go standard library"},
		{"aeshashbody", "Go standard library"},
		{"golang.org/x/net/internal/socket.(*syscaller).sendmmsg", "other"},
	} {
		if got := componentOf(tc.fn); !strings.HasPrefix(got, tc.want) {
			t.Errorf("componentOf(%q) = %q, want %q...", tc.fn, got, tc.want)
		}
	}
}

const pprofOut = `File: tomoe
Type: cpu
Duration: 8s, Total samples = 5.07s (63.37%)
Showing nodes accounting for 4.6s, 90.73% of 5.07s total
Dropped 120 nodes (cum <= 0.03s)
      flat  flat%   sum%        cum   cum%
     1.44s 28.40% 28.40%      1.44s 28.40%  golang.org/x/crypto/chacha20poly1305.chacha20Poly1305Seal
     1.16s 22.88% 51.28%      1.16s 22.88%  internal/runtime/syscall/linux.Syscall6
     0.03s  0.59% 51.87%      0.13s  2.56%  github.com/tomoe-net/tomoe/internal/tunwrap.(*Wrapper).outbound
     0.03s  0.59% 52.46%      0.03s  0.59%  encoding/binary.bigEndian.Uint64 (inline)
`

func TestTrimTopAndComponents(t *testing.T) {
	header, table := trimTop(pprofOut)
	if header != "Duration: 8s, Total samples = 5.07s (63.37%)" {
		t.Errorf("header = %q", header)
	}
	if lines := strings.Split(strings.TrimSpace(table), "\n"); len(lines) != 5 || !strings.HasPrefix(strings.TrimSpace(lines[0]), "flat") {
		t.Errorf("table = %q", table)
	}
	cs := components(pprofOut)
	if len(cs) != 4 || !strings.HasPrefix(cs[0].Name, "crypto") || cs[0].FlatPercent != 28.40 {
		t.Errorf("components = %+v", cs)
	}
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.xs); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
}

func TestRunCPUPerGB(t *testing.T) {
	cpu := 8.0
	r := Run{BytesReceived: 2e9, DaemonCPUSeconds: &cpu, MachineCPUSeconds: 10}
	if v := r.DaemonCPUPerGB(); v == nil || *v != 4 {
		t.Errorf("DaemonCPUPerGB = %v, want 4", v)
	}
	if v := r.MachineCPUPerGB(); v != 5 {
		t.Errorf("MachineCPUPerGB = %v, want 5", v)
	}
	if v := (Run{BytesReceived: 1e9}).DaemonCPUPerGB(); v != nil {
		t.Errorf("raw veth DaemonCPUPerGB = %v, want nil", *v)
	}
}

func TestMergeResults(t *testing.T) {
	prev := &Results{Date: "old", Scenarios: []*ScenarioResult{{Key: "raw"}}, Memory: &MemoryResult{Peers: 1000}, Bridge: &BridgeResult{PartRun: PartRun{Date: "old bridge"}}}
	cur := &Results{Date: "new", Bridge: &BridgeResult{PartRun: PartRun{Date: "new bridge"}}}
	got := mergeResults(prev, cur, "bridge")
	if got.Date != "old" || len(got.Scenarios) != 1 || got.Memory == nil || got.Bridge.Date != "new bridge" {
		t.Errorf("-only bridge: got date %q, %d scenarios, memory %v, bridge %+v; want the old run with the new bridge part", got.Date, len(got.Scenarios), got.Memory, got.Bridge)
	}
	if prev.Bridge.Date != "old bridge" {
		t.Error("mergeResults changed the previous results")
	}
	mem := &Results{Date: "new", Memory: &MemoryResult{Peers: 1000}}
	got = mergeResults(prev, mem, "memory")
	if got.Date != "new" || len(got.Scenarios) != 0 || got.Bridge == nil || got.Bridge.Date != "old bridge" {
		t.Errorf("-only memory: got date %q, %d scenarios, bridge %+v; want this run plus the old bridge part", got.Date, len(got.Scenarios), got.Bridge)
	}
}

func TestColdLookupSummary(t *testing.T) {
	c := &ColdLookupResult{
		RTTMs:      []float64{3, 0, 5, 4}, // 0: no reply, left out
		CallMs:     []float64{4, 2000, 6, 5},
		DirectMs:   []float64{10, 0, 30, 20},
		RegisterMs: []float64{50, 60, 70, 80},
	}
	c.summarize()
	if c.MedianRTTMs != 4 || c.MaxRTTMs != 5 || c.MedianDirectMs != 20 || c.MaxDirectMs != 30 || c.MaxCallMs != 2000 || c.MedianRegister != 65 {
		t.Errorf("summary = %+v", c)
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 10000: "10,000", 1234567: "1,234,567", -2500: "-2,500"} {
		if got := thousands64(n); got != want {
			t.Errorf("thousands64(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestWriteMarkdownBridgeOnly(t *testing.T) {
	cpu := 1.0
	run := Run{Streams: 1, BytesReceived: 1e9, BitsPerSecond: 1e9, DaemonCPUSeconds: &cpu, MiddleCPUSeconds: &cpu}
	sc := func(key string) *ScenarioResult {
		t := &Throughput{Streams: 1, Runs: []Run{run}}
		t.summarize()
		return &ScenarioResult{Key: key, Name: key, Throughput: []*Throughput{t}}
	}
	r := &Results{Date: "d", Bridge: &BridgeResult{
		PartRun: PartRun{Date: "d", Repeats: 1}, Streams: []int{1},
		Scenarios: []*ScenarioResult{sc("wg-direct"), sc("wg-hub"), sc("tomoe-relay-udp")},
		Lookup:    &ColdLookupResult{Repeats: 1, RTTMs: []float64{3}, CallMs: []float64{4}, DirectMs: []float64{5}},
	}}
	var b strings.Builder
	writeMarkdown(&b, r)
	md := b.String()
	for _, want := range []string{"## Data plane\n\nNot measured", "## Bridges", "| tomoe-relay-udp | – | 1.00 | 1.00× | 1.00× | 1.00 |", "Bridge capacity", "Not measured"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestMergeResultsVPN(t *testing.T) {
	prev := &Results{Date: "old", Scenarios: []*ScenarioResult{{Key: "raw"}}, Bridge: &BridgeResult{PartRun: PartRun{Date: "old bridge"}}, VPN: &VPNResult{PartRun: PartRun{Date: "old vpn"}}}
	got := mergeResults(prev, &Results{Date: "new", VPN: &VPNResult{PartRun: PartRun{Date: "new vpn"}}}, "vpn")
	if got.Date != "old" || len(got.Scenarios) != 1 || got.Bridge.Date != "old bridge" || got.VPN.Date != "new vpn" {
		t.Errorf("-only vpn: got date %q, %d scenarios, bridge %+v, vpn %+v; want the old run with the new VPN part", got.Date, len(got.Scenarios), got.Bridge, got.VPN)
	}
	got = mergeResults(prev, &Results{Date: "new", Bridge: &BridgeResult{PartRun: PartRun{Date: "new bridge"}}}, "bridge")
	if got.VPN == nil || got.VPN.Date != "old vpn" {
		t.Errorf("-only bridge lost the VPN part: %+v", got.VPN)
	}
	got = mergeResults(prev, &Results{Date: "new"}, "dataplane")
	if got.VPN == nil || got.VPN.Date != "old vpn" || got.Bridge.Date != "old bridge" {
		t.Errorf("-only dataplane: bridge %+v, vpn %+v; want both kept", got.Bridge, got.VPN)
	}
	if prev.VPN.Date != "old vpn" {
		t.Error("mergeResults changed the previous results")
	}
}

func TestWriteMarkdownVPN(t *testing.T) {
	run := func(gbps, access float64) Run {
		return Run{Streams: 1, BytesReceived: 1e9, BitsPerSecond: gbps * 1e9, MachineCPUSeconds: 10,
			ProcCPUSeconds: map[string]float64{"access": access, "gateway": 2, "client": 1, "server": 3, "sender": 0.5, "sink": 0.25}}
	}
	sc := func(key string, r Run) *ScenarioResult {
		t := &Throughput{Streams: 1, Runs: []Run{r}}
		t.summarize()
		return &ScenarioResult{Key: key, Name: key, Throughput: []*Throughput{t}}
	}
	r := &Results{Date: "d", VPN: &VPNResult{
		PartRun:  PartRun{Date: "d2", Repeats: 1, RunSeconds: 10},
		Routed:   []*ScenarioResult{sc("tomoe-direct", run(2, 0)), sc("tomoe-routed-masq", run(1.5, 0)), sc("wg-routed", run(1, 0))},
		LANSaw:   map[string]string{"tomoe-routed-masq": "192.168.10.1"},
		Access:   []*ScenarioResult{sc("kernel", run(2, 4)), sc("socks5", run(0.8, 8)), sc("forward", run(1.2, 6))},
		Netstack: []Setting{{Name: "send buffer maximum", Value: "6 << 20", Source: "internal/netstack/tuning.go"}},
	}}
	var b strings.Builder
	writeMarkdown(&b, r)
	md := b.String()
	for _, want := range []string{
		"## VPN: routed subnets and userspace access",
		"| tomoe-routed-masq | client (10.99.0.2) → gw → 192.168.10.5; `masquerade = true`; the LAN host saw 192.168.10.1 | 1.50 | 0.75× | 1.50× |",
		"Routed / direct: tomoe routed with masquerade 0.75×.",
		"| socks5 |", "| 0.80 | 0.40× |",
		"SOCKS5 0.40× kernel mode, which does not meet the target of ≥ 0.5×; port forward 0.60× kernel mode, which meets the target",
		"| kernel | 4.00 | 1.00× | 3.00 | 0.75 | 10.00 | 1.00× |",
		"| socks5 | 8.00 | 2.00× |",
		"`6 << 20 (6 MiB)`",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

// The report shows the userspace stack's settings as read from the source;
// a renamed constant or field would show as "?".
func TestNetstackSettingsFound(t *testing.T) {
	for _, s := range netstackSettings("..") {
		if s.Value == "?" {
			t.Errorf("%s: not found in %s; update netstackKnobs", s.Name, s.Source)
		}
	}
}

func TestMergeResultsFlood(t *testing.T) {
	prev := &Results{Date: "old", Scenarios: []*ScenarioResult{{Key: "raw"}}, VPN: &VPNResult{PartRun: PartRun{Date: "old vpn"}}, Flood: &FloodResult{PartRun: PartRun{Date: "old flood"}}}
	got := mergeResults(prev, &Results{Date: "new", Flood: &FloodResult{PartRun: PartRun{Date: "new flood"}}}, "flood")
	if got.Date != "old" || len(got.Scenarios) != 1 || got.VPN.Date != "old vpn" || got.Flood.Date != "new flood" {
		t.Errorf("-only flood: got date %q, %d scenarios, vpn %+v, flood %+v; want the old run with the new flood part", got.Date, len(got.Scenarios), got.VPN, got.Flood)
	}
	for _, only := range []string{"vpn", "bridge", "dataplane"} {
		if got := mergeResults(prev, &Results{Date: "new"}, only); got.Flood == nil || got.Flood.Date != "old flood" {
			t.Errorf("-only %s lost the flood part: %+v", only, got.Flood)
		}
	}
	if prev.Flood.Date != "old flood" {
		t.Error("mergeResults changed the previous results")
	}
}

func TestHandshakeCounters(t *testing.T) {
	text := `# HELP tomoe_handshake_x25519_total X25519 operations spent opening handshake initiations.
# TYPE tomoe_handshake_x25519_total counter
tomoe_handshake_x25519_total 2000
tomoe_handshake_cookies_sent_total 1.5e+06
tomoe_handshake_initiations_total{result="denied"} 1000
tomoe_handshake_initiations_total{result="rate_limited"} 7
tomoe_peers{state="up"} 1
`
	got := handshakeCounters(text)
	want := map[string]float64{"x25519": 2000, "cookies_sent": 1.5e6, "initiations_denied": 1000, "initiations_rate_limited": 7}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

func TestParseUDP6(t *testing.T) {
	got := parseUDP6("Ip6InReceives 5\nUdp6InDatagrams                 \t12\nUdp6RcvbufErrors 3\nUdpLite6InDatagrams 9\n")
	if len(got) != 2 || got["InDatagrams"] != 12 || got["RcvbufErrors"] != 3 {
		t.Errorf("parseUDP6 = %v", got)
	}
}

func TestPercentile(t *testing.T) {
	xs := make([]float64, 200)
	for i := range xs {
		xs[i] = float64(200 - i) // 200 ... 1
	}
	for _, c := range []struct{ p, want float64 }{{50, 100}, {99, 198}, {100, 200}, {0.1, 1}} {
		if got := percentile(xs, c.p); got != c.want {
			t.Errorf("percentile(%g) = %g, want %g", c.p, got, c.want)
		}
	}
	if percentile(nil, 50) != 0 {
		t.Error("percentile of nothing is not 0")
	}
}

func TestWriteMarkdownFlood(t *testing.T) {
	run := func(gbps, x25519 float64) FloodRun {
		w := FloodWindow{Seconds: 10, CPUSeconds: map[string]float64{"victim": 5, "attacker": 10}, MachineCPUSeconds: 20,
			AttackerPackets: 2e6, Counters: map[string]float64{"x25519": x25519 * 10, "initiations_denied": x25519 * 5},
			VictimUDP: map[string]float64{"RcvbufErrors": 1000}, AttackerUDP: map[string]float64{"InDatagrams": 20}}
		return FloodRun{Repeat: 1, Throughput: Run{BitsPerSecond: gbps * 1e9}, During: w, PingWindow: w,
			Ping: PingResult{Sent: 2, RTTsMs: []float64{0.2, 0.4}}}
	}
	f := &FloodResult{PartRun: PartRun{Date: "d", Repeats: 1, RunSeconds: 10, PingCount: 2}, PingInterval: 0.01, Sources: 65536, SmartSources: 4096, PacedRate: 50000,
		Cases: []*FloodCase{
			{Victim: "tomoe", Flood: "none", Runs: []FloodRun{run(2, 0)}},
			{Victim: "tomoe", Flood: "control", Runs: []FloodRun{run(1.5, 0)}},
			{Victim: "tomoe", Flood: "many64", Runs: []FloodRun{run(1, 1000)}},
			{Victim: "wireguard-go", Flood: "none", Runs: []FloodRun{run(2, 0)}},
		}}
	var b strings.Builder
	writeMarkdown(&b, &Results{Date: "d", Flood: f})
	md := b.String()
	for _, want := range []string{
		"## Handshake flood",
		"| tomoe | (b) many /64s | 1.00 | 0.50× | 0.67× | 0.200 | 0.400 | 1.00× / 1.00× | 2/2 | 1.00 |",
		"tomoe under (b) many /64s: throughput 0.50× (does not meet the target)",
		"| tomoe | (b) many /64s | 200,000 | 100 | 0.50 | 0.50 | 1,000 | 0 | 2.0 | 1.00 | 2.00 |",
		"| (b) many /64s | 500 | 0 | 0 | 0 | 0 | 500 | 0 | – | – |",
		"| wireguard-go | no flood | 2.00 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}
