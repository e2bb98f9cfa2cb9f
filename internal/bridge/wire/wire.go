// Package wire is the bridge protocol's wire format: the frames that share
// the node's UDP socket with WireGuard (and travel on a bridge's TCP
// connections), the messages sealed in control frames, and the NaCl box
// that seals them. It is a leaf: the bridge role, the node's client of its
// bridges, probing (internal/nat) and the Bind (internal/transport, which
// wraps and unwraps relay frames) all use it, and it uses none of them.
//
// Two kinds of frame share the node's UDP socket with WireGuard, told apart
// by the first byte (WireGuard's messages start with 1–4 and three zero
// bytes):
//
//	control  0x70 ver=3 0 0 | sender public key (32) | nonce (24) | sealed message
//	relay    0x71 0 0 0     | relay id (4, big endian) | WireGuard message
//
// A control frame is sealed with NaCl box (X25519, XSalsa20-Poly1305) from
// the sender's static key to the receiver's: it proves the sender holds its
// key, and only the receiver can read it. Receivers precompute the shared
// key once per sender. Over TCP the same frames travel with a two-byte
// big-endian length in front.
//
// Version 2 added Echo to Registered, Refused and ProbeAck: an answer names
// the message it answers, so that only the node that sent that message
// acts on it. Version 3 added Challenge and the Seq of Register: a bridge
// gives a UDP address that another node's registration holds to a key
// only once that key proves it receives there (it answers a Challenge
// sent to that address), so that a member who spoofs its source cannot
// take a victim's address. Frames of another version are not control
// frames (dropped unanswered). Kind Org (11) came within version 3: a
// peer that does not know a kind drops the message as undecodable, so a
// node or bridge of an older build ignores it and nothing else changes.
// An Org message carries one organisation sync message (package orgsync)
// as opaque bytes; sealed, it makes a control frame of at most 1,191
// bytes, which the underlay carries unfragmented (it never travels
// inside the overlay).
//
// A relay frame a node sends names the destination's relay id (assigned by
// the bridge at registration); the bridge rewrites it to the sender's id and
// forwards it. The bridge knows the sender by the address (or TCP
// connection) it registered from. It never sees inside the WireGuard
// message.
package wire

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/crypto/nacl/box"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// Frame types: the first byte of a non-WireGuard frame.
const (
	FrameControl = 0x70
	FrameRelay   = 0x71
)

const (
	// Version is the control frame version this build speaks (the second
	// byte of a control frame); frames of any other are not control frames.
	Version = 3
	// ControlHeaderSize is the clear part of a control frame.
	ControlHeaderSize = 4 + identity.KeySize + 24
	// RelayHeaderSize is what a relay frame adds to a WireGuard message.
	RelayHeaderSize = 8
	// MaxFrame bounds any frame (the TCP length prefix is 16 bits).
	MaxFrame = 65535
	// MaxEndpoints bounds the endpoints a message carries.
	MaxEndpoints = 8
	// MaxToken bounds a join token's length.
	MaxToken = 128
	// MaxText bounds free text (refusal reasons).
	MaxText = 200
	// MaxOrgData bounds an Org message's Data: orgsync.MaxMessage (a
	// certificate or a chunk with its header), which this leaf does not
	// import; a test keeps the two equal.
	MaxOrgData = 1104
)

// MaxClockSkew bounds how far a node message's Time (the node's clock) may
// be from the bridge's clock, either way: a bridge refuses a message
// stamped further off. In the past, it is how long a captured Register
// stays usable once the bridge no longer knows a newer time from that key
// (after a crash lost the newest one; the bridge also forgets the times of
// keys quiet for that long, which the window then covers). In the future,
// it bounds how long one Register stamped ahead (a node whose clock was
// fast, then stepped back) makes the key's later ones look like replays:
// the bridge keeps, and persists, the newest time. Nodes rely on it too: a
// node registered with a bridge is within this of the bridge's clock, so
// two nodes are within twice this of each other (internal/nat).
const MaxClockSkew = 2 * time.Minute

// Kind is the type of a sealed control message.
type Kind uint8

