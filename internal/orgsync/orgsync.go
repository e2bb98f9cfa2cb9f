// Package orgsync is how organisation documents travel by themselves: the
// messages with which nodes (to each other, inside WireGuard, on the
// control port) and bridges (sealed in a bridge control frame) present
// their certificates, announce the revocation lists and organisation
// policies they hold, and pull a newer one in chunks. It is a leaf and
// knows nothing of signatures: a document is opaque bytes named by its
// kind, its organisation's key and its version, and the receiver verifies
// a document once it is whole (package org) before it keeps or passes it
// on. The join messages (join.go) carry enrolment by request between a
// node and its bridges. Everything here is pure except the Store and the
// Assembler, which are safe for concurrent use.
//
// Each message fits one datagram of the minimum overlay MTU (1,280 bytes:
// 1,232 bytes of UDP payload), so none is ever fragmented.
package orgsync

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Magic is the first byte of every message: the control port also carries
// route offers, whose first byte is their version (1).
const Magic = 0x20

// Type is a message's type.
type Type uint8

// Message types.
const (
	// TypeHello: the versions of the documents the sender holds, and
	// whether it wants the receiver's certificates.
	TypeHello Type = 1
	// TypeCert: one of the sender's certificates (binary form).
	TypeCert Type = 2
	// TypeGet: send me chunks [Index, Index+Count) of this document.
	TypeGet Type = 3
	// TypeChunk: one chunk of a document.
	TypeChunk Type = 4
)

// Kind is the kind of an organisation document.
type Kind uint8

// Document kinds.
const (
	KindCRL    Kind = 1 // a revocation list
	KindPolicy Kind = 2 // an organisation policy
)

func (k Kind) String() string {
	switch k {
	case KindCRL:
		return "revocation list"
	case KindPolicy:
		return "organisation policy"
	}
	return fmt.Sprintf("kind-%d", uint8(k))
}

// Limits. A document is at most MaxChunks chunks of ChunkSize bytes.
const (
	MaxDocs   = 16   // documents one Hello names
	MaxCert   = 1100 // bytes of one certificate
	ChunkSize = 1024
	MaxChunks = 256
	MaxDoc    = ChunkSize * MaxChunks
	// MaxMessage bounds any encoded message: a certificate or a chunk with
	// its header, within the 1,232 bytes of one minimum-MTU datagram.
	MaxMessage = max(2+2+MaxCert, 2+docIDSize+6+ChunkSize)
	docIDSize  = 1 + 32 + 8
)

// DocID names one version of one organisation's document.
type DocID struct {
	Kind    Kind
	Org     [32]byte // the organisation's public key
	Version uint64
}

// Same reports whether d and o are documents of the same kind and
// organisation (any version).
func (d DocID) Same(o DocID) bool { return d.Kind == o.Kind && d.Org == o.Org }

// Msg is one message. Which fields a type uses:
//
//	Hello: WantCerts, Docs
//	Cert:  Data (one certificate)
//	Get:   Doc, Index, Count
//	Chunk: Doc, Index, Total, Data
//	Join:      Org, Join (Created, Withdraw, Name, Groups)
//	JoinAck:   Org, Echo, Status, Join.Node, Text
//	JoinQuery: Data (a signed query)
//	JoinItem:  Org, Echo, Index, Total, Join (unless Total is 0)
//	JoinCert:  Data (one certificate)
//
// (join.go says what the join messages are for.)
type Msg struct {
	Type      Type
	WantCerts bool
	Docs      []DocID
	Doc       DocID
	Index     uint16
	Count     uint16 // Get: how many chunks from Index
	Total     uint16 // Chunk: how many chunks the document has; JoinItem: how many requests
	Data      []byte

	Org    [32]byte // join messages: the organisation's public key
	Echo   uint64   // JoinAck: the request's Created, the certificate's serial or the query's nonce; JoinItem: the query's nonce
	Status JoinStatus
	Text   string
	Join   Join
}

var errMalformed = errors.New("malformed organisation sync message")

