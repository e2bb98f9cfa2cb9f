package bridge

import (
	"cmp"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/orgsync"
)

// Enrolment by request (issue 12). A registered node leaves a join
// request for an organisation here; the holder of that organisation's key
// lists the requests with a query it signed (sent by its own node, which
// must be registered here and named in the query) and approves one by
// sending the certificate it signed, which the bridge passes on to the
// node that asked (at once if it is registered, else when it next sends
// its request), or rejects one with another signed query.
//
// The bridge cannot check that an organisation exists or that a node may
// join it: it keeps requests for any organisation key, under limits that
// keep what a registered node can make it hold small (one request per node
// and organisation, requests in at most maxJoinsPerNode organisations per
// node, maxJoinsPerOrg per organisation, maxJoinOrgs organisations, seven
// days each; every join message spends the member's organisation budget).
// What it hands out needs the organisation's signature: a list query and
// a rejection are signed by the organisation's key (and at most
// org.QueryWindow old, and taken once), an approval is a certificate the
// organisation signed. The node that receives a certificate checks it
// again against the organisation it asked to join.
//
// Requests are kept in memory only: a node keeps its own request and
// sends it again each time it registers (and every minute while it
// waits), so a restarted bridge has it back as soon as the node is
// around; what a restart loses is an approval not yet picked up, or a
// rejection, of a node that was away, and the request shows up as
// pending again for the key holder to approve or reject once more.

// Join limits.
const (
	maxJoinsPerOrg  = 256
	maxJoinOrgs     = maxOrgs
	maxJoinsPerNode = maxMemberCerts
	joinTTL         = 7 * 24 * time.Hour
	// maxQueryNonces bounds the query nonces remembered (for twice
	// org.QueryWindow, the time a query is taken).
	maxQueryNonces = 4096
	joinSweepEvery = time.Minute
)

// joinTable holds the join requests. Its lock is a leaf: nothing is sent
// while it is held.
type joinTable struct {
	mu      sync.Mutex // guards the fields below
	orgs    map[org.PublicKey]map[identity.PublicKey]*joinReq
	perNode map[identity.PublicKey]int
	nonces  map[uint64]time.Time // query nonces taken: when
	swept   time.Time

	held                                 atomic.Int64
	refused, queries, approved, rejected atomic.Uint64
}

// joinReq is one node's request to join one organisation.
type joinReq struct {
	node    identity.PublicKey
	created time.Time // the node's, second precision
	name    string
	groups  []string
	state   orgsync.JoinState
	cert    *org.Cert // approved: waits for pickup
}

func newJoinTable() *joinTable {
	return &joinTable{
		orgs:    make(map[org.PublicKey]map[identity.PublicKey]*joinReq),
		perNode: make(map[identity.PublicKey]int),
		nonces:  make(map[uint64]time.Time),
	}
}

// joinMessage acts on a join message from the registered member mb.
func (s *Server) joinMessage(mb *orgMember, shared *wire.SharedKey, m *orgsync.Msg, now time.Time) {
	s.joins.sweep(now)
	switch m.Type {
	case orgsync.TypeJoin:
		s.joinRequest(mb.key, shared, m, now)
	case orgsync.TypeJoinQuery:
		s.joinQuery(mb, shared, m, now)
	case orgsync.TypeJoinCert:
		s.joinApprove(mb.key, shared, m, now)
	}
}

func (s *Server) joinAck(to identity.PublicKey, shared *wire.SharedKey, orgKey [32]byte, echo uint64, st orgsync.JoinStatus, node identity.PublicKey, text string) {
	if len(text) > orgsync.MaxJoinText {
		text = text[:orgsync.MaxJoinText]
	}
	if st == orgsync.JoinRefused {
		s.joins.refused.Add(1)
	}
	s.sendOrg(to, shared, &orgsync.Msg{Type: orgsync.TypeJoinAck, Org: orgKey, Echo: echo, Status: st, Join: orgsync.Join{Node: node}, Text: text})
}

