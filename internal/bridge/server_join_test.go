package bridge

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/orgsync"
)

func joinMsg(o *org.Signer, created time.Time, name string, groups ...string) orgsync.Msg {
	return orgsync.Msg{Type: orgsync.TypeJoin, Org: o.Public(), Join: orgsync.Join{Created: created.Unix(), Name: name, Groups: groups}}
}

func (n *srvNode) expectAck(want orgsync.JoinStatus) orgsync.Msg {
	n.t.Helper()
	m := n.expectOrg(orgsync.TypeJoinAck)
	if m.Status != want {
		n.t.Fatalf("join answer %s (%q), want %s", m.Status, m.Text, want)
	}
	return m
}

func (n *srvNode) query(o *org.Signer, op org.JoinOp, node identity.PublicKey, at time.Time) *org.JoinQuery {
	n.t.Helper()
	q, err := o.SignJoinQuery(op, n.pub, node, at)
	if err != nil {
		n.t.Fatal(err)
	}
	n.sendOrg(orgsync.Msg{Type: orgsync.TypeJoinQuery, Data: q.Binary()})
	return q
}

// list asks for o's requests and returns them.
func (n *srvNode) list(o *org.Signer, at time.Time) []orgsync.Join {
	n.t.Helper()
	q := n.query(o, org.JoinList, identity.PublicKey{}, at)
	var out []orgsync.Join
	for {
		m := n.expectOrg(orgsync.TypeJoinItem)
		if m.Echo != q.Nonce || m.Org != o.Public() {
			n.t.Fatalf("list item for another query or organisation: %+v", m)
		}
		if m.Total == 0 {
			return nil
		}
		out = append(out, m.Join)
		if len(out) == int(m.Total) {
			return out
		}
	}
}

// The whole exchange at a bridge: a node asks to join, the key holder's
// node lists the request with a signed query, a replayed or misdirected
// query and a forged approval are refused, the approval reaches the node,
// and the request goes once the node presents its new certificate.
func TestJoinRequestListApprove(t *testing.T) {
	a, h, m := testKey(t), testKey(t), testKey(t)
	hs := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public(), h.Public(), m.Public()}})
	o := newOrg(t)
	now := hs.clk.Now()
	na, nh, nm := hs.udpNode(a), hs.udpNode(h), hs.udpNode(m)
	na.mustRegister()
	nh.mustRegister()
	nm.mustRegister()

	na.sendOrg(joinMsg(o, now, "web1.acme", "dev"))
	if ack := na.expectAck(orgsync.JoinHeld); ack.Echo != uint64(now.Unix()) || ack.Org != o.Public() {
		t.Fatalf("ack %+v", ack)
	}
	// Sent again (the node resends until it hears): the same request.
	na.sendOrg(joinMsg(o, now, "web1.acme", "dev"))
	na.expectAck(orgsync.JoinHeld)
	if st := hs.s.Stats(); st.OrgJoins != 1 {
		t.Fatalf("%d requests held, want 1", st.OrgJoins)
	}

	got := nh.list(o, now)
	if len(got) != 1 || got[0].Node != a.Public() || got[0].Name != "web1.acme" || len(got[0].Groups) != 1 || got[0].State != orgsync.JoinPending {
		t.Fatalf("list %+v", got)
	}
	// Another organisation's requests: none.
	if got := nh.list(newOrg(t), now); len(got) != 0 {
		t.Fatalf("another organisation's list: %+v", got)
	}

	// A replayed query, one signed for another node, a stale one, one
	// signed by another key: refused.
	q, _ := o.SignJoinQuery(org.JoinList, h.Public(), identity.PublicKey{}, now)
	nh.sendOrg(orgsync.Msg{Type: orgsync.TypeJoinQuery, Data: q.Binary()})
	nh.expectOrg(orgsync.TypeJoinItem)
	nh.sendOrg(orgsync.Msg{Type: orgsync.TypeJoinQuery, Data: q.Binary()})
	if ack := nh.expectAck(orgsync.JoinRefused); !bytes.Contains([]byte(ack.Text), []byte("replayed")) {
		t.Fatalf("replay: %q", ack.Text)
	}
	nm.sendOrg(orgsync.Msg{Type: orgsync.TypeJoinQuery, Data: q.Binary()}) // m forwards h's query
	nm.expectAck(orgsync.JoinRefused)
	nh.query(o, org.JoinList, identity.PublicKey{}, now.Add(-6*time.Minute))
	nh.expectAck(orgsync.JoinRefused)
	forged := mustSignQuery(t, newOrg(t), org.JoinList, h.Public(), now)
	b := forged.Binary()
	ok := o.Public()
	copy(b[len("tomoe-joinq-v1\x00")+1:], ok[:]) // claims acme, signed by another
	nh.sendOrg(orgsync.Msg{Type: orgsync.TypeJoinQuery, Data: b})
	nh.expectAck(orgsync.JoinRefused)

	// A forged approval (tampered after signing) and one for a node that
	// asked nothing: refused, not passed on.
	cert := mustSign(t, o, a.Public(), "web1.acme", now)
	bad := bytes.Clone(cert.Binary())
	bad[len(bad)-1] ^= 1
	nh.sendOrg(orgsync.Msg{Type: orgsync.TypeJoinCert, Data: bad})
	nh.expectAck(orgsync.JoinRefused)
	nh.sendOrg(orgsync.Msg{Type: orgsync.TypeJoinCert, Data: mustSign(t, o, m.Public(), "m.acme", now).Binary()})
	nh.expectAck(orgsync.JoinNoRequest)
	if !na.quiet() || !nm.quiet() {
		t.Fatal("a refused approval reached a node")
	}

	nh.sendOrg(orgsync.Msg{Type: orgsync.TypeJoinCert, Data: cert.Binary()})
	if ack := nh.expectAck(orgsync.JoinDelivered); ack.Echo != cert.Serial || ack.Join.Node != a.Public() {
		t.Fatalf("approval ack %+v", ack)
	}
	if d := na.expectOrg(orgsync.TypeJoinCert); !bytes.Equal(d.Data, cert.Binary()) {
		t.Fatal("the node got another certificate")
	}
	if got := nh.list(o, now); len(got) != 1 || got[0].State != orgsync.JoinApproved {
		t.Fatalf("after approval: %+v", got)
	}
	// The node presents its new certificate: the request is done.
	na.sendOrg(orgsync.Msg{Type: orgsync.TypeCert, Data: cert.Binary()})
	waitCond(t, "request dropped", func() bool { return hs.s.Stats().OrgJoins == 0 })
}