// Control message kinds.
const (
	KindRegister    Kind = 1  // node → bridge: register, keep alive
	KindRegistered  Kind = 2  // bridge → node: accepted
	KindRefused     Kind = 3  // bridge → node: not accepted (reason)
	KindLookup      Kind = 4  // node → bridge: who owns this address?
	KindLookupReply Kind = 5  // bridge → node: the owner, or not found
	KindIntroduce   Kind = 6  // bridge → node: this node wants to reach you
	KindProbe       Kind = 7  // node → node: is this path open?
	KindProbeAck    Kind = 8  // node → node: yes
	KindUnregister  Kind = 9  // node → bridge: leaving
	KindChallenge   Kind = 10 // bridge → node: prove you receive where you registered from
	KindOrg         Kind = 11 // node ↔ bridge: one organisation sync message (package orgsync)
)

func (k Kind) String() string {
	switch k {
	case KindRegister:
		return "register"
	case KindRegistered:
		return "registered"
	case KindRefused:
		return "refused"
	case KindLookup:
		return "lookup"
	case KindLookupReply:
		return "lookup-reply"
	case KindIntroduce:
		return "introduce"
	case KindProbe:
		return "probe"
	case KindProbeAck:
		return "probe-ack"
	case KindUnregister:
		return "unregister"
	case KindChallenge:
		return "challenge"
	case KindOrg:
		return "org"
	}
	return fmt.Sprintf("kind-%d", uint8(k))
}

// Message is a control message's content. Which fields a kind uses:
//
//	Register:    Seq (the nonce of the Challenge it answers; 0: none), Token (first
//	             registration only), Endpoints (the node's local addresses)
//	Registered:  Echo, ID (the node's relay id), Endpoints[0] (the observed address), Interval (seconds)
//	Refused:     Echo, Text
//	Lookup:      Seq, Address
//	LookupReply: Seq, Address, Found; if found: Key, ID, Endpoints (observed first)
//	Introduce:   Key, ID, Endpoints (of the node that looked this one up)
//	Probe:       Seq (a random nonce)
//	ProbeAck:    Echo (the probe's Seq), Seq (a nonce the prober answers with a
//	             ProbeAck of its own, proving the path the other way; 0: none)
//	Challenge:   Echo (the Register's Time), Seq (a nonce: the node registers again
//	             from the same place with it)
//	Org:         Data (one encoded orgsync message: a certificate, a hello naming
//	             documents, a get or a chunk; at most MaxOrgData bytes)
//
// Every message carries Time, the sender's clock: a bridge refuses node
// messages stamped too far from its own clock, and a node refuses probes
// and introductions that are not fresh.
type Message struct {
	Kind      Kind
	Time      int64  // sender's clock, Unix nanoseconds
	Echo      uint64 // Registered, Refused, Challenge: the Register's Time; ProbeAck: the Probe's Seq
	Seq       uint64
	ID        uint32
	Interval  uint16
	Found     bool
	Key       identity.PublicKey
	Address   netip.Addr
	Token     string
	Text      string
	Endpoints []netip.AddrPort
	Data      []byte // Org: opaque to this package; Open's result aliases no frame
}

var (
	errShort    = errors.New("truncated")
	errBadFrame = errors.New("not a control frame")
)