// checkJoinFields checks a request's name and groups as a certificate
// would have them (the bridge does not know the organisation's name: the
// name's last label stands for it).
func checkJoinFields(name string, groups []string) error {
	label := name
	if i := strings.LastIndexAny(name, ".@"); i >= 0 {
		label = name[i+1:]
	}
	if err := org.ValidCertName(label, name); err != nil {
		return err
	}
	for _, g := range groups {
		if err := org.ValidGroup(g); err != nil {
			return err
		}
	}
	return nil
}

// joinRequest keeps, replaces or withdraws key's request.
func (s *Server) joinRequest(key identity.PublicKey, shared *wire.SharedKey, m *orgsync.Msg, now time.Time) {
	created := time.Unix(m.Join.Created, 0).UTC()
	echo := uint64(m.Join.Created)
	ok := org.PublicKey(m.Org)
	t := s.joins
	if m.Join.Withdraw {
		t.mu.Lock()
		r := t.orgs[ok][key]
		gone := r != nil && !r.created.After(created)
		if gone {
			t.removeLocked(ok, key)
		}
		t.mu.Unlock()
		if gone {
			s.log.Info("bridge: join request withdrawn", "org", ok.String(), "peer", key.String())
		}
		s.joinAck(key, shared, m.Org, echo, orgsync.JoinWithdrawn, identity.PublicKey{}, "")
		return
	}
	if err := checkJoinFields(m.Join.Name, m.Join.Groups); err != nil {
		s.joinAck(key, shared, m.Org, echo, orgsync.JoinRefused, identity.PublicKey{}, err.Error())
		return
	}
	if ok.IsZero() {
		s.joinAck(key, shared, m.Org, echo, orgsync.JoinRefused, identity.PublicKey{}, "organisation key is zero")
		return
	}
	if now.Sub(created) > joinTTL || created.Sub(now) > wire.MaxClockSkew {
		s.joinAck(key, shared, m.Org, echo, orgsync.JoinRefused, identity.PublicKey{}, fmt.Sprintf("request made at %s: more than %s ago or ahead of the bridge's clock; make a new one", created.Format(time.RFC3339), joinTTL))
		return
	}
	var cert *org.Cert
	st, text := t.put(ok, key, created, m.Join.Name, m.Join.Groups, now, &cert)
	if cert != nil {
		// Approved while it was away: this resent request picks it up.
		s.sendOrg(key, shared, &orgsync.Msg{Type: orgsync.TypeJoinCert, Data: cert.Binary()})
		s.log.Info("bridge: approved certificate picked up", "org", ok.String(), "peer", key.String(), "serial", cert.SerialString())
		return
	}
	if st == orgsync.JoinHeld && text == "new" {
		s.logLimited(slog.LevelInfo, "bridge: join request held", "org", ok.String(), "peer", key.String(), "name", m.Join.Name)
		text = ""
	}
	s.joinAck(key, shared, m.Org, echo, st, identity.PublicKey{}, text)
}

// put keeps a request, answering what the node should hear; an approved
// request's certificate goes in *cert instead. text "new" marks a request
// newly held.
func (t *joinTable) put(ok org.PublicKey, key identity.PublicKey, created time.Time, name string, groups []string, now time.Time, cert **org.Cert) (orgsync.JoinStatus, string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	reqs := t.orgs[ok]
	if r := reqs[key]; r != nil {
		switch {
		case created.Before(r.created):
			return orgsync.JoinRefused, fmt.Sprintf("a newer request from this node (of %s) is held", r.created.Format(time.RFC3339))
		case created.Equal(r.created):
			switch r.state {
			case orgsync.JoinApproved:
				*cert = r.cert
				return 0, ""
			case orgsync.JoinDeclined:
				return orgsync.JoinRejected, "the organisation rejected this request"
			}
			return orgsync.JoinHeld, ""
		}
		// A newer request replaces it, whatever became of the old one.
		r.created, r.name, r.groups, r.state, r.cert = created, name, slices.Clone(groups), orgsync.JoinPending, nil
		return orgsync.JoinHeld, "new"
	}
	if t.perNode[key] >= maxJoinsPerNode {
		return orgsync.JoinRefused, fmt.Sprintf("this node has requests for %d organisations here already; withdraw one", maxJoinsPerNode)
	}
	if reqs == nil {
		if len(t.orgs) >= maxJoinOrgs {
			return orgsync.JoinRefused, fmt.Sprintf("the bridge holds requests for %d organisations already; try later or another bridge", maxJoinOrgs)
		}
		reqs = make(map[identity.PublicKey]*joinReq)
		t.orgs[ok] = reqs
	}
	if len(reqs) >= maxJoinsPerOrg {
		return orgsync.JoinRefused, fmt.Sprintf("the bridge holds %d requests for this organisation already; ask its key holder to approve or reject some", maxJoinsPerOrg)
	}
	reqs[key] = &joinReq{node: key, created: created, name: name, groups: slices.Clone(groups), state: orgsync.JoinPending}
	t.perNode[key]++
	t.held.Add(1)
	return orgsync.JoinHeld, "new"
}