// Marshal encodes m. It fails on a message that breaks a limit.
func (m *Msg) Marshal() ([]byte, error) {
	b := make([]byte, 0, 64)
	b = append(b, Magic, byte(m.Type))
	switch m.Type {
	case TypeHello:
		if len(m.Docs) > MaxDocs {
			return nil, fmt.Errorf("hello names %d documents, at most %d", len(m.Docs), MaxDocs)
		}
		flags := byte(0)
		if m.WantCerts {
			flags = 1
		}
		b = append(b, flags, byte(len(m.Docs)))
		for _, d := range m.Docs {
			b = appendDoc(b, d)
		}
	case TypeCert:
		if len(m.Data) == 0 || len(m.Data) > MaxCert {
			return nil, fmt.Errorf("certificate of %d bytes: 1..%d", len(m.Data), MaxCert)
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(m.Data)))
		b = append(b, m.Data...)
	case TypeGet:
		if m.Count == 0 || int(m.Index)+int(m.Count) > MaxChunks {
			return nil, fmt.Errorf("get of chunks %d+%d: at most %d chunks", m.Index, m.Count, MaxChunks)
		}
		b = appendDoc(b, m.Doc)
		b = binary.BigEndian.AppendUint16(b, m.Index)
		b = binary.BigEndian.AppendUint16(b, m.Count)
	case TypeChunk:
		if m.Total == 0 || m.Total > MaxChunks || m.Index >= m.Total || len(m.Data) == 0 || len(m.Data) > ChunkSize {
			return nil, fmt.Errorf("chunk %d of %d with %d bytes: out of bounds", m.Index, m.Total, len(m.Data))
		}
		b = appendDoc(b, m.Doc)
		b = binary.BigEndian.AppendUint16(b, m.Index)
		b = binary.BigEndian.AppendUint16(b, m.Total)
		b = binary.BigEndian.AppendUint16(b, uint16(len(m.Data)))
		b = append(b, m.Data...)
	case TypeJoin:
		if m.Join.State != 0 || (!m.Join.Withdraw && !joinOK(&m.Join)) || (m.Join.Withdraw && (m.Join.Name != "" || len(m.Join.Groups) != 0)) {
			return nil, fmt.Errorf("join request: name of 1..%d bytes, at most %d groups of %d bytes in all; a withdrawal names neither", MaxJoinName, MaxJoinGroups, MaxJoinGroupsBytes)
		}
		b = append(b, m.Org[:]...)
		b = appendJoinBody(b, &m.Join)
	case TypeJoinAck:
		if m.Status == 0 || m.Status > joinStatusMax || len(m.Text) > MaxJoinText {
			return nil, fmt.Errorf("join answer with status %d and %d bytes of text", m.Status, len(m.Text))
		}
		b = append(b, m.Org[:]...)
		b = binary.BigEndian.AppendUint64(b, m.Echo)
		b = append(b, byte(m.Status))
		b = append(b, m.Join.Node[:]...)
		b = appendStr8(b, m.Text)
	case TypeJoinQuery, TypeJoinCert:
		limit := MaxJoinQuery
		if m.Type == TypeJoinCert {
			limit = MaxCert
		}
		if len(m.Data) == 0 || len(m.Data) > limit {
			return nil, fmt.Errorf("join message of %d bytes: 1..%d", len(m.Data), limit)
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(m.Data)))
		b = append(b, m.Data...)
	case TypeJoinItem:
		if m.Total == 0 {
			if m.Index != 0 {
				return nil, fmt.Errorf("empty join list with index %d", m.Index)
			}
		} else if m.Index >= m.Total || m.Join.Withdraw || m.Join.State == 0 || m.Join.State > JoinDeclined || !joinOK(&m.Join) {
			return nil, fmt.Errorf("join list item %d of %d: out of bounds", m.Index, m.Total)
		}
		b = append(b, m.Org[:]...)
		b = binary.BigEndian.AppendUint64(b, m.Echo)
		b = binary.BigEndian.AppendUint16(b, m.Index)
		b = binary.BigEndian.AppendUint16(b, m.Total)
		if m.Total > 0 {
			b = append(b, m.Join.Node[:]...)
			b = appendJoinBody(b, &m.Join)
		}
	default:
		return nil, fmt.Errorf("unknown message type %d", m.Type)
	}
	return b, nil
}

func appendDoc(b []byte, d DocID) []byte {
	b = append(b, byte(d.Kind))
	b = append(b, d.Org[:]...)
	return binary.BigEndian.AppendUint64(b, d.Version)
}