func mustSign(t *testing.T, o *org.Signer, node identity.PublicKey, name string, now time.Time) *org.Cert {
	t.Helper()
	c, err := o.SignCert(org.CertRequest{Node: node, Name: name, TTL: 24 * time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustSignQuery(t *testing.T, o *org.Signer, op org.JoinOp, via identity.PublicKey, now time.Time) *org.JoinQuery {
	t.Helper()
	q, err := o.SignJoinQuery(op, via, identity.PublicKey{}, now)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// An approval for a node that is away is kept; the node picks it up by
// sending its request again when it is back. A rejection sticks to that
// request; a newer request is held again.
func TestJoinPickupAndReject(t *testing.T) {
	a, b, h := testKey(t), testKey(t), testKey(t)
	hs := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public(), b.Public(), h.Public()}})
	o := newOrg(t)
	now := hs.clk.Now()
	na, nb, nh := hs.udpNode(a), hs.udpNode(b), hs.udpNode(h)
	na.mustRegister()
	nb.mustRegister()
	nh.mustRegister()
	created := now
	na.sendOrg(joinMsg(o, created, "a.acme"))
	na.expectAck(orgsync.JoinHeld)
	nb.sendOrg(joinMsg(o, created, "b.acme"))
	nb.expectAck(orgsync.JoinHeld)

	// a goes away: its registration lapses; the others register again.
	hs.clk.Advance(registrationTTL + time.Second)
	now = hs.clk.Now()
	hs.s.expireIdle(now)
	nb.mustRegister()
	nh.mustRegister()
	cert := mustSign(t, o, a.Public(), "a.acme", now)
	nh.sendOrg(orgsync.Msg{Type: orgsync.TypeJoinCert, Data: cert.Binary()})
	nh.expectAck(orgsync.JoinKept)
	if !na.quiet() {
		t.Fatal("the bridge sent something to a node that is away")
	}

	nh.query(o, org.JoinReject, b.Public(), now)
	nh.expectAck(orgsync.JoinRemoved)
	nb.sendOrg(joinMsg(o, created, "b.acme")) // resent: stays rejected
	nb.expectAck(orgsync.JoinRejected)
	nb.sendOrg(joinMsg(o, created.Add(-time.Second), "b.acme")) // older: refused
	nb.expectAck(orgsync.JoinRefused)
	nb.sendOrg(joinMsg(o, now, "b.acme")) // a new request
	nb.expectAck(orgsync.JoinHeld)
	nb.sendOrg(orgsync.Msg{Type: orgsync.TypeJoin, Org: o.Public(), Join: orgsync.Join{Created: now.Unix(), Withdraw: true}})
	nb.expectAck(orgsync.JoinWithdrawn)
	if got := nh.list(o, now); len(got) != 1 || got[0].Node != a.Public() || got[0].State != orgsync.JoinApproved {
		t.Fatalf("list: %+v", got)
	}

	// a comes back and sends its request again: it gets its certificate.
	na.mustRegister()
	na.sendOrg(joinMsg(o, created, "a.acme"))
	if d := na.expectOrg(orgsync.TypeJoinCert); !bytes.Equal(d.Data, cert.Binary()) {
		t.Fatal("the node picked up another certificate")
	}
	// Revoked at the bridge: its requests go.
	if _, err := hs.s.Revoke(a.Public()); err != nil {
		t.Fatal(err)
	}
	if got := nh.list(o, now); len(got) != 0 {
		t.Fatalf("a revoked node's request is still listed: %+v", got)
	}
}

// What one registered node can make the bridge hold is bounded: one
// request per organisation (a newer one replaces it), requests in
// maxJoinsPerNode organisations, and a flood spends its budget.
func TestJoinBoundsPerNode(t *testing.T) {
	a := testKey(t)
	hs := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public()}})
	now := hs.clk.Now()
	na := hs.udpNode(a)
	na.mustRegister()
	o := newOrg(t)
	for i := range 3 {
		na.sendOrg(joinMsg(o, now.Add(time.Duration(i)*time.Second), fmt.Sprintf("n%d.acme", i)))
		na.expectAck(orgsync.JoinHeld)
	}
	for range maxJoinsPerNode - 1 {
		na.sendOrg(joinMsg(newOrg(t), now, "x.acme"))
		na.expectAck(orgsync.JoinHeld)
	}
	na.sendOrg(joinMsg(newOrg(t), now, "x.acme"))
	na.expectAck(orgsync.JoinRefused)
	if st := hs.s.Stats(); st.OrgJoins != maxJoinsPerNode {
		t.Fatalf("%d requests held, want %d", st.OrgJoins, maxJoinsPerNode)
	}
	// Bad fields, a request from the far past or future: refused.
	for _, m := range []orgsync.Msg{joinMsg(o, now.Add(time.Hour), "n.acme"), joinMsg(o, now.Add(-8*24*time.Hour), "n.acme"), joinMsg(o, now, "Bad Name"), joinMsg(o, now, "n.acme", "BAD")} {
		na.sendOrg(m)
		na.expectAck(orgsync.JoinRefused)
	}
	// A flood: the member's budget (orgInBurst) is spent, the table does
	// not grow.
	for i := range 3 * orgInBurst {
		jm := joinMsg(o, now.Add(time.Duration(10+i)*time.Second), "n.acme")
		b, _ := jm.Marshal()
		na.send(wire.Message{Kind: wire.KindOrg, Data: b})
	}
	waitCond(t, "flood limited", func() bool { return hs.s.Stats().OrgLimited > 0 })
	if st := hs.s.Stats(); st.OrgJoins != maxJoinsPerNode {
		t.Fatalf("%d requests held after a flood, want %d", st.OrgJoins, maxJoinsPerNode)
	}
}