func (t *joinTable) removeLocked(ok org.PublicKey, key identity.PublicKey) {
	reqs := t.orgs[ok]
	if reqs[key] == nil {
		return
	}
	delete(reqs, key)
	if len(reqs) == 0 {
		delete(t.orgs, ok)
	}
	if t.perNode[key]--; t.perNode[key] <= 0 {
		delete(t.perNode, key)
	}
	t.held.Add(-1)
}

// sweep drops requests older than joinTTL and query nonces past their
// window, at most once per joinSweepEvery.
func (t *joinTable) sweep(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.swept) < joinSweepEvery {
		return
	}
	t.swept = now
	for ok, reqs := range t.orgs {
		for key, r := range reqs {
			if now.Sub(r.created) > joinTTL {
				t.removeLocked(ok, key)
			}
		}
	}
	for n, at := range t.nonces {
		if now.Sub(at) > 2*org.QueryWindow {
			delete(t.nonces, n)
		}
	}
}

// takeNonce records a query's nonce; false if it was taken already (a
// replay) or too many are remembered.
func (t *joinTable) takeNonce(n uint64, now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, seen := t.nonces[n]; seen {
		return fmt.Errorf("query already answered (replayed)")
	}
	if len(t.nonces) >= maxQueryNonces {
		for k, at := range t.nonces {
			if now.Sub(at) > 2*org.QueryWindow {
				delete(t.nonces, k)
			}
		}
		if len(t.nonces) >= maxQueryNonces {
			return fmt.Errorf("too many queries in the last %s; try again later", 2*org.QueryWindow)
		}
	}
	t.nonces[n] = now
	return nil
}

// joinQuery answers a signed list query, or carries out a signed
// rejection, for the member that forwards it (the query must name it).
func (s *Server) joinQuery(mb *orgMember, shared *wire.SharedKey, m *orgsync.Msg, now time.Time) {
	s.joins.queries.Add(1)
	q, err := org.DecodeJoinQuery(m.Data)
	if err != nil {
		s.joinAck(mb.key, shared, [32]byte{}, 0, orgsync.JoinRefused, identity.PublicKey{}, err.Error())
		return
	}
	refuse := func(err error) {
		s.logLimited(slog.LevelInfo, "bridge: join query refused", "org", q.Org.String(), "peer", mb.key.String(), "err", err)
		s.joinAck(mb.key, shared, q.Org, q.Nonce, orgsync.JoinRefused, q.Node, err.Error())
	}
	if q.Via != mb.key {
		refuse(fmt.Errorf("query signed for node %s, sent by %s", q.Via.ShortString(), mb.key.ShortString()))
		return
	}
	if err := q.Verify(now); err != nil {
		refuse(err)
		return
	}
	if err := s.joins.takeNonce(q.Nonce, now); err != nil {
		refuse(err)
		return
	}
	switch q.Op {
	case org.JoinList:
		s.joinList(mb, shared, q)
	case org.JoinReject:
		t := s.joins
		t.mu.Lock()
		r := t.orgs[q.Org][q.Node]
		if r != nil {
			r.state, r.cert = orgsync.JoinDeclined, nil
		}
		t.mu.Unlock()
		st := orgsync.JoinNoRequest
		if r != nil {
			st = orgsync.JoinRemoved
			t.rejected.Add(1)
			s.log.Info("bridge: join request rejected by the organisation", "org", q.Org.String(), "peer", q.Node.String())
		}
		s.joinAck(mb.key, shared, q.Org, q.Nonce, st, q.Node, "")
	}
}

