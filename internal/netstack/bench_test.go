package netstack

import (
	"io"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// BenchmarkTCPThroughput measures one bulk TCP stream between two stacks
// wired back to back (see pair), over several emulated wires, with the
// default tuning and with each setting changed in turn:
//
//	go test -run '^$' -bench TCPThroughput ./internal/netstack/
//
// The sub-benchmark name is wire/variant. The pump copies every packet once
// more than WireGuard would, and there is no encryption, so absolute figures
// are an upper bound on what userspace mode can carry, and differences between
// variants are what the benchmark is for.
func BenchmarkTCPThroughput(b *testing.B) {
	wires := []struct {
		name string
		lc   linkCond
	}{
		{"direct", linkCond{}},
		{"rtt2ms", linkCond{delay: time.Millisecond}},
		{"rtt2ms-loss0.2%", linkCond{delay: time.Millisecond, lossEvery: 500}},
		{"rtt20ms", linkCond{delay: 10 * time.Millisecond}},
		// Realistic bottlenecks: a rate limit with a drop-tail queue, so
		// slow start ends in a burst of loss as on a real path.
		{"lan1g", linkCond{delay: 500 * time.Microsecond, rate: 125e6, queue: 2 * time.Millisecond}},
		{"wan400m", linkCond{delay: 10 * time.Millisecond, rate: 50e6, queue: 10 * time.Millisecond}},
	}
	variants := []struct {
		name string
		set  func(*tuning)
	}{
		{"default", func(*tuning) {}},
		{"reno", func(t *tuning) { t.congestionControl = "reno" }},
		{"nosack", func(t *tuning) { t.sack = false }},
		// RACK can stall a connection for good with the pinned gVisor
		// (see defaultTuning), failing the run at benchDeadline, so it is
		// measured only on request: NETSTACK_BENCH_RACK=1.
		{"rack", func(t *tuning) { t.recovery = tcpip.TCPRACKLossDetection }},
		{"nomoderate", func(t *tuning) { t.moderateRcvBuf = false }},
		{"gvisorbuffers", func(t *tuning) { // gVisor's own 1 MiB..4 MiB
			t.sndBuf.Max, t.rcvBuf.Max = 4<<20, 4<<20
		}},
		{"smallbuffers", func(t *tuning) { // 256 KiB: one BDP at 1 Gbit/s, 2 ms
			t.sndBuf = tcpip.TCPSendBufferSizeRangeOption{Min: 4096, Default: 256 << 10, Max: 256 << 10}
			t.rcvBuf = tcpip.TCPReceiveBufferSizeRangeOption{Min: 4096, Default: 256 << 10, Max: 256 << 10}
		}},
		{"queue512", func(t *tuning) { t.queueLen = 512 }},
		{"rxcsumoffload", func(t *tuning) { t.rxChecksumOffload = true }},
		{"nogso", func(t *tuning) { t.gso = false }},
		{"nogro", func(t *tuning) { t.gro = false }},
		{"nogsogro", func(t *tuning) { t.gso, t.gro = false, false }},
	}
	for _, w := range wires {
		for _, v := range variants {
			if v.name == "rack" && os.Getenv("NETSTACK_BENCH_RACK") == "" {
				continue
			}
			b.Run(w.name+"/"+v.name, func(b *testing.B) {
				tn := defaultTuning()
				v.set(&tn)
				benchTCP(b, tn, w.lc)
			})
		}
	}
}

// cpuTime returns the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchDeadline bounds one sub-benchmark's connection.
const benchDeadline = time.Minute

func benchTCP(b *testing.B, tn tuning, lc linkCond) {
	p := newPair(b, tn, lc, []netip.Addr{addrA}, []netip.Addr{addrB})
	l, err := p.b.ListenTCP(netip.AddrPortFrom(addrB, 9000))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	received := make(chan int64, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			received <- -1
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(benchDeadline))
		n, _ := io.Copy(io.Discard, c)
		received <- n
	}()
	c, err := p.a.DialContext(b.Context(), "tcp", "[fc22::2]:9000")
	if err != nil {
		b.Fatal(err)
	}
	// A stalled connection fails the benchmark instead of hanging it.
	c.SetDeadline(time.Now().Add(benchDeadline))
	chunk := make([]byte, 128<<10)
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	n := <-received
	b.StopTimer()
	// CPU per byte is steadier than throughput on a shared machine: it
	// counts this process's CPU time, not what other processes took.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(n), "cpu-ns/B")
	if want := int64(b.N) * int64(len(chunk)); n != want {
		b.Fatalf("received %d bytes, want %d", n, want)
	}
	st := p.a.Stats()
	b.ReportMetric(float64(st.DroppedQueueFull), "qdrops")
}