// Unmarshal decodes a message strictly: known type and document kinds,
// limits, exact length. Data aliases b.
func Unmarshal(b []byte) (Msg, error) {
	var m Msg
	if len(b) < 2 || len(b) > MaxMessage || b[0] != Magic {
		return m, errMalformed
	}
	m.Type = Type(b[1])
	r := b[2:]
	take := func(n int) []byte {
		if len(r) < n {
			r = nil
			return nil
		}
		v := r[:n]
		r = r[n:]
		return v
	}
	doc := func() (DocID, bool) {
		v := take(docIDSize)
		if v == nil {
			return DocID{}, false
		}
		d := DocID{Kind: Kind(v[0]), Org: [32]byte(v[1:33]), Version: binary.BigEndian.Uint64(v[33:])}
		return d, d.Kind == KindCRL || d.Kind == KindPolicy
	}
	u16 := func() (uint16, bool) {
		v := take(2)
		if v == nil {
			return 0, false
		}
		return binary.BigEndian.Uint16(v), true
	}
	switch m.Type {
	case TypeHello:
		h := take(2)
		if h == nil || h[0] > 1 || int(h[1]) > MaxDocs {
			return Msg{}, errMalformed
		}
		m.WantCerts = h[0] == 1
		for range int(h[1]) {
			d, ok := doc()
			if !ok {
				return Msg{}, errMalformed
			}
			m.Docs = append(m.Docs, d)
		}
	case TypeCert:
		n, ok := u16()
		if !ok || n == 0 || int(n) > MaxCert {
			return Msg{}, errMalformed
		}
		if m.Data = take(int(n)); m.Data == nil {
			return Msg{}, errMalformed
		}
	case TypeGet:
		var ok1, ok2, ok3 bool
		m.Doc, ok1 = doc()
		m.Index, ok2 = u16()
		m.Count, ok3 = u16()
		if !ok1 || !ok2 || !ok3 || m.Count == 0 || int(m.Index)+int(m.Count) > MaxChunks {
			return Msg{}, errMalformed
		}
	case TypeChunk:
		var ok1, ok2, ok3, ok4 bool
		var n uint16
		m.Doc, ok1 = doc()
		m.Index, ok2 = u16()
		m.Total, ok3 = u16()
		n, ok4 = u16()
		if !ok1 || !ok2 || !ok3 || !ok4 || m.Total == 0 || m.Total > MaxChunks || m.Index >= m.Total || n == 0 || n > ChunkSize {
			return Msg{}, errMalformed
		}
		if m.Data = take(int(n)); m.Data == nil {
			return Msg{}, errMalformed
		}
	case TypeJoin:
		o := take(32)
		if o == nil {
			return Msg{}, errMalformed
		}
		m.Org = [32]byte(o)
		if !joinBody(take, &m.Join) || m.Join.State != 0 {
			return Msg{}, errMalformed
		}
		if m.Join.Withdraw {
			if m.Join.Name != "" || len(m.Join.Groups) != 0 {
				return Msg{}, errMalformed
			}
		} else if !joinOK(&m.Join) {
			return Msg{}, errMalformed
		}
	case TypeJoinAck:
		h := take(32 + 8 + 1 + 32 + 1)
		if h == nil {
			return Msg{}, errMalformed
		}
		m.Org = [32]byte(h[:32])
		m.Echo = binary.BigEndian.Uint64(h[32:40])
		m.Status = JoinStatus(h[40])
		m.Join.Node = [32]byte(h[41:73])
		n := int(h[73])
		if m.Status == 0 || m.Status > joinStatusMax || n > MaxJoinText {
			return Msg{}, errMalformed
		}
		t := take(n)
		if t == nil && n > 0 {
			return Msg{}, errMalformed
		}
		m.Text = string(t)
	case TypeJoinQuery, TypeJoinCert:
		limit := MaxJoinQuery
		if m.Type == TypeJoinCert {
			limit = MaxCert
		}
		n, ok := u16()
		if !ok || n == 0 || int(n) > limit {
			return Msg{}, errMalformed
		}
		if m.Data = take(int(n)); m.Data == nil {
			return Msg{}, errMalformed
		}
	case TypeJoinItem:
		h := take(32 + 8 + 2 + 2)
		if h == nil {
			return Msg{}, errMalformed
		}
		m.Org = [32]byte(h[:32])
		m.Echo = binary.BigEndian.Uint64(h[32:40])
		m.Index = binary.BigEndian.Uint16(h[40:42])
		m.Total = binary.BigEndian.Uint16(h[42:44])
		if m.Total == 0 {
			if m.Index != 0 {
				return Msg{}, errMalformed
			}
			break
		}
		node := take(32)
		if node == nil || m.Index >= m.Total || !joinBody(take, &m.Join) {
			return Msg{}, errMalformed
		}
		m.Join.Node = [32]byte(node)
		if m.Join.Withdraw || m.Join.State == 0 || m.Join.State > JoinDeclined || !joinOK(&m.Join) {
			return Msg{}, errMalformed
		}
	default:
		return Msg{}, errMalformed
	}
	if len(r) != 0 {
		return Msg{}, errMalformed
	}
	return m, nil
}

// Chunks returns how many chunks doc travels in.
func Chunks(doc []byte) int { return (len(doc) + ChunkSize - 1) / ChunkSize }

// Chunk returns chunk i of doc as a message, or false if there is none.
func Chunk(id DocID, doc []byte, i int) (Msg, bool) {
	n := Chunks(doc)
	if i < 0 || i >= n || n > MaxChunks {
		return Msg{}, false
	}
	end := min(len(doc), (i+1)*ChunkSize)
	return Msg{Type: TypeChunk, Doc: id, Index: uint16(i), Total: uint16(n), Data: doc[i*ChunkSize : end]}, true
}

// Equal reports whether two messages are the same.
func (m *Msg) Equal(o *Msg) bool {
	if m.Type != o.Type || m.WantCerts != o.WantCerts || m.Doc != o.Doc || m.Index != o.Index ||
		m.Count != o.Count || m.Total != o.Total || !bytes.Equal(m.Data, o.Data) || len(m.Docs) != len(o.Docs) ||
		m.Org != o.Org || m.Echo != o.Echo || m.Status != o.Status || m.Text != o.Text || !m.Join.equal(&o.Join) {
		return false
	}
	for i := range m.Docs {
		if m.Docs[i] != o.Docs[i] {
			return false
		}
	}
	return true
}
