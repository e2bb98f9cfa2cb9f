package main

import (
	"fmt"
	"strings"
	"testing"
)

// The section renders the figures of a results.json, and says so when the
// part did not run.
func TestWriteL2(t *testing.T) {
	retr := 3
	cpu := 4.0
	run := func(bps float64, bytes int64) Run {
		return Run{Streams: 1, BitsPerSecond: bps, BytesReceived: bytes, Retransmits: &retr, DaemonCPUSeconds: &cpu,
			ProcCPUSeconds: map[string]float64{"sender": 3, "receiver": 1}}
	}
	sc := func(key, name string, bps float64) *ScenarioResult {
		s := &ScenarioResult{Key: key, Name: name, Throughput: []*Throughput{{Streams: 1, Runs: []Run{run(bps, 2e9)}}},
			Pings: []PingResult{{Sent: 3, Received: 3, RTTsMs: []float64{0.5, 0.4, 9}, AvgMs: 3.3, MaxMs: 9}}}
		s.Throughput[0].summarize()
		return s
	}
	r := &Results{L2: &L2Result{PartRun: PartRun{Repeats: 1, RunSeconds: 10, PingCount: 3}, Streams: []int{1}, PingInterval: 0.01,
		Scenarios: []*ScenarioResult{sc("l2", "L2 segment", 0.5e9), sc("l3", "L3 overlay", 2e9)},
		Syscalls:  map[string][]L2Syscalls{"l2": {{Streams: 1, BytesReceived: 2e9, SenderReads: 1e6, ReceiverWrites: 5e5, TUNTxDropped: 7}}},
		Devices:   map[string]string{"vxlan": "l2v1 mtu 1350 udpcsum"}}}
	var b strings.Builder
	writeL2(func(f string, a ...any) { b.WriteString(fmt.Sprintf(f, a...)) }, r)
	out := b.String()
	for _, want := range []string{
		"| L2 segment | 1 | 0.50 | 0.25× | 2.00 | 1.50 | 0.50 |",
		"| L2 segment | 0.500 | 9.000 |",
		"| L2 segment | 1 | 2.0 | 4.0 | 7 |",
		"l2v1 mtu 1350 udpcsum",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	b.Reset()
	writeL2(func(f string, a ...any) { b.WriteString(fmt.Sprintf(f, a...)) }, &Results{})
	if !strings.Contains(b.String(), "-only l2") {
		t.Errorf("without the part: %s", b.String())
	}
}
