package engine

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/transport"
)

func TestParseStats(t *testing.T) {
	k1, _ := identity.GeneratePrivateKey()
	k2, _ := identity.GeneratePrivateKey()
	p1, p2 := k1.Public(), k2.Public()
	uapi := "private_key=00\nlisten_port=4610\n" +
		"public_key=" + hex.EncodeToString(p1[:]) + "\nendpoint=192.0.2.7:4610\nlast_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=10\nrx_bytes=20\nallowed_ip=fc00::1/128\n" +
		"public_key=" + hex.EncodeToString(p2[:]) + "\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n" +
		"public_key=zz\nrx_bytes=1\nerrno=0\n"
	got := parseStats(uapi)
	if len(got) != 2 {
		t.Fatalf("%d peers: %+v", len(got), got)
	}
	if got[0].Key != p1 || got[0].Endpoint.String() != "192.0.2.7:4610" || got[0].RxBytes != 20 || got[0].TxBytes != 10 || !got[0].LastHandshake.Equal(time.Unix(1700000000, 5)) {
		t.Errorf("peer 1: %+v", got[0])
	}
	if got[1].Key != p2 || !got[1].LastHandshake.IsZero() || got[1].Endpoint.IsValid() {
		t.Errorf("peer 2: %+v", got[1])
	}
}

// recordingBind is a Bind that is not transport's: the engine works with
// any Bind that keeps the contract, and calls it in the order it states.
type recordingBind struct {
	conn.Bind
	mu    sync.Mutex
	calls []string
	peers map[identity.PublicKey]bool
}

func (b *recordingBind) note(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, s)
}

func (b *recordingBind) SetPrivateKey(identity.PrivateKey) { b.note("key") }

func (b *recordingBind) SetPeer(key identity.PublicKey, _ netip.AddrPort) *transport.PeerEndpoint {
	b.note("set " + key.ShortString())
	b.mu.Lock()
	b.peers[key] = true
	b.mu.Unlock()
	return nil
}

func (b *recordingBind) RemovePeer(key identity.PublicKey) {
	b.note("remove " + key.ShortString())
	b.mu.Lock()
	delete(b.peers, key)
	b.mu.Unlock()
}

// ParseEndpoint accepts the names of the peers set, as the contract asks.
func (b *recordingBind) ParseEndpoint(s string) (conn.Endpoint, error) {
	raw, err := hex.DecodeString(s)
	if err != nil || len(raw) != identity.KeySize {
		return nil, fmt.Errorf("endpoint %q: not a peer's name", s)
	}
	b.mu.Lock()
	known := b.peers[identity.PublicKey(raw)]
	b.mu.Unlock()
	if !known {
		return nil, fmt.Errorf("endpoint %q: a peer the Bind was not told of", s)
	}
	b.note("parse")
	return &conn.StdNetEndpoint{AddrPort: netip.MustParseAddrPort("127.0.0.1:9")}, nil
}

func TestEngineTakesAnyBind(t *testing.T) {
	key, _ := identity.GeneratePrivateKey()
	peerKey, _ := identity.GeneratePrivateKey()
	peer := peerKey.Public()
	b := &recordingBind{Bind: conn.NewStdNetBind(), peers: map[identity.PublicKey]bool{}}
	e, err := New(key, tuntest.NewChannelTUN().TUN(), b, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.SetPeer(PeerConfig{Key: peer, AllowedIPs: []netip.Prefix{netip.PrefixFrom(peer.Address(), 128)}}); err != nil {
		t.Fatal(err)
	}
	if !e.RemovePeer(peer) {
		t.Fatal("the peer was not there")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	want := []string{"key", "set " + peer.ShortString(), "parse", "remove " + peer.ShortString()}
	if !slices.Equal(b.calls, want) {
		t.Fatalf("calls %q, want %q", b.calls, want)
	}
}
