// Package bridgetest holds what the tests of the bridge protocol's
// packages (wire, keycache, the bridge role, its client, nat) share: keys,
// the sample messages every encoder test and fuzz target starts from, and
// frames a forger could send. Only tests import it.
package bridgetest

import (
	"net/netip"
	"testing"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// Key is a new private key.
func Key(t testing.TB) identity.PrivateKey {
	t.Helper()
	k, err := identity.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// SampleMessages is one message of every kind and shape the wire carries:
// the seeds of the encoder tests and of the fuzz targets.
func SampleMessages() []wire.Message {
	k := identity.PublicKey{1, 2, 3}
	eps := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.7:4610"), netip.MustParseAddrPort("[2001:db8::1]:9")}
	return []wire.Message{
		{Kind: wire.KindRegister, Time: 42, Token: "tok", Endpoints: eps},
		{Kind: wire.KindRegister, Time: 43},
		{Kind: wire.KindRegister, Time: 44, Seq: 77, Token: "tok", Endpoints: eps[1:]},
		{Kind: wire.KindRegistered, Time: 1, Echo: 42, ID: 7, Interval: 20, Endpoints: eps[:1]},
		{Kind: wire.KindRefused, Time: 1, Echo: 43, Text: "not allowed"},
		{Kind: wire.KindLookup, Time: 1, Seq: 9, Address: k.Address()},
		{Kind: wire.KindLookupReply, Time: 1, Seq: 9, Address: k.Address()},
		{Kind: wire.KindLookupReply, Time: 1, Seq: 9, Address: k.Address(), Found: true, Key: k, ID: 3, Endpoints: eps},
		{Kind: wire.KindIntroduce, Time: 1, Key: k, ID: 3, Endpoints: eps},
		{Kind: wire.KindProbe, Time: 1, Seq: 1 << 60},
		{Kind: wire.KindProbeAck, Time: 1, Echo: 1 << 60, Seq: 5},
		{Kind: wire.KindProbeAck, Time: 2, Echo: 5},
		{Kind: wire.KindUnregister, Time: 1},
		{Kind: wire.KindChallenge, Time: 1, Echo: 44, Seq: 77},
	}
}