// The table's own bounds: requests per organisation, organisations, and
// expiry after joinTTL.
func TestJoinTableBounds(t *testing.T) {
	tb := newJoinTable()
	now := testStart
	key := func(i int) identity.PublicKey {
		var k identity.PublicKey
		k[0], k[1], k[2] = byte(i), byte(i>>8), 1
		return k
	}
	okey := func(i int) org.PublicKey { var k org.PublicKey; k[0], k[1] = byte(i), 9; return k }
	var c *org.Cert
	for i := range maxJoinsPerOrg {
		if st, text := tb.put(okey(0), key(i), now, "n.acme", nil, now, &c); st != orgsync.JoinHeld {
			t.Fatalf("request %d: %s %s", i, st, text)
		}
	}
	if st, _ := tb.put(okey(0), key(maxJoinsPerOrg), now, "n.acme", nil, now, &c); st != orgsync.JoinRefused {
		t.Fatalf("request over the organisation's limit: %s", st)
	}
	for i := 1; i < maxJoinOrgs; i++ {
		if st, _ := tb.put(okey(i), key(1000+i), now, "n.acme", nil, now, &c); st != orgsync.JoinHeld {
			t.Fatalf("organisation %d: %s", i, st)
		}
	}
	if st, _ := tb.put(okey(maxJoinOrgs), key(5000), now, "n.acme", nil, now, &c); st != orgsync.JoinRefused {
		t.Fatalf("organisation over the limit: %s", st)
	}
	tb.sweep(now.Add(joinTTL + 2*time.Minute))
	if n := tb.held.Load(); n != 0 || len(tb.orgs) != 0 || len(tb.perNode) != 0 {
		t.Fatalf("after expiry: %d held, %d organisations, %d nodes", n, len(tb.orgs), len(tb.perNode))
	}
}
