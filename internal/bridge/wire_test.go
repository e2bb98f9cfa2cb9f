package bridge

import (
	"bytes"
	"net/netip"
	"reflect"
	"testing"

	"github.com/tomoe-net/tomoe/internal/identity"
)

func testKey(t testing.TB) identity.PrivateKey {
	t.Helper()
	k, err := identity.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sampleMessages() []Message {
	k := identity.PublicKey{1, 2, 3}
	eps := []netip.AddrPort{netip.MustParseAddrPort("192.0.2.7:4610"), netip.MustParseAddrPort("[2001:db8::1]:9")}
	return []Message{
		{Kind: KindRegister, Time: 42, Token: "tok", Endpoints: eps},
		{Kind: KindRegister, Time: 43},
		{Kind: KindRegister, Time: 44, Seq: 77, Token: "tok", Endpoints: eps[1:]},
		{Kind: KindRegistered, Time: 1, Echo: 42, ID: 7, Interval: 20, Endpoints: eps[:1]},
		{Kind: KindRefused, Time: 1, Echo: 43, Text: "not allowed"},
		{Kind: KindLookup, Time: 1, Seq: 9, Address: k.Address()},
		{Kind: KindLookupReply, Time: 1, Seq: 9, Address: k.Address()},
		{Kind: KindLookupReply, Time: 1, Seq: 9, Address: k.Address(), Found: true, Key: k, ID: 3, Endpoints: eps},
		{Kind: KindIntroduce, Time: 1, Key: k, ID: 3, Endpoints: eps},
		{Kind: KindProbe, Time: 1, Seq: 1 << 60},
		{Kind: KindProbeAck, Time: 1, Echo: 1 << 60, Seq: 5},
		{Kind: KindProbeAck, Time: 2, Echo: 5},
		{Kind: KindUnregister, Time: 1},
		{Kind: KindChallenge, Time: 1, Echo: 44, Seq: 77},
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	a, b := testKey(t), testKey(t)
	ab := Precompute(a, b.Public())
	ba := Precompute(b, a.Public())
	if ab != ba {
		t.Fatal("shared keys differ")
	}
	for _, m := range sampleMessages() {
		frame, err := Seal(nil, a.Public(), &ab, &m)
		if err != nil {
			t.Fatalf("%s: %v", m.Kind, err)
		}
		if from, err := Sender(frame); err != nil || from != a.Public() {
			t.Fatalf("%s: sender %v %v", m.Kind, from, err)
		}
		got, err := Open(frame, &ba)
		if err != nil {
			t.Fatalf("%s: %v", m.Kind, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("%s: got %+v, want %+v", m.Kind, got, m)
		}
		// Any flipped byte after the header makes it fail to open.
		bad := bytes.Clone(frame)
		bad[len(bad)-1] ^= 1
		if _, err := Open(bad, &ba); err == nil {
			t.Errorf("%s: tampered frame opened", m.Kind)
		}
		// A third key cannot open it.
		c := testKey(t)
		cb := Precompute(c, a.Public())
		if _, err := Open(frame, &cb); err == nil {
			t.Errorf("%s: opened with a third party's key", m.Kind)
		}
	}
}

func TestSealRejectsLongToken(t *testing.T) {
	a := testKey(t)
	k := Precompute(a, a.Public())
	m := Message{Kind: KindRegister, Token: string(make([]byte, maxToken+1))}
	if _, err := Seal(nil, a.Public(), &k, &m); err == nil {
		t.Fatal("an over-long token was sealed")
	}
}

func TestUnmarshalRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":           nil,
		"unknown kind":    {99, 0, 0, 0, 0, 0, 0, 0, 0},
		"short":           {byte(KindLookup), 0, 0, 0},
		"trailing":        {byte(KindUnregister), 0, 0, 0, 0, 0, 0, 0, 0, 1},
		"too many eps":    append([]byte{byte(KindRegister), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, maxEndpoints+1),
		"short challenge": {byte(KindChallenge), 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 44},
	} {
		if _, err := unmarshalMessage(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A frame of wire version 1 (before Echo) or 2 (before Challenge) is not
// a control frame: a node or bridge of that version is not answered,
// rather than misread.
func TestOlderVersionsNotControl(t *testing.T) {
	a := testKey(t)
	k := Precompute(a, a.Public())
	for _, v := range []byte{1, 2} {
		f, err := Seal(nil, a.Public(), &k, &Message{Kind: KindRegister, Time: 1})
		if err != nil {
			t.Fatal(err)
		}
		f[1] = v
		if IsControl(f) {
			t.Fatalf("a version %d frame is taken as a control frame", v)
		}
		if _, err := Open(f, &k); err == nil {
			t.Fatalf("a version %d frame opened", v)
		}
	}
}

func TestRelayFrame(t *testing.T) {
	frame := make([]byte, RelayHeaderSize+3)
	RelayHeader(frame, 0xdeadbeef)
	copy(frame[RelayHeaderSize:], "abc")
	id, msg, ok := ParseRelay(frame)
	if !ok || id != 0xdeadbeef || string(msg) != "abc" {
		t.Fatalf("ParseRelay = %x %q %v", id, msg, ok)
	}
	for _, bad := range [][]byte{nil, frame[:RelayHeaderSize], {FrameRelay, 1, 0, 0, 0, 0, 0, 0, 9}, {1, 0, 0, 0, 0, 0, 0, 0, 9}} {
		if _, _, ok := ParseRelay(bad); ok {
			t.Errorf("ParseRelay(%x) accepted", bad)
		}
	}
}

// FuzzUnmarshalMessage: the decoder of sealed plaintext never panics, and
// whatever it accepts encodes back to the same bytes.
func FuzzUnmarshalMessage(f *testing.F) {
	for _, m := range sampleMessages() {
		b, err := m.marshal(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// Version 1 encodings of the kinds version 2 changed: now short.
	f.Add([]byte{byte(KindRegistered), 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7, 0, 20, 0})
	f.Add([]byte{byte(KindRefused), 0, 0, 0, 0, 0, 0, 0, 1, 2, 'n', 'o'})
	f.Add([]byte{byte(KindProbeAck), 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5})
	// Version 2 encodings of Register (before Seq): misread or refused now.
	f.Add([]byte{byte(KindRegister), 0, 0, 0, 0, 0, 0, 0, 42, 3, 't', 'o', 'k', 0})
	f.Add([]byte{byte(KindRegister), 0, 0, 0, 0, 0, 0, 0, 43, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := unmarshalMessage(b)
		if err != nil {
			return
		}
		out, err := m.marshal(nil)
		if err != nil {
			t.Fatalf("accepted message does not encode: %v", err)
		}
		m2, err := unmarshalMessage(out)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed %+v to %+v (%v)", m, m2, err)
		}
	})
}

// FuzzOpen: arbitrary frames never panic the frame checks and open only
// when sealed with the key.
func FuzzOpen(f *testing.F) {
	a := identity.PrivateKeyFromBytes([32]byte{1})
	b := identity.PrivateKeyFromBytes([32]byte{2})
	k := Precompute(a, b.Public())
	for _, m := range sampleMessages() {
		frame, err := Seal(nil, a.Public(), &k, &m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(frame)
	}
	f.Add([]byte{FrameRelay, 0, 0, 0, 0, 0, 0, 1, 1})
	// Version 1 and 2 frames are not control frames any more.
	for _, v := range []byte{1, 2} {
		if old, err := Seal(nil, a.Public(), &k, &Message{Kind: KindRegister, Time: 1}); err == nil {
			old[1] = v
			f.Add(old)
		}
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		_, _ = Sender(frame)
		_, _, _ = ParseRelay(frame)
		_, _ = Open(frame, &k)
	})
}
