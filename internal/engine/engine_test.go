package engine

import (
	"encoding/hex"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
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