// joinList sends the requests for q's organisation, one message each,
// within the member's chunk budget (a list cut short shows as such: the
// node counts the items against Total).
func (s *Server) joinList(mb *orgMember, shared *wire.SharedKey, q *org.JoinQuery) {
	t := s.joins
	t.mu.Lock()
	var items []orgsync.Join
	for _, r := range t.orgs[q.Org] {
		items = append(items, orgsync.Join{Node: r.node, Created: r.created.Unix(), State: r.state, Name: r.name, Groups: slices.Clone(r.groups)})
	}
	t.mu.Unlock()
	slices.SortFunc(items, func(a, b orgsync.Join) int { return cmp.Compare(a.Created, b.Created) })
	if len(items) == 0 {
		s.sendOrg(mb.key, shared, &orgsync.Msg{Type: orgsync.TypeJoinItem, Org: q.Org, Echo: q.Nonce})
		return
	}
	now := s.now().UnixNano()
	for i, it := range items {
		if !mb.chunks.Allow(now, 1, orgChunkRate, orgChunkBurst) {
			s.org.chunksLimited.Add(1)
			return
		}
		s.sendOrg(mb.key, shared, &orgsync.Msg{Type: orgsync.TypeJoinItem, Org: q.Org, Echo: q.Nonce, Index: uint16(i), Total: uint16(len(items)), Join: it})
	}
}

// joinApprove takes a certificate the organisation signed for a node that
// asked to join it, and passes it on.
func (s *Server) joinApprove(from identity.PublicKey, shared *wire.SharedKey, m *orgsync.Msg, now time.Time) {
	cert, err := org.DecodeCert(m.Data)
	if err != nil {
		s.joinAck(from, shared, [32]byte{}, 0, orgsync.JoinRefused, identity.PublicKey{}, err.Error())
		return
	}
	if err == nil {
		err = cert.Verify(cert.Org, now)
	}
	if err == nil {
		s.org.mu.Lock()
		if e := s.org.orgs[cert.Org]; e != nil && e.crl != nil && e.crl.Revokes(cert) {
			err = fmt.Errorf("certificate %q is revoked by revocation list version %d", cert.Name, e.crl.Version)
		}
		s.org.mu.Unlock()
	}
	if err != nil {
		s.logLimited(slog.LevelInfo, "bridge: approval refused", "peer", from.String(), "err", err)
		s.joinAck(from, shared, cert.Org, cert.Serial, orgsync.JoinRefused, cert.Node, err.Error())
		return
	}
	t := s.joins
	t.mu.Lock()
	r := t.orgs[cert.Org][cert.Node]
	found := r != nil && r.state != orgsync.JoinDeclined
	if found {
		r.state, r.cert = orgsync.JoinApproved, cert
	}
	t.mu.Unlock()
	if !found {
		s.joinAck(from, shared, cert.Org, cert.Serial, orgsync.JoinNoRequest, cert.Node, "")
		return
	}
	t.approved.Add(1)
	s.mu.RLock()
	_, online := s.regs[cert.Node]
	s.mu.RUnlock()
	st := orgsync.JoinKept
	if online {
		s.sendOrg(cert.Node, nil, &orgsync.Msg{Type: orgsync.TypeJoinCert, Data: cert.Binary()})
		st = orgsync.JoinDelivered
	}
	s.log.Info("bridge: join request approved", "org", cert.Org.String(), "peer", cert.Node.String(), "name", cert.Name, "serial", cert.SerialString(), "result", st.String())
	s.joinAck(from, shared, cert.Org, cert.Serial, st, cert.Node, "")
}

// dropNode drops every request of key (revoked at this bridge).
func (t *joinTable) dropNode(key identity.PublicKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for ok, reqs := range t.orgs {
		if reqs[key] != nil {
			t.removeLocked(ok, key)
		}
	}
}

// joinPickedUp drops key's approved request for an organisation once it
// presents its certificate of it (it has what it asked for).
func (t *joinTable) joinPickedUp(ok org.PublicKey, key identity.PublicKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r := t.orgs[ok][key]; r != nil && r.state == orgsync.JoinApproved {
		t.removeLocked(ok, key)
	}
}