// AppendBinary appends m's encoding (the plaintext a control frame seals)
// to b.
func (m *Message) AppendBinary(b []byte) ([]byte, error) {
	b = append(b, byte(m.Kind))
	b = binary.BigEndian.AppendUint64(b, uint64(m.Time))
	switch m.Kind {
	case KindRegister:
		if len(m.Token) > MaxToken {
			return nil, fmt.Errorf("token longer than %d bytes", MaxToken)
		}
		b = binary.BigEndian.AppendUint64(b, m.Seq)
		b = append(b, byte(len(m.Token)))
		b = append(b, m.Token...)
		return appendEndpoints(b, m.Endpoints)
	case KindRegistered:
		b = binary.BigEndian.AppendUint64(b, m.Echo)
		b = binary.BigEndian.AppendUint32(b, m.ID)
		b = binary.BigEndian.AppendUint16(b, m.Interval)
		return appendEndpoints(b, m.Endpoints)
	case KindRefused:
		t := m.Text
		if len(t) > MaxText {
			t = t[:MaxText]
		}
		b = binary.BigEndian.AppendUint64(b, m.Echo)
		b = append(b, byte(len(t)))
		return append(b, t...), nil
	case KindLookup, KindLookupReply:
		b = binary.BigEndian.AppendUint64(b, m.Seq)
		a := m.Address.As16()
		b = append(b, a[:]...)
		if m.Kind == KindLookup {
			return b, nil
		}
		if !m.Found {
			return append(b, 0), nil
		}
		b = append(b, 1)
		b = append(b, m.Key[:]...)
		b = binary.BigEndian.AppendUint32(b, m.ID)
		return appendEndpoints(b, m.Endpoints)
	case KindIntroduce:
		b = append(b, m.Key[:]...)
		b = binary.BigEndian.AppendUint32(b, m.ID)
		return appendEndpoints(b, m.Endpoints)
	case KindProbe:
		return binary.BigEndian.AppendUint64(b, m.Seq), nil
	case KindProbeAck, KindChallenge:
		b = binary.BigEndian.AppendUint64(b, m.Echo)
		return binary.BigEndian.AppendUint64(b, m.Seq), nil
	case KindUnregister:
		return b, nil
	case KindOrg:
		if len(m.Data) == 0 || len(m.Data) > MaxOrgData {
			return nil, fmt.Errorf("org message of %d bytes: 1..%d", len(m.Data), MaxOrgData)
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(m.Data)))
		return append(b, m.Data...), nil
	}
	return nil, fmt.Errorf("unknown message kind %d", m.Kind)
}

func appendEndpoints(b []byte, eps []netip.AddrPort) ([]byte, error) {
	if len(eps) > MaxEndpoints {
		eps = eps[:MaxEndpoints]
	}
	b = append(b, byte(len(eps)))
	for _, ep := range eps {
		a := ep.Addr().As16()
		b = append(b, a[:]...)
		b = binary.BigEndian.AppendUint16(b, ep.Port())
	}
	return b, nil
}

// reader consumes a byte slice; after the first short read every read
// returns zero values and err is set.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil || len(r.b) < n {
		r.err = errShort
		return make([]byte, n)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() uint8   { return r.take(1)[0] }
func (r *reader) u16() uint16 { return binary.BigEndian.Uint16(r.take(2)) }
func (r *reader) u32() uint32 { return binary.BigEndian.Uint32(r.take(4)) }
func (r *reader) u64() uint64 { return binary.BigEndian.Uint64(r.take(8)) }

func (r *reader) addr() netip.Addr {
	return netip.AddrFrom16([16]byte(r.take(16))).Unmap()
}

func (r *reader) endpoints() []netip.AddrPort {
	n := int(r.u8())
	if n > MaxEndpoints {
		r.err = fmt.Errorf("%d endpoints, at most %d", n, MaxEndpoints)
		return nil
	}
	var eps []netip.AddrPort
	for range n {
		a := r.addr()
		p := r.u16()
		if r.err == nil {
			eps = append(eps, netip.AddrPortFrom(a, p))
		}
	}
	return eps
}

