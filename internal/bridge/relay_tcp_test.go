package bridge

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// recordSender keeps copies of the frames the bridge sends, and the
// largest batch.
type recordSender struct {
	mu       sync.Mutex
	payloads []string
	maxBatch int
	apart    int // frames not right after the one before in their batch
}

func (r *recordSender) send(frames [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.maxBatch = max(r.maxBatch, len(frames))
	for i, f := range frames {
		// Back to back in one buffer: f's capacity runs on over the next.
		if i+1 < len(frames) && cap(f) != len(f)+cap(frames[i+1]) {
			r.apart++
		}
		_, msg, _ := wire.ParseRelay(f)
		r.payloads = append(r.payloads, string(msg))
	}
}

func (r *recordSender) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.payloads)
}

// The bridge reads a TCP connection in large reads: many frames of one
// read, a frame split over several reads, frames of every size up to the
// largest all arrive whole and in order, and no send batch exceeds
// maxRelayOut however many small frames one read holds.
func TestRelayTCPReads(t *testing.T) {
	ka, kb, kc := testKey(t), testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{ka.Public(), kb.Public(), kc.Public()}, TCP: "127.0.0.1:0"})
	ta, nb := h.tcpNode(ka), h.udpNode(kb)
	ta.mustRegister()
	idB := nb.mustRegister()
	rs := &recordSender{}
	send := rs.send
	h.udp.relays.Store(&send)

	var want []string
	var stream []byte
	add := func(payload string) {
		f := relayFrame(idB, payload)
		stream = binary.BigEndian.AppendUint16(stream, uint16(len(f)))
		stream = append(stream, f...)
		want = append(want, payload)
	}
	// Many small frames, more than one send batch, in one write; among
	// them frames the bridge drops (an unknown relay id).
	for i := range 5 * maxRelayOut {
		add(fmt.Sprintf("small %d", i))
		if i%7 == 3 {
			f := relayFrame(idB+1000, "dropped")
			stream = binary.BigEndian.AppendUint16(stream, uint16(len(f)))
			stream = append(stream, f...)
		}
	}
	if _, err := ta.tc.Write(stream); err != nil {
		t.Fatal(err)
	}
	waitCond(t, "small frames relayed", func() bool { return rs.count() == len(want) })

	// Frames split between writes, over a pipe, whose Write returns once
	// the bridge has read it all: the largest frame and a small one, each
	// cut at several points.
	client, server := net.Pipe()
	t.Cleanup(func() { client.Close() })
	h.s.addConn(pipeConn{Conn: server, remote: net.TCPAddrFromAddrPort(netip.MustParseAddrPort("192.0.2.7:4610"))})
	tc := &srvNode{t: t, key: kc, pub: kc.Public(), shared: wire.Precompute(kc, h.key.Public()), clk: h.clk, stamps: &h.stamps, tc: client, br: bufio.NewReader(client)}
	tc.mustRegister()
	big := string(slices.Repeat([]byte{'x'}, wire.MaxFrame-wire.RelayHeaderSize))
	for _, payload := range []string{big, "split", big} {
		stream = stream[:0]
		add(payload)
		add("after")
		prev := 0
		for _, cut := range []int{1, 3, len(stream) / 2, len(stream) - 1, len(stream)} {
			if _, err := client.Write(stream[prev:cut]); err != nil {
				t.Fatal(err)
			}
			prev = cut
			if cut < len(stream)-len("after")-wire.RelayHeaderSize-2 {
				if got := rs.count(); got != len(want)-2 {
					t.Fatalf("relayed %d frames with a frame incomplete, want %d", got, len(want)-2)
				}
			}
		}
		waitCond(t, "split frames relayed", func() bool { return rs.count() == len(want) })
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if !slices.Equal(rs.payloads, want) {
		t.Fatalf("relayed %d frames, want %d, or in another order or form", len(rs.payloads), len(want))
	}
	if rs.apart > 0 {
		t.Errorf("%d frames of a send batch not right after the one before", rs.apart)
	}
	if rs.maxBatch > maxRelayOut {
		t.Fatalf("a send batch of %d frames, want at most %d", rs.maxBatch, maxRelayOut)
	}
}
