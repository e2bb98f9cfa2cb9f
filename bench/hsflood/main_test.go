package main

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/net/ipv6"
	"golang.zx2c4.com/wireguard/device"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/noise"
	"github.com/tomoe-net/tomoe/internal/ratelimit"
)

// The pool's initiations are what the victim's Bind opens: valid mac1,
// each from its own key.
func TestPoolOpensAtTheVictim(t *testing.T) {
	k, err := identity.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := Pool(k.Public(), 8)
	if err != nil {
		t.Fatal(err)
	}
	o := noise.NewOpener(k)
	seen := map[identity.PublicKey]bool{}
	for i, msg := range pool {
		pub, _, x, err := o.Open(msg)
		if err != nil || x != 2 {
			t.Fatalf("message %d: %v after %d X25519", i, err, x)
		}
		seen[pub] = true
	}
	if len(seen) != len(pool) {
		t.Errorf("%d keys for %d messages", len(seen), len(pool))
	}
}

// one64 stays inside one /64 (one budget key at the victim), many64 gives
// every address its own.
func TestSources(t *testing.T) {
	one, err := oneSlash64(netip.MustParsePrefix("2001:db8:a::/64"), 1000)
	if err != nil {
		t.Fatal(err)
	}
	many, err := manySlash64(netip.MustParsePrefix("2001:db8:b::/48"), 65536)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name       string
		s          *Sources
		prefix     netip.Prefix
		want, keys int
	}{
		{"one64", one, netip.MustParsePrefix("2001:db8:a::/64"), 1000, 1},
		{"many64", many, netip.MustParsePrefix("2001:db8:b::/48"), 65536, 65536},
	} {
		addrs, keys := map[netip.Addr]bool{}, map[netip.Addr]bool{}
		for _, a := range c.s.Addrs {
			if !c.prefix.Contains(a) {
				t.Fatalf("%s: %s outside %s", c.name, a, c.prefix)
			}
			addrs[a] = true
			keys[ratelimit.Source(a)] = true
		}
		if len(addrs) != c.want || len(keys) != c.keys || len(c.s.index) != c.want {
			t.Errorf("%s: %d addresses, %d /64s; want %d and %d", c.name, len(addrs), len(keys), c.want, c.keys)
		}
	}
	if _, err := manySlash64(netip.MustParsePrefix("2001:db8:b::/56"), 257); err == nil {
		t.Error("257 /64s in a /56: no error")
	}
}

// The smart flood's answer to a cookie reply carries a mac2 the victim
// accepts from that source.
func TestCookieAnswer(t *testing.T) {
	k, err := identity.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	pool, err := Pool(k.Public(), 1)
	if err != nil {
		t.Fatal(err)
	}
	var cc device.CookieChecker
	cc.Init(device.NoisePublicKey(k.Public()))
	src, _ := netip.MustParseAddrPort("[2001:db8:b:7::1]:40000").MarshalBinary()
	reply, err := cc.CreateReply(pool[0], binary.LittleEndian.Uint32(pool[0][4:8]), src)
	if err != nil {
		t.Fatal(err)
	}
	wire := make([]byte, device.MessageCookieReplySize)
	binary.LittleEndian.PutUint32(wire[0:4], reply.Type)
	binary.LittleEndian.PutUint32(wire[4:8], reply.Receiver)
	copy(wire[8:32], reply.Nonce[:])
	copy(wire[32:64], reply.Cookie[:])
	c, err := noise.OpenCookieReply(wire, k.Public(), pool[0])
	if err != nil {
		t.Fatal(err)
	}
	msg := append([]byte(nil), pool[0]...)
	noise.SetMAC2(msg, c)
	if !cc.CheckMAC2(msg, src) {
		t.Error("mac2 refused from the source the cookie was made for")
	}
	other, _ := netip.MustParseAddrPort("[2001:db8:b:8::1]:40000").MarshalBinary()
	if cc.CheckMAC2(msg, other) {
		t.Error("mac2 accepted from another source")
	}
}

func TestPktinfoDst(t *testing.T) {
	a := netip.MustParseAddr("2001:db8:b:1234::1")
	// The received IPV6_PKTINFO has the layout of the one sent.
	oob := (&ipv6.ControlMessage{Src: a.AsSlice()}).Marshal()
	if got, ok := pktinfoDst(oob); !ok || got != a {
		t.Errorf("pktinfoDst = %v, %v; want %v", got, ok, a)
	}
	if _, ok := pktinfoDst(oob[:10]); ok {
		t.Error("truncated control message parsed")
	}
}
