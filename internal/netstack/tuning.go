package netstack

import (
	"fmt"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// tuning is the set of stack settings that decide throughput. New always uses
// defaultTuning; the struct exists so BenchmarkTCPThroughput can switch each
// setting off and measure what it buys.
type tuning struct {
	// congestionControl is "cubic" or "reno".
	congestionControl string
	// sack enables selective acknowledgements (RFC 2018).
	sack bool
	// recovery selects RACK loss detection (tcpip.TCPRACKLossDetection
	// and flags); 0 means SACK scoreboard and duplicate-ACK counting.
	recovery tcpip.TCPRecovery
	// moderateRcvBuf lets the receive window grow with the measured rate,
	// like Linux's tcp_moderate_rcvbuf, up to rcvBuf.Max.
	moderateRcvBuf bool
	sndBuf         tcpip.TCPSendBufferSizeRangeOption
	rcvBuf         tcpip.TCPReceiveBufferSizeRangeOption
	// queueLen is the outbound queue's capacity in packets.
	queueLen int
	// rxChecksumOffload skips gVisor's verification of inbound checksums.
	rxChecksumOffload bool
	// gso lets TCP build segments of up to 64 KiB and split them into
	// MSS-sized packets in one go (gVisor's software GSO).
	gso bool
	// gro merges each Write's runs of TCP segments into larger packets
	// before the stack sees them (gro.go).
	gro bool
}

// Buffer sizes. One bandwidth-delay product at 2 Gbit/s and a 1 ms RTT is
// only 250 KB, but userspace WireGuard adds queueing (batches of 128 packets
// each side, scheduler latency on a loaded host) and paths between nodes are
// often 10-50 ms. The maxima cover about 1 Gbit/s at 50 ms and keep receive
// headroom over send, the shape of Linux's tcp_rmem/tcp_wmem and Tailscale's
// choice. They are ceilings, not allocations: moderation grows a connection's
// window only as far as its measured rate needs, so idle and slow connections
// stay at gVisor's 1 MiB default. Measured (BenchmarkTCPThroughput, 2 cores):
// at 20 ms RTT 6/8 MiB carried ~110 MB/s against 73 MB/s with gVisor's 4 MiB
// maxima and 3 MB/s with 256 KiB; on the 400 Mbit/s bottleneck 15 vs 11 MB/s.
const (
	sndBufMax = 6 << 20
	rcvBufMax = 8 << 20
)

// defaultQueueLen is the outbound queue capacity. gVisor does not pace, so a
// sender whose window opens releases its whole burst at once; a queue shorter
// than the burst turns it into self-inflicted loss. 4096 packets at a
// 1280-byte MTU is 5 MB, close to sndBufMax. Measured: with 512 the queue
// dropped thousands of packets per run and a 20 ms RTT stream fell from ~110
// to ~15 MB/s. Memory is held only while packets are actually queued, and a
// full queue still drops rather than blocking the stack.
const defaultQueueLen = 4096

// defaultTuning returns the settings New uses. See BenchmarkTCPThroughput for
// the measurements behind each choice.
func defaultTuning() tuning {
	return tuning{
		// CUBIC grows the window by time since the last loss rather than
		// per RTT, so it refills a fat pipe after a loss sooner than Reno.
		// Measured: on the 400 Mbit/s, 20 ms bottleneck 15 vs 10 MB/s for
		// Reno; on paths without a bottleneck Reno was as fast and steadier
		// (the pinned CUBIC lets an ACK shrink cwnd when W_cubic(t+RTT) <
		// cwnd; fixed upstream by google/gvisor#13958). The pinned gVisor
		// has the uint64 fix for the cwnd overflow of gVisor issue 11632.
		congestionControl: "cubic",
		// SACK lets the sender repair several losses in one RTT instead of
		// one per RTT. It matters most of all: on the 400 Mbit/s bottleneck,
		// where slow start ends in a burst of loss, 15 MB/s with SACK and
		// under 1 MB/s without. gVisor defaults it on; set explicitly so an
		// upgrade cannot silently turn it off.
		sack: true,
		// RACK (RFC 8985) stays off, deliberately, although it is gVisor's
		// default: with the pinned gVisor, bulk transfers through a
		// rate-limited drop-tail bottleneck (20 ms RTT, 400 Mbit/s) stalled
		// in 7 of 40 runs with RACK on, the sender parked in SACK recovery
		// sending nothing, not even on RTO, and in 0 of 40 with it off; a
		// benchmark run on the 1 Gbit/s LAN wire hung the same way.
		// gVisor issue 6113 reports such RACK stalls; Tailscale turned
		// RACK off with gVisor of this vintage (tailscale#14896) and back
		// on only after later gVisor RACK fixes (google/gvisor#13680).
		// Loss is then detected from the SACK scoreboard and duplicate
		// ACKs. Re-measure with NETSTACK_BENCH_RACK=1 and
		// TestTCPThroughBottleneck when gVisor is upgraded.
		recovery: 0,
		// Moderation starts every connection at the default buffer and
		// grows it towards the maxima as fast as the reader drains it.
		// Without it the window stays at the 1 MiB default: 13 vs ~110 MB/s
		// at 20 ms RTT, 86 vs ~135 MB/s at 2 ms.
		moderateRcvBuf: true,
		sndBuf: tcpip.TCPSendBufferSizeRangeOption{
			Min:     tcp.MinBufferSize,
			Default: tcp.DefaultSendBufferSize,
			Max:     sndBufMax,
		},
		rcvBuf: tcpip.TCPReceiveBufferSizeRangeOption{
			Min:     tcp.MinBufferSize,
			Default: tcp.DefaultReceiveBufferSize,
			Max:     rcvBufMax,
		},
		queueLen: defaultQueueLen,
		// Inbound checksums are verified. WireGuard's AEAD proves a packet
		// is what the peer's WireGuard sent, not that what it sent was
		// intact (a NAT rewrite in a wrapper, say); the end-to-end checksum
		// still catches those bugs, and skipping it measured within the
		// run-to-run noise.
		rxChecksumOffload: false,
		// gVisor's software GSO stays off. It cut the CPU per byte of
		// the lossless pair in BenchmarkTCPThroughput (direct: 8.1-8.3
		// against 8.9-9.5 cpu-ns/B) but made the lossy wire slower
		// (rtt2ms-loss0.2%: 4.1-4.3 against 5.0-6.6 MB/s), and through
		// WireGuard on the loaded test machine, which drops some packets,
		// the userspace data plane carried less in each of three
		// interleaved rounds (usbench, 1 stream: 0.35, 0.18, 0.11 Gbit/s
		// against 0.48, 0.32, 0.20 without). gVisor splits the segments in
		// its TCP layer anyway, one packet at a time, so WireGuard sees the
		// same packets either way.
		gso: false,
		// Receive coalescing (gro.go): the receiving TCP handles one
		// packet per run of up to 8 segments of a Write instead of one per
		// segment, and so sends fewer ACKs, which the sender's TCP then
		// handles. Measured in the back-to-back pair
		// (BenchmarkTCPThroughput, direct): 5.1-6.0 against 6.4-7.3
		// cpu-ns/B; through WireGuard (usbench, interleaved with main; see
		// docs/perf-userspace.md) about a tenth less CPU per GB, the
		// throughput within the noise of a loaded 2-core machine.
		gro: true,
	}
}

// apply sets t's TCP options on s.
func (t tuning) apply(s *stack.Stack) error {
	cc := tcpip.CongestionControlOption(t.congestionControl)
	sack := tcpip.TCPSACKEnabled(t.sack)
	recovery := t.recovery
	moderate := tcpip.TCPModerateReceiveBufferOption(t.moderateRcvBuf)
	sndBuf, rcvBuf := t.sndBuf, t.rcvBuf
	opts := []struct {
		name string
		opt  tcpip.SettableTransportProtocolOption
	}{
		{"congestion control " + t.congestionControl, &cc},
		{"sack", &sack},
		{"recovery", &recovery},
		{"receive buffer moderation", &moderate},
		{"send buffer range", &sndBuf},
		{"receive buffer range", &rcvBuf},
	}
	for _, o := range opts {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, o.opt); err != nil {
			return fmt.Errorf("netstack tcp option %s: %s", o.name, err)
		}
	}
	return nil
}
