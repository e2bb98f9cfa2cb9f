package org

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// JoinQuery is what an organisation's key holder asks of the bridges that
// hold join requests (issue 12): list the requests for the organisation,
// or reject one. It is signed by the organisation's key, names the node
// that forwards it to its bridges (Via: a bridge answers only that
// registered node, so a query copied elsewhere lists nothing), and is
// short-lived: a bridge takes it within QueryWindow of its Time, and only
// once (by Nonce). Requests are not public: they say who wants in.
type JoinQuery struct {
	Op    JoinOp
	Org   PublicKey
	Via   identity.PublicKey // the node that forwards the query to its bridges
	Node  identity.PublicKey // reject: the node whose request goes; list: zero
	Time  time.Time          // second precision, UTC
	Nonce uint64             // random, non-zero

	body, sig []byte
}

// JoinOp is what a query asks.
type JoinOp uint8

// Query operations.
const (
	JoinList   JoinOp = 1
	JoinReject JoinOp = 2
)

func (o JoinOp) String() string {
	switch o {
	case JoinList:
		return "list"
	case JoinReject:
		return "reject"
	}
	return fmt.Sprintf("op-%d", uint8(o))
}

// QueryWindow is how far a query's Time may be from a bridge's clock,
// either way.
const QueryWindow = 5 * time.Minute

const (
	joinQueryMagic      = "tomoe-joinq-v1\x00"
	joinQueryTextPrefix = "tomoe-joinq:"
	// JoinQueryBinary is the size of a query's binary form.
	JoinQueryBinary = len(joinQueryMagic) + 1 + 32 + 32 + 32 + 8 + 8 + ed25519.SignatureSize
)

// ErrStale marks a query outside QueryWindow.
var ErrStale = errors.New("outside the time window")

// SignJoinQuery signs a query: op for the organisation, forwarded by the
// node via, about node (reject; zero for list), stamped now.
func (s *Signer) SignJoinQuery(op JoinOp, via, node identity.PublicKey, now time.Time) (*JoinQuery, error) {
	q := &JoinQuery{Op: op, Org: s.Public(), Via: via, Node: node, Time: now.UTC().Truncate(time.Second)}
	for q.Nonce == 0 {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("sign join query: nonce: %w", err)
		}
		q.Nonce = binary.BigEndian.Uint64(b[:])
	}
	body, err := q.encodeBody()
	if err != nil {
		return nil, fmt.Errorf("sign join query: %w", err)
	}
	q.body, q.sig = body, ed25519.Sign(s.key, body)
	return q, nil
}

func (q *JoinQuery) check() error {
	switch q.Op {
	case JoinList:
		if !q.Node.IsZero() {
			return errors.New("a list query names no node")
		}
	case JoinReject:
		if q.Node.IsZero() {
			return errors.New("a reject query names the node whose request goes")
		}
	default:
		return fmt.Errorf("unknown operation %d", q.Op)
	}
	if q.Org.IsZero() || q.Via.IsZero() {
		return errors.New("organisation or forwarding node unset")
	}
	if q.Nonce == 0 {
		return errors.New("nonce is zero")
	}
	if q.Time.Unix() < 0 {
		return errors.New("time before 1970")
	}
	return nil
}

func (q *JoinQuery) encodeBody() ([]byte, error) {
	if err := q.check(); err != nil {
		return nil, err
	}
	w := writer{b: make([]byte, 0, JoinQueryBinary)}
	w.raw([]byte(joinQueryMagic))
	w.u8(int(q.Op))
	w.key(q.Org)
	w.key(q.Via)
	w.key(q.Node)
	w.time(q.Time)
	w.u64(q.Nonce)
	return w.b, nil
}

// DecodeJoinQuery decodes the binary form strictly; it does not check the
// signature or the time (Verify).
func DecodeJoinQuery(b []byte) (*JoinQuery, error) {
	if len(b) != JoinQueryBinary {
		return nil, fmt.Errorf("join query: %d bytes, want %d", len(b), JoinQueryBinary)
	}
	body, sig, err := splitSigned(b, joinQueryMagic, "join query")
	if err != nil {
		return nil, err
	}
	r := reader{b: body[len(joinQueryMagic):]}
	q := &JoinQuery{}
	q.Op = JoinOp(r.u8("operation"))
	q.Org = r.key("organisation key")
	q.Via = r.key("forwarding node")
	q.Node = r.key("node")
	q.Time = r.time("time")
	q.Nonce = r.u64("nonce")
	if r.err != nil {
		return nil, fmt.Errorf("join query: %w", r.err)
	}
	if err := q.check(); err != nil {
		return nil, fmt.Errorf("join query: %w", err)
	}
	q.body, q.sig = cloneBytes(body), cloneBytes(sig)
	return q, nil
}

// ParseJoinQuery parses the text form ("tomoe-joinq:" + base64url).
func ParseJoinQuery(text string) (*JoinQuery, error) {
	b, err := decodeText(text, joinQueryTextPrefix, "join query", JoinQueryBinary)
	if err != nil {
		return nil, err
	}
	return DecodeJoinQuery(b)
}

// Binary returns the binary form: the signed body and the signature.
func (q *JoinQuery) Binary() []byte {
	out := make([]byte, 0, len(q.body)+len(q.sig))
	return append(append(out, q.body...), q.sig...)
}

// Text returns the text form, "tomoe-joinq:" + base64url.
func (q *JoinQuery) Text() string { return encodeText(joinQueryTextPrefix, q.Binary()) }

// Verify checks that the organisation named in q signed it as it stands
// (ErrBadSignature) and that now is within QueryWindow of its Time
// (ErrStale).
func (q *JoinQuery) Verify(now time.Time) error {
	body, err := q.encodeBody()
	if err != nil || string(body) != string(q.body) || !verifySig(q.Org, q.body, q.sig) {
		return fmt.Errorf("join query: %w: not signed by %s", ErrBadSignature, q.Org)
	}
	if d := now.Sub(q.Time); d > QueryWindow || d < -QueryWindow {
		return fmt.Errorf("join query of %s: %w of ±%s (now %s): sign a new one, and check the clocks", fmtTime(q.Time), ErrStale, QueryWindow, fmtTime(now))
	}
	return nil
}
