package node

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/packet"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// countingBind is the host's UDP sockets, counting what is sent through
// them: proof that the node used the Transport it was given.
type countingBind struct {
	conn.Bind
	sent atomic.Int64
}

func (c *countingBind) Send(bufs [][]byte, ep conn.Endpoint) error {
	c.sent.Add(int64(len(bufs)))
	return c.Bind.Send(bufs, ep)
}

// TestInjectedTUNAndTransport: a kernel-mode node on a TUN device and a
// UDP transport the test gives it runs without root and changes nothing
// of the host; the test plays its host's stack.
func TestInjectedTUNAndTransport(t *testing.T) {
	alice, bob := prepare(t, "alice"), prepare(t, "bob")
	dev := testnet.NewChanTUN(1400)
	udp := &countingBind{Bind: conn.NewStdNetBind()}
	doc := "key_file = \"node.key\"\n[tun]\nmode = \"kernel\"\n[listen]\nudp = \"0.0.0.0:0\"\n[admin]\nsocket = \"admin.sock\"\n" + allowDoc(bob.key.Public().String(), "any", "")
	cfg, err := config.Parse([]byte(doc), "alice.toml", alice.dir)
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(testWriter{t, "alice", &alice.logs}, nil)), TUN: dev, Transport: &Transport{UDP: udp}})
	if err != nil {
		t.Fatalf("a kernel-mode node on an injected TUN (no root needed): %v", err)
	}
	alice.Node = n
	t.Cleanup(func() { n.Close() })
	bob.start(t, fmt.Sprintf("[[peers]]\npublic_key = %q\nendpoint = \"127.0.0.1:%d\"\n", alice.key.Public(), n.ListenPort()))

	// The test is alice's host: it answers pings that reach the device.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for {
			var pkt []byte
			select {
			case <-ctx.Done():
				return
			case pkt = <-dev.ToStack:
			}
			var p packet.Parsed
			if p.Decode(pkt) != nil || !p.IsEchoRequest() {
				continue
			}
			seq, payload := packet.EchoPayload(pkt, &p)
			reply := packet.EchoRequest(p.Dst, p.Src, binary.BigEndian.Uint16(pkt[packet.IPv6HeaderLen+4:]), seq, payload)
			icmp := reply[packet.IPv6HeaderLen:]
			icmp[0], icmp[2], icmp[3] = 129, 0, 0 // echo reply
			binary.BigEndian.PutUint16(icmp[2:4], packet.TransportChecksum(p.Dst, p.Src, packet.ProtoICMPv6, icmp))
			select {
			case dev.FromStack <- reply:
			case <-ctx.Done():
				return
			}
		}
	}()
	testnet.WaitFor(t, 10*time.Second, "bob's ping answered by alice's injected device", func() bool {
		r, err := bob.StatusArea().Ping(context.Background(), adminapi.PingRequest{Address: alice.Address().String(), TimeoutMs: 500})
		return err == nil && r.Error == ""
	})
	if udp.sent.Load() == 0 {
		t.Fatal("alice sent nothing through the transport she was given")
	}
	if alice.osRoutes != nil || alice.firewall != nil || alice.netnsLock != nil {
		t.Fatal("a node on an injected TUN configured the host")
	}
}
