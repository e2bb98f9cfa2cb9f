package wire_test

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/tomoe-net/tomoe/internal/bridge/bridgetest"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/orgsync"
)

var (
	testKey        = bridgetest.Key
	sampleMessages = bridgetest.SampleMessages
)

func TestSealOpenRoundTrip(t *testing.T) {
	a, b := testKey(t), testKey(t)
	ab := wire.Precompute(a, b.Public())
	ba := wire.Precompute(b, a.Public())
	if ab != ba {
		t.Fatal("shared keys differ")
	}
	for _, m := range sampleMessages() {
		frame, err := wire.Seal(nil, a.Public(), &ab, &m)
		if err != nil {
			t.Fatalf("%s: %v", m.Kind, err)
		}
		if from, err := wire.Sender(frame); err != nil || from != a.Public() {
			t.Fatalf("%s: sender %v %v", m.Kind, from, err)
		}
		got, err := wire.Open(frame, &ba)
		if err != nil {
			t.Fatalf("%s: %v", m.Kind, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("%s: got %+v, want %+v", m.Kind, got, m)
		}
		// Any flipped byte after the header makes it fail to open.
		bad := bytes.Clone(frame)
		bad[len(bad)-1] ^= 1
		if _, err := wire.Open(bad, &ba); err == nil {
			t.Errorf("%s: tampered frame opened", m.Kind)
		}
		// A third key cannot open it.
		c := testKey(t)
		cb := wire.Precompute(c, a.Public())
		if _, err := wire.Open(frame, &cb); err == nil {
			t.Errorf("%s: opened with a third party's key", m.Kind)
		}
	}
}

func TestSealRejectsLongToken(t *testing.T) {
	a := testKey(t)
	k := wire.Precompute(a, a.Public())
	m := wire.Message{Kind: wire.KindRegister, Token: string(make([]byte, wire.MaxToken+1))}
	if _, err := wire.Seal(nil, a.Public(), &k, &m); err == nil {
		t.Fatal("an over-long token was sealed")
	}
}

// An Org message carries any orgsync message and nothing longer.
func TestOrgDataBound(t *testing.T) {
	if wire.MaxOrgData != orgsync.MaxMessage {
		t.Fatalf("wire.MaxOrgData = %d, orgsync.MaxMessage = %d: keep them equal", wire.MaxOrgData, orgsync.MaxMessage)
	}
	for _, n := range []int{0, wire.MaxOrgData + 1} {
		m := wire.Message{Kind: wire.KindOrg, Data: make([]byte, n)}
		if _, err := m.AppendBinary(nil); err == nil {
			t.Errorf("an org message of %d bytes was encoded", n)
		}
	}
}

func TestUnmarshalRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":           nil,
		"unknown kind":    {99, 0, 0, 0, 0, 0, 0, 0, 0},
		"short":           {byte(wire.KindLookup), 0, 0, 0},
		"trailing":        {byte(wire.KindUnregister), 0, 0, 0, 0, 0, 0, 0, 0, 1},
		"too many eps":    append([]byte{byte(wire.KindRegister), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, wire.MaxEndpoints+1),
		"short challenge": {byte(wire.KindChallenge), 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 44},
		"empty org":       {byte(wire.KindOrg), 0, 0, 0, 0, 0, 0, 0, 1, 0, 0},
		"short org":       {byte(wire.KindOrg), 0, 0, 0, 0, 0, 0, 0, 1, 0, 3, 0x20, 1},
		"long org":        append([]byte{byte(wire.KindOrg), 0, 0, 0, 0, 0, 0, 0, 1, 0x04, 0xd1}, make([]byte, wire.MaxOrgData+1)...),
	} {
		if _, err := wire.UnmarshalMessage(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A frame of wire version 1 (before Echo) or 2 (before Challenge) is not
// a control frame: a node or bridge of that version is not answered,
// rather than misread.
func TestOlderVersionsNotControl(t *testing.T) {
	a := testKey(t)
	k := wire.Precompute(a, a.Public())
	for _, v := range []byte{1, 2} {
		f, err := wire.Seal(nil, a.Public(), &k, &wire.Message{Kind: wire.KindRegister, Time: 1})
		if err != nil {
			t.Fatal(err)
		}
		f[1] = v
		if wire.IsControl(f) {
			t.Fatalf("a version %d frame is taken as a control frame", v)
		}
		if _, err := wire.Open(f, &k); err == nil {
			t.Fatalf("a version %d frame opened", v)
		}
	}
}

func TestRelayFrame(t *testing.T) {
	frame := make([]byte, wire.RelayHeaderSize+3)
	wire.RelayHeader(frame, 0xdeadbeef)
	copy(frame[wire.RelayHeaderSize:], "abc")
	id, msg, ok := wire.ParseRelay(frame)
	if !ok || id != 0xdeadbeef || string(msg) != "abc" {
		t.Fatalf("ParseRelay = %x %q %v", id, msg, ok)
	}
	for _, bad := range [][]byte{nil, frame[:wire.RelayHeaderSize], {wire.FrameRelay, 1, 0, 0, 0, 0, 0, 0, 9}, {1, 0, 0, 0, 0, 0, 0, 0, 9}} {
		if _, _, ok := wire.ParseRelay(bad); ok {
			t.Errorf("ParseRelay(%x) accepted", bad)
		}
	}
}

// FuzzUnmarshalMessage: the decoder of sealed plaintext never panics, and
// whatever it accepts encodes back to the same bytes.
func FuzzUnmarshalMessage(f *testing.F) {
	for _, m := range sampleMessages() {
		b, err := m.AppendBinary(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// Version 1 encodings of the kinds version 2 changed: now short.
	f.Add([]byte{byte(wire.KindRegistered), 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7, 0, 20, 0})
	f.Add([]byte{byte(wire.KindRefused), 0, 0, 0, 0, 0, 0, 0, 1, 2, 'n', 'o'})
	f.Add([]byte{byte(wire.KindProbeAck), 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5})
	// Version 2 encodings of Register (before Seq): misread or refused now.
	f.Add([]byte{byte(wire.KindRegister), 0, 0, 0, 0, 0, 0, 0, 42, 3, 't', 'o', 'k', 0})
	f.Add([]byte{byte(wire.KindRegister), 0, 0, 0, 0, 0, 0, 0, 43, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := wire.UnmarshalMessage(b)
		if err != nil {
			return
		}
		out, err := m.AppendBinary(nil)
		if err != nil {
			t.Fatalf("accepted message does not encode: %v", err)
		}
		m2, err := wire.UnmarshalMessage(out)
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
	k := wire.Precompute(a, b.Public())
	for _, m := range sampleMessages() {
		frame, err := wire.Seal(nil, a.Public(), &k, &m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(frame)
	}
	f.Add([]byte{wire.FrameRelay, 0, 0, 0, 0, 0, 0, 1, 1})
	// Version 1 and 2 frames are not control frames any more.
	for _, v := range []byte{1, 2} {
		if old, err := wire.Seal(nil, a.Public(), &k, &wire.Message{Kind: wire.KindRegister, Time: 1}); err == nil {
			old[1] = v
			f.Add(old)
		}
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		_, _ = wire.Sender(frame)
		_, _, _ = wire.ParseRelay(frame)
		_, _ = wire.Open(frame, &k)
	})
}
