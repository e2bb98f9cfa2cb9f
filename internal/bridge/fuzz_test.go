package bridge

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/clock"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/orgsync"
)

func lenPrefixed(frames ...[]byte) []byte {
	var b []byte
	for _, f := range frames {
		b = binary.BigEndian.AppendUint16(b, uint16(len(f)))
		b = append(b, f...)
	}
	return b
}

// FuzzServerFrames: arbitrary frames over UDP and arbitrary TCP streams
// never panic the bridge.
func FuzzServerFrames(f *testing.F) {
	bk := identity.PrivateKeyFromBytes([32]byte{9})
	a := identity.PrivateKeyFromBytes([32]byte{1}) // registered over UDP first
	c := identity.PrivateKeyFromBytes([32]byte{3}) // registers over TCP in the seeds
	srcA := netip.MustParseAddrPort("192.0.2.1:4610")
	seal := func(k identity.PrivateKey, m wire.Message) []byte {
		shared := wire.Precompute(k, bk.Public())
		frame, err := wire.Seal(nil, k.Public(), &shared, &m)
		if err != nil {
			f.Fatal(err)
		}
		return frame
	}
	// The bridge's clock stands at now: seeds stamped near it are fresh.
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) int64 { return now.Add(d).UnixNano() }
	regA := seal(a, wire.Message{Kind: wire.KindRegister, Time: at(0)})
	regC := seal(c, wire.Message{Kind: wire.KindRegister, Time: at(0), Endpoints: []netip.AddrPort{srcA}})
	lookupA := seal(a, wire.Message{Kind: wire.KindLookup, Time: at(1), Address: c.Public().Address()})
	lookupC := seal(c, wire.Message{Kind: wire.KindLookup, Time: at(1), Address: a.Public().Address()})
	f.Add(relayFrame(2, "to c"), lenPrefixed(regC, relayFrame(1, "to a"), lookupC))
	f.Add(lookupA, lenPrefixed(regC, seal(c, wire.Message{Kind: wire.KindUnregister, Time: at(2)}), relayFrame(1, "x")))
	f.Add(seal(a, wire.Message{Kind: wire.KindUnregister, Time: at(3)}), lenPrefixed(regC, regC, []byte{}, relayFrame(7, "")))
	f.Add([]byte{wire.FrameControl, 1, 0, 0}, []byte{0xff, 0xff, 1})
	f.Add([]byte{wire.FrameControl, wire.Version, 0, 0}, []byte{0, 0})
	// The seeds of wire version 1, stamped 1970 and so refused as stale
	// (the clock refusal's text handles any time).
	f.Add(seal(a, wire.Message{Kind: wire.KindUnregister, Time: 5}), lenPrefixed(seal(c, wire.Message{Kind: wire.KindRegister, Time: 1}), relayFrame(7, "")))
	f.Add(seal(a, wire.Message{Kind: wire.KindRegister, Time: -1 << 63}), lenPrefixed(seal(c, wire.Message{Kind: wire.KindRegister, Time: 1<<63 - 1})))
	// Version 3: c's Register from a's address (challenged), with a wrong
	// answer, and over TCP with an answer it needs not.
	f.Add(seal(c, wire.Message{Kind: wire.KindRegister, Time: at(0)}), lenPrefixed(seal(c, wire.Message{Kind: wire.KindRegister, Time: at(0), Seq: 5})))
	f.Add(seal(c, wire.Message{Kind: wire.KindRegister, Time: at(1), Seq: 1<<64 - 1}), lenPrefixed(regC, seal(c, wire.Message{Kind: wire.KindChallenge, Time: at(1), Echo: 1, Seq: 2})))
	// Stamped just outside the window either way, and a token with them.
	f.Add(seal(a, wire.Message{Kind: wire.KindRegister, Time: at(wire.MaxClockSkew + 1)}),
		lenPrefixed(seal(c, wire.Message{Kind: wire.KindRegister, Time: at(-wire.MaxClockSkew - 1), Token: "tomoe-join-x"})))
	// Organisation messages (wire Org): a certificate that is not a's, a
	// hello naming a document, a get and a chunk of one.
	orgMsg := func(k identity.PrivateKey, m orgsync.Msg) []byte {
		b, err := m.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		return seal(k, wire.Message{Kind: wire.KindOrg, Time: at(1), Data: b})
	}
	doc := orgsync.DocID{Kind: orgsync.KindCRL, Org: [32]byte{7}, Version: 2}
	f.Add(orgMsg(a, orgsync.Msg{Type: orgsync.TypeCert, Data: []byte("tomoe-cert-v1\x00 not really")}),
		lenPrefixed(regC, orgMsg(c, orgsync.Msg{Type: orgsync.TypeHello, Docs: []orgsync.DocID{doc}})))
	f.Add(orgMsg(a, orgsync.Msg{Type: orgsync.TypeGet, Doc: doc, Count: 3}),
		lenPrefixed(regC, orgMsg(c, orgsync.Msg{Type: orgsync.TypeChunk, Doc: doc, Total: 1, Data: []byte{1, 2, 3}})))
	// Join messages: a request and its withdrawal, a query (not signed by
	// anyone), an approval that is no certificate.
	join := orgsync.Join{Created: now.Unix(), Name: "web1.acme", Groups: []string{"dev"}}
	f.Add(orgMsg(a, orgsync.Msg{Type: orgsync.TypeJoin, Org: [32]byte{7}, Join: join}),
		lenPrefixed(regC, orgMsg(c, orgsync.Msg{Type: orgsync.TypeJoin, Org: [32]byte{7}, Join: orgsync.Join{Created: now.Unix(), Withdraw: true}})))
	f.Add(orgMsg(a, orgsync.Msg{Type: orgsync.TypeJoinQuery, Data: bytes.Repeat([]byte{1}, 192)}),
		lenPrefixed(regC, orgMsg(c, orgsync.Msg{Type: orgsync.TypeJoinCert, Data: []byte("tomoe-cert-v1\x00 not really")})))
	f.Fuzz(func(t *testing.T, frame, stream []byte) {
		s, err := NewServer(ServerConfig{Key: bk, Allow: []identity.PublicKey{a.Public(), c.Public()}, Sender: &discardSender{}, RelayMbit: 100, Clock: clock.NewManual(now)})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var next uint32
		s.newID = func() uint32 { next++; return next }
		s.deriveIDs = false
		s.HandleFrames([][]byte{regA}, []netip.AddrPort{srcA})

		client, server := net.Pipe()
		defer client.Close()
		s.addConn(server)
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			io.Copy(io.Discard, client)
		}()
		client.Write(stream)

		s.HandleFrames([][]byte{bytes.Clone(frame), bytes.Clone(frame), bytes.Clone(frame)},
			[]netip.AddrPort{srcA, netip.MustParseAddrPort("192.0.2.2:1"), {}})
		client.Close()
		<-drained
	})
}
