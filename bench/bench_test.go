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
	prev := &Results{Date: "old", Scenarios: []*ScenarioResult{{Key: "raw"}}, Memory: &MemoryResult{Peers: 1000}, Bridge: &BridgeResult{Date: "old bridge"}}
	cur := &Results{Date: "new", Bridge: &BridgeResult{Date: "new bridge"}}
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
		Date: "d", Repeats: 1, Streams: []int{1},
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
