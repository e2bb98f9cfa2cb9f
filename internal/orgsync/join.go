package orgsync

import "encoding/binary"

// Enrolment by request (issue 12): a node that wants to join an
// organisation leaves a request at its bridges (TypeJoin); the holder of
// the organisation's key lists the requests with a query it signed
// (TypeJoinQuery, answered with one TypeJoinItem per request) and approves
// one by sending the certificate it signed (TypeJoinCert), which the bridge
// passes on to the node that asked, or rejects it (a signed query again).
// TypeJoinAck is the bridge's answer to a request, an approval or a
// rejection. These messages travel between a node and its bridges only,
// sealed in bridge control frames; a bridge stores and forwards them and
// trusts nothing but the organisation's signature (package org).

// Join message types.
const (
	// TypeJoin: node → bridge: a join request (Org, Join), or its
	// withdrawal (Join.Withdraw).
	TypeJoin Type = 5
	// TypeJoinAck: bridge → node: what became of a request, an approval
	// or a rejection (Org, Echo, Status, Join.Node, Text).
	TypeJoinAck Type = 6
	// TypeJoinQuery: node → bridge: a query signed by an organisation's
	// key (org.JoinQuery's binary form, in Data): list or reject.
	TypeJoinQuery Type = 7
	// TypeJoinItem: bridge → node: one request in answer to a list query
	// (Org, Echo = the query's nonce, Index of Total, Join); Total 0 and
	// no request when there is none.
	TypeJoinItem Type = 8
	// TypeJoinCert: node → bridge, an approval (a certificate the
	// organisation signed, binary form, in Data); bridge → node, that
	// certificate delivered to the node it names.
	TypeJoinCert Type = 9
)

// JoinStatus is a TypeJoinAck's verdict.
type JoinStatus uint8

// Join statuses.
const (
	JoinHeld      JoinStatus = 1 // request kept (or already held)
	JoinRefused   JoinStatus = 2 // not kept: Text says why (a limit, a bad field)
	JoinRejected  JoinStatus = 3 // the organisation's key holder rejected this request
	JoinDelivered JoinStatus = 4 // approval passed on to the node, which is registered here
	JoinKept      JoinStatus = 5 // approval kept for the node to pick up (it is away)
	JoinNoRequest JoinStatus = 6 // approval or rejection: no request from that node here
	JoinRemoved   JoinStatus = 7 // rejection: the request is dropped
	JoinWithdrawn JoinStatus = 8 // the node's withdrawal: its request is dropped
	joinStatusMax            = JoinWithdrawn
)

func (s JoinStatus) String() string {
	switch s {
	case JoinHeld:
		return "held"
	case JoinRefused:
		return "refused"
	case JoinRejected:
		return "rejected"
	case JoinDelivered:
		return "delivered"
	case JoinKept:
		return "kept"
	case JoinNoRequest:
		return "no_request"
	case JoinRemoved:
		return "removed"
	case JoinWithdrawn:
		return "withdrawn"
	}
	return "unknown"
}

// JoinState is what a bridge holds of a request (TypeJoinItem).
type JoinState uint8

// Join states.
const (
	JoinPending  JoinState = 1 // waiting for the organisation
	JoinApproved JoinState = 2 // a certificate waits for the node to pick it up
	JoinDeclined JoinState = 3 // rejected; kept so that the node's resending does not bring it back
)

func (s JoinState) String() string {
	switch s {
	case JoinPending:
		return "pending"
	case JoinApproved:
		return "approved"
	case JoinDeclined:
		return "rejected"
	}
	return "unknown"
}

// Limits of a request. They equal package org's certificate limits
// (MaxCertNameLen, MaxGroups, MaxGroupsBytes), which this leaf does not
// import; a test keeps them equal.
const (
	MaxJoinName        = 128
	MaxJoinGroups      = 32
	MaxJoinGroupsBytes = 480
	MaxJoinText        = 200
	// MaxJoinQuery bounds a signed query's binary form.
	MaxJoinQuery = 256
)

// Join is a join request as it travels: who asks (Node: set by the bridge
// in a TypeJoinItem or TypeJoinAck; the bridge knows a TypeJoin's sender
// by its sealed frame), when the node made it (Created, Unix seconds: a
// newer one from the same node replaces an older one), the name and
// groups it asks for, and in a TypeJoinItem the bridge's State.
type Join struct {
	Node     [32]byte
	Created  int64
	Withdraw bool
	State    JoinState
	Name     string
	Groups   []string
}

func (j *Join) equal(o *Join) bool {
	if j.Node != o.Node || j.Created != o.Created || j.Withdraw != o.Withdraw || j.State != o.State ||
		j.Name != o.Name || len(j.Groups) != len(o.Groups) {
		return false
	}
	for i := range j.Groups {
		if j.Groups[i] != o.Groups[i] {
			return false
		}
	}
	return true
}

// joinOK checks a request's name and groups against the limits.
func joinOK(j *Join) bool {
	if len(j.Name) == 0 || len(j.Name) > MaxJoinName || len(j.Groups) > MaxJoinGroups {
		return false
	}
	total := 0
	for _, g := range j.Groups {
		if len(g) == 0 || len(g) > 255 {
			return false
		}
		total += len(g)
	}
	return total <= MaxJoinGroupsBytes
}

func appendStr8(b []byte, s string) []byte {
	b = append(b, byte(len(s)))
	return append(b, s...)
}

// appendJoinBody: Created, flags, Name, Groups.
func appendJoinBody(b []byte, j *Join) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(j.Created))
	flags := byte(0)
	if j.Withdraw {
		flags = 1
	}
	b = append(b, flags, byte(j.State))
	b = appendStr8(b, j.Name)
	b = append(b, byte(len(j.Groups)))
	for _, g := range j.Groups {
		b = appendStr8(b, g)
	}
	return b
}

// joinBody reads what appendJoinBody writes; flags other than withdraw
// are malformed.
func joinBody(take func(int) []byte, j *Join) bool {
	h := take(8 + 2)
	if h == nil || h[8] > 1 {
		return false
	}
	j.Created = int64(binary.BigEndian.Uint64(h[:8]))
	j.Withdraw = h[8] == 1
	j.State = JoinState(h[9])
	str := func() (string, bool) {
		n := take(1)
		if n == nil {
			return "", false
		}
		if n[0] == 0 {
			return "", true
		}
		v := take(int(n[0]))
		return string(v), v != nil
	}
	var ok bool
	if j.Name, ok = str(); !ok {
		return false
	}
	n := take(1)
	if n == nil || int(n[0]) > MaxJoinGroups {
		return false
	}
	for range int(n[0]) {
		g, ok := str()
		if !ok {
			return false
		}
		j.Groups = append(j.Groups, g)
	}
	return true
}
