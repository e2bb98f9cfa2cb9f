package bridge

import (
	"encoding/binary"
	"sync/atomic"
	"testing"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/tomoe-net/tomoe/internal/bridge/bridgetest"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// countSender counts what the bridge hands its UDP socket.
type countSender struct{ frames, calls atomic.Int64 }

func (c *countSender) send(frames [][]byte) {
	c.calls.Add(1)
	c.frames.Add(int64(len(frames)))
}

// BenchmarkRelayTCPToUDP measures the bridge's side of the TCP relay: a
// node writes full-size relay frames over its TCP connection (64 KiB per
// write, as the node's client does) to a node registered over UDP. It
// reports frames per SendFrames call (the batch the bridge reads in one
// go) besides the time per frame.
func BenchmarkRelayTCPToUDP(b *testing.B) {
	ka, kb := bridgetest.Key(b), bridgetest.Key(b)
	h := newSrvHarness(b, ServerConfig{Allow: []identity.PublicKey{ka.Public(), kb.Public()}, TCP: "127.0.0.1:0"})
	ta, nb := h.tcpNode(ka), h.udpNode(kb)
	ta.mustRegister()
	idB := nb.mustRegister()
	cs := &countSender{}
	send := cs.send
	h.udp.relays.Store(&send)
	sent := writeRelayChunks(b, ta, idB)
	waitCond(b, "all relayed", func() bool { return cs.frames.Load() >= sent })
	b.StopTimer()
	b.ReportMetric(float64(cs.frames.Load())/float64(cs.calls.Load()), "frames/send")
}

// writeRelayChunks writes b.N full-size relay frames to the node with
// relay ID id over ta's TCP connection, 64 KiB per write as the node's
// client does, with the timer started; it returns how many it wrote.
func writeRelayChunks(b *testing.B, ta *srvNode, id uint32) int64 {
	frame := relayFrame(id, string(make([]byte, 1420+32)))
	var chunk []byte
	for len(chunk)+2+len(frame) <= 64<<10 {
		chunk = binary.BigEndian.AppendUint16(chunk, uint16(len(frame)))
		chunk = append(chunk, frame...)
	}
	per := int64(len(chunk) / (2 + len(frame)))
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	sent := int64(0)
	for sent < int64(b.N) {
		if _, err := ta.tc.Write(chunk); err != nil {
			b.Fatal(err)
		}
		sent += per
	}
	return sent
}

// BenchmarkRelayTCPToUDPStdBind is BenchmarkRelayTCPToUDP with the frames
// sent, as a node's Bind does, by wireguard-go's StdNetBind (UDP GSO where
// the kernel has it) to a socket that does not read them: "back-to-back"
// as the bridge hands them over, "clipped" with each frame's capacity cut
// to its length, so that a GSO send must send them one by one.
func BenchmarkRelayTCPToUDPStdBind(b *testing.B) {
	for _, clip := range []bool{false, true} {
		name := "back-to-back"
		if clip {
			name = "clipped"
		}
		b.Run(name, func(b *testing.B) { benchRelayStdBind(b, clip) })
	}
}

func benchRelayStdBind(b *testing.B, clip bool) {
	ka, kb := bridgetest.Key(b), bridgetest.Key(b)
	h := newSrvHarness(b, ServerConfig{Allow: []identity.PublicKey{ka.Public(), kb.Public()}, TCP: "127.0.0.1:0"})
	ta, nb := h.tcpNode(ka), h.udpNode(kb)
	ta.mustRegister()
	idB := nb.mustRegister()
	bind := conn.NewStdNetBind()
	if _, _, err := bind.Open(0); err != nil {
		b.Fatal(err)
	}
	defer bind.Close()
	ep := &conn.StdNetEndpoint{AddrPort: nb.addr()}
	var frames atomic.Int64
	var clipped [][]byte
	send := func(fs [][]byte) {
		if clip {
			clipped = clipped[:0]
			for _, f := range fs {
				clipped = append(clipped, f[:len(f):len(f)])
			}
			fs = clipped
		}
		if err := bind.Send(fs, ep); err != nil {
			b.Error(err)
		}
		frames.Add(int64(len(fs)))
	}
	h.udp.relays.Store(&send)
	sent := writeRelayChunks(b, ta, idB)
	waitCond(b, "all relayed", func() bool { return frames.Load() >= sent })
}