// unmarshalMessage decodes a control message's plaintext.
func unmarshalMessage(b []byte) (Message, error) {
	r := &reader{b: b}
	var m Message
	m.Kind = Kind(r.u8())
	m.Time = int64(r.u64())
	switch m.Kind {
	case KindRegister:
		m.Seq = r.u64()
		n := int(r.u8())
		if r.err == nil && n > MaxToken {
			return Message{}, fmt.Errorf("register message: token of %d bytes, at most %d", n, MaxToken)
		}
		m.Token = string(r.take(n))
		m.Endpoints = r.endpoints()
	case KindRegistered:
		m.Echo = r.u64()
		m.ID = r.u32()
		m.Interval = r.u16()
		m.Endpoints = r.endpoints()
	case KindRefused:
		m.Echo = r.u64()
		m.Text = string(r.take(int(r.u8())))
	case KindLookup, KindLookupReply:
		m.Seq = r.u64()
		m.Address = r.addr()
		if m.Kind == KindLookupReply {
			m.Found = r.u8() == 1
			if m.Found {
				m.Key = identity.PublicKey(r.take(identity.KeySize))
				m.ID = r.u32()
				m.Endpoints = r.endpoints()
			}
		}
	case KindIntroduce:
		m.Key = identity.PublicKey(r.take(identity.KeySize))
		m.ID = r.u32()
		m.Endpoints = r.endpoints()
	case KindProbe:
		m.Seq = r.u64()
	case KindProbeAck, KindChallenge:
		m.Echo = r.u64()
		m.Seq = r.u64()
	case KindUnregister:
	case KindOrg:
		n := int(r.u16())
		if r.err == nil && (n == 0 || n > MaxOrgData) {
			return Message{}, fmt.Errorf("org message of %d bytes: 1..%d", n, MaxOrgData)
		}
		m.Data = r.take(n)
	default:
		return Message{}, fmt.Errorf("unknown message kind %d", m.Kind)
	}
	if r.err != nil {
		return Message{}, fmt.Errorf("%s message: %w", m.Kind, r.err)
	}
	if len(r.b) != 0 {
		return Message{}, fmt.Errorf("%s message: %d trailing bytes", m.Kind, len(r.b))
	}
	return m, nil
}

// IsControl reports whether frame is a control frame of our version.
func IsControl(frame []byte) bool {
	return len(frame) >= ControlHeaderSize+box.Overhead && frame[0] == FrameControl && frame[1] == Version
}

// Sender returns the public key a control frame claims to come from; only
// Open proves it.
func Sender(frame []byte) (identity.PublicKey, error) {
	if !IsControl(frame) {
		return identity.PublicKey{}, errBadFrame
	}
	return identity.PublicKey(frame[4 : 4+identity.KeySize]), nil
}

// SharedKey is the precomputed box key between two static keys.
type SharedKey [32]byte

// Precompute derives the key shared by priv and peer (one X25519).
func Precompute(priv identity.PrivateKey, peer identity.PublicKey) SharedKey {
	var out [32]byte
	raw := priv.Raw()
	pk := [32]byte(peer)
	box.Precompute(&out, &pk, &raw)
	return SharedKey(out)
}

// Seal appends a control frame carrying m from the key from, sealed with
// the key shared with the receiver, to b.
func Seal(b []byte, from identity.PublicKey, shared *SharedKey, m *Message) ([]byte, error) {
	plain, err := m.AppendBinary(make([]byte, 0, 64))
	if err != nil {
		return nil, err
	}
	var nonce [24]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	b = append(b, FrameControl, Version, 0, 0)
	b = append(b, from[:]...)
	b = append(b, nonce[:]...)
	k := [32]byte(*shared)
	return box.SealAfterPrecomputation(b, plain, &nonce, &k), nil
}

// Open checks and decodes a control frame sealed with shared.
func Open(frame []byte, shared *SharedKey) (Message, error) {
	if !IsControl(frame) {
		return Message{}, errBadFrame
	}
	if len(frame) > MaxFrame {
		return Message{}, fmt.Errorf("control frame of %d bytes", len(frame))
	}
	nonce := [24]byte(frame[4+identity.KeySize : ControlHeaderSize])
	k := [32]byte(*shared)
	plain, ok := box.OpenAfterPrecomputation(nil, frame[ControlHeaderSize:], &nonce, &k)
	if !ok {
		return Message{}, errors.New("control frame does not open: wrong key or tampered")
	}
	return unmarshalMessage(plain)
}

// RelayHeader writes a relay frame header for id into b[:RelayHeaderSize].
func RelayHeader(b []byte, id uint32) {
	b[0], b[1], b[2], b[3] = FrameRelay, 0, 0, 0
	binary.BigEndian.PutUint32(b[4:8], id)
}

// ParseRelay splits a relay frame into its relay id and WireGuard message.
func ParseRelay(frame []byte) (id uint32, msg []byte, ok bool) {
	if len(frame) <= RelayHeaderSize || frame[0] != FrameRelay || frame[1]|frame[2]|frame[3] != 0 {
		return 0, nil, false
	}
	return binary.BigEndian.Uint32(frame[4:8]), frame[RelayHeaderSize:], true
}
