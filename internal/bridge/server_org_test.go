package bridge

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/orgsync"
)

func (n *srvNode) sendOrg(m orgsync.Msg) {
	n.t.Helper()
	b, err := m.Marshal()
	if err != nil {
		n.t.Fatal(err)
	}
	n.send(wire.Message{Kind: wire.KindOrg, Data: b})
}

func (n *srvNode) expectOrg(typ orgsync.Type) orgsync.Msg {
	n.t.Helper()
	m := n.expect(wire.KindOrg)
	o, err := orgsync.Unmarshal(m.Data)
	if err != nil {
		n.t.Fatal(err)
	}
	if o.Type != typ {
		n.t.Fatalf("node %s: got org message %d, want %d", n.pub.ShortString(), o.Type, typ)
	}
	return o
}

// quiet reports that n receives nothing for a moment.
func (n *srvNode) quiet() bool {
	_, err := n.recvErr(200 * time.Millisecond)
	return err != nil
}

func newOrg(t *testing.T) *org.Signer {
	t.Helper()
	s, err := org.Init("acme", filepath.Join(t.TempDir(), "org.key"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var certNames atomic.Int64

func signCert(t *testing.T, s *org.Signer, node identity.PublicKey, notBefore time.Time, ttl time.Duration) *org.Cert {
	t.Helper()
	c, err := s.SignCert(org.CertRequest{Node: node, Name: fmt.Sprintf("n%d.acme", certNames.Add(1)), TTL: ttl, NotBefore: notBefore}, notBefore)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A member's certificate comes with the answer to a lookup of it, and the
// looker's with the introduction; certificates that are not the
// presenter's own, tampered, expired or revoked are not kept.
func TestOrgCertsTravelWithLookups(t *testing.T) {
	a, b, c := testKey(t), testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public(), b.Public(), c.Public()}})
	o := newOrg(t)
	now := h.clk.Now()
	na, nb, nc := h.udpNode(a), h.udpNode(b), h.udpNode(c)
	na.mustRegister()
	nb.mustRegister()
	nc.mustRegister()
	certA, certB := signCert(t, o, a.Public(), now, 24*time.Hour), signCert(t, o, b.Public(), now, 24*time.Hour)
	na.sendOrg(orgsync.Msg{Type: orgsync.TypeCert, Data: certA.Binary()})
	nb.sendOrg(orgsync.Msg{Type: orgsync.TypeCert, Data: certB.Binary()})
	waitCond(t, "two certificates held", func() bool { return h.s.Stats().OrgCerts == 2 })

	nb.send(wire.Message{Kind: wire.KindLookup, Seq: 1, Address: a.Public().Address()})
	if r := nb.expect(wire.KindLookupReply); !r.Found || r.Key != a.Public() {
		t.Fatalf("lookup reply %+v", r)
	}
	if m := nb.expectOrg(orgsync.TypeCert); !bytes.Equal(m.Data, certA.Binary()) {
		t.Fatal("the looker got another certificate than the owner's")
	}
	na.expect(wire.KindIntroduce)
	if m := na.expectOrg(orgsync.TypeCert); !bytes.Equal(m.Data, certB.Binary()) {
		t.Fatal("the introduced node got another certificate than the looker's")
	}

	// Refused: c presents a's certificate, a tampered one, an expired one.
	tampered := bytes.Clone(signCert(t, o, c.Public(), now, time.Hour).Binary())
	tampered[len(tampered)-1] ^= 1
	expired := signCert(t, o, c.Public(), now.Add(-48*time.Hour), time.Hour)
	for _, bad := range [][]byte{certA.Binary(), tampered, expired.Binary()} {
		nc.sendOrg(orgsync.Msg{Type: orgsync.TypeCert, Data: bad})
	}
	waitCond(t, "three certificates refused", func() bool { return h.s.Stats().OrgCertsRefused == 3 })
	if st := h.s.Stats(); st.OrgCerts != 2 {
		t.Fatalf("%d certificates held, want 2", st.OrgCerts)
	}
	nb.send(wire.Message{Kind: wire.KindLookup, Seq: 2, Address: c.Public().Address()})
	nb.expect(wire.KindLookupReply)
	if !nb.quiet() {
		t.Fatal("the bridge sent a certificate for c, which presented none of its own")
	}
}

// A member announces a newer revocation list: the bridge pulls it, keeps
// it, tells the organisation's other members, which pull it from the
// bridge; the certificate it revokes is dropped and refused after. An
// older or forged list is not kept.
func TestOrgCRLPushedToMembers(t *testing.T) {
	a, b, c := testKey(t), testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public(), b.Public(), c.Public()}})
	o := newOrg(t)
	now := h.clk.Now()
	na, nb, nc := h.udpNode(a), h.udpNode(b), h.udpNode(c)
	na.mustRegister()
	nb.mustRegister()
	nc.mustRegister()
	certC := signCert(t, o, c.Public(), now, 24*time.Hour)
	for n, k := range map[*srvNode]identity.PrivateKey{na: a, nb: b, nc: c} {
		cert := certC
		if n != nc {
			cert = signCert(t, o, k.Public(), now, 24*time.Hour)
		}
		n.sendOrg(orgsync.Msg{Type: orgsync.TypeCert, Data: cert.Binary()})
	}
	waitCond(t, "three certificates held", func() bool { return h.s.Stats().OrgCerts == 3 })

	crl, err := o.Revoke([]uint64{certC.Serial}, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	doc := crl.Binary()
	id := orgsync.DocID{Kind: orgsync.KindCRL, Org: crl.Org, Version: crl.Version}
	// A forged copy first: the bridge pulls it, it does not verify.
	forged := bytes.Clone(doc)
	forged[len(forged)-1] ^= 1
	serve := func(n *srvNode, data []byte) {
		t.Helper()
		n.sendOrg(orgsync.Msg{Type: orgsync.TypeHello, Docs: []orgsync.DocID{id}})
		g := n.expectOrg(orgsync.TypeGet)
		if g.Doc != id {
			t.Fatalf("the bridge asked for %+v, want %+v", g.Doc, id)
		}
		for i := range orgsync.Chunks(data) {
			ch, _ := orgsync.Chunk(id, data, i)
			n.sendOrg(ch)
		}
	}
	serve(na, forged)
	if !nb.quiet() || h.s.Stats().OrgDocs != 0 {
		t.Fatal("a forged revocation list was kept or announced")
	}
	serve(na, doc)
	for _, n := range []*srvNode{na, nb, nc} {
		hello := n.expectOrg(orgsync.TypeHello)
		if len(hello.Docs) != 1 || hello.Docs[0] != id {
			t.Fatalf("pushed hello %+v", hello)
		}
	}
	nb.sendOrg(orgsync.Msg{Type: orgsync.TypeGet, Doc: id, Index: 0, Count: orgsync.MaxChunks})
	got := nb.expectOrg(orgsync.TypeChunk)
	if got.Total != 1 || !bytes.Equal(got.Data, doc) {
		t.Fatal("b pulled another list than the one a announced")
	}
	st := h.s.Stats()
	if st.OrgDocs != 1 || st.OrgCerts != 2 {
		t.Fatalf("stats %+v: want 1 document and 2 certificates (c's revoked)", st)
	}
	// c's certificate is revoked: presented again, it is refused; looked
	// up, c comes without it.
	refused := st.OrgCertsRefused
	nc.sendOrg(orgsync.Msg{Type: orgsync.TypeCert, Data: certC.Binary()})
	waitCond(t, "the revoked certificate refused", func() bool { return h.s.Stats().OrgCertsRefused == refused+1 })
	// ... but c is told of the list that revoked it (its peers, having cut
	// it, no longer announce it).
	if hello := nc.expectOrg(orgsync.TypeHello); len(hello.Docs) != 1 || hello.Docs[0] != id {
		t.Fatalf("answer to a revoked certificate: %+v", hello)
	}
	nb.send(wire.Message{Kind: wire.KindLookup, Seq: 3, Address: c.Public().Address()})
	nb.expect(wire.KindLookupReply)
	if !nb.quiet() {
		t.Fatal("the bridge still hands out a revoked certificate")
	}
	// An older version announced is not pulled.
	na.sendOrg(orgsync.Msg{Type: orgsync.TypeHello, Docs: []orgsync.DocID{{Kind: orgsync.KindCRL, Org: crl.Org, Version: crl.Version - 1}}})
	if !na.quiet() {
		t.Fatal("the bridge pulled an older revocation list")
	}
}

// A member cannot make the bridge send more chunks than its budget.
func TestOrgChunksRateLimited(t *testing.T) {
	a, b := testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public(), b.Public()}})
	o := newOrg(t)
	now := h.clk.Now()
	na, nb := h.udpNode(a), h.udpNode(b)
	na.mustRegister()
	nb.mustRegister()
	na.sendOrg(orgsync.Msg{Type: orgsync.TypeCert, Data: signCert(t, o, a.Public(), now, time.Hour).Binary()})
	nb.sendOrg(orgsync.Msg{Type: orgsync.TypeCert, Data: signCert(t, o, b.Public(), now, time.Hour).Binary()})
	waitCond(t, "two certificates held", func() bool { return h.s.Stats().OrgCerts == 2 })
	crl, err := o.Revoke(nil, []identity.PublicKey{testKey(t).Public()}, now)
	if err != nil {
		t.Fatal(err)
	}
	id := orgsync.DocID{Kind: orgsync.KindCRL, Org: crl.Org, Version: crl.Version}
	if _, err := h.s.org.x.Offer(id, crl.Binary()); err != nil {
		t.Fatal(err)
	}
	na.expectOrg(orgsync.TypeHello)
	nb.expectOrg(orgsync.TypeHello)
	// The bridge's clock stands still: no refill. b asks 400 times for
	// the one chunk, 20 at a time (so loopback drops none); it gets
	// orgChunkBurst chunks, and the rest are counted as dropped.
	get := orgsync.Msg{Type: orgsync.TypeGet, Doc: id, Count: 1}
	got := 0
	for sent := 20; sent <= 400; sent += 20 {
		for range 20 {
			nb.sendOrg(get)
		}
		waitCond(t, "the gets answered or dropped", func() bool {
			if _, err := nb.recvErr(10 * time.Millisecond); err == nil {
				got++
			}
			return got+int(h.s.Stats().OrgLimited) == sent
		})
	}
	if st := h.s.Stats(); got != orgChunkBurst || st.OrgLimited != 400-orgChunkBurst {
		t.Fatalf("b got %d chunks (want %d), %d dropped (want %d)", got, orgChunkBurst, st.OrgLimited, 400-orgChunkBurst)
	}
	if !nb.quiet() {
		t.Fatal("more chunks came")
	}
}

// Members present their certificate again every so often (orgs.
// PresentInterval): the same certificate again is kept once, not counted
// as refused, and answered like the first with the documents the bridge
// holds, so a member the bridge had lost catches up.
func TestOrgCertPresentedAgain(t *testing.T) {
	a, b := testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public(), b.Public()}})
	o := newOrg(t)
	now := h.clk.Now()
	na, nb := h.udpNode(a), h.udpNode(b)
	na.mustRegister()
	nb.mustRegister()
	certA, certB := signCert(t, o, a.Public(), now, 24*time.Hour), signCert(t, o, b.Public(), now, 24*time.Hour)
	na.sendOrg(orgsync.Msg{Type: orgsync.TypeCert, Data: certA.Binary()})
	nb.sendOrg(orgsync.Msg{Type: orgsync.TypeCert, Data: certB.Binary()})
	waitCond(t, "two certificates held", func() bool { return h.s.Stats().OrgCerts == 2 })

	// b hands the bridge a list; a is told of it.
	crl, err := o.Revoke(nil, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	doc := crl.Binary()
	id := orgsync.DocID{Kind: orgsync.KindCRL, Org: crl.Org, Version: crl.Version}
	nb.sendOrg(orgsync.Msg{Type: orgsync.TypeHello, Docs: []orgsync.DocID{id}})
	nb.expectOrg(orgsync.TypeGet)
	for i := range orgsync.Chunks(doc) {
		ch, _ := orgsync.Chunk(id, doc, i)
		nb.sendOrg(ch)
	}
	for _, n := range []*srvNode{na, nb} {
		if hello := n.expectOrg(orgsync.TypeHello); len(hello.Docs) != 1 || hello.Docs[0] != id {
			t.Fatalf("pushed hello %+v", hello)
		}
	}

	for range 3 {
		na.sendOrg(orgsync.Msg{Type: orgsync.TypeCert, Data: certA.Binary()})
		if hello := na.expectOrg(orgsync.TypeHello); len(hello.Docs) != 1 || hello.Docs[0] != id {
			t.Fatalf("answer to a presentation: %+v", hello)
		}
	}
	if st := h.s.Stats(); st.OrgCerts != 2 || st.OrgCertsRefused != 0 {
		t.Fatalf("stats %+v: want 2 certificates held, none refused", st)
	}
	// A newer certificate of the same member replaces the one held.
	newer := signCert(t, o, a.Public(), now.Add(time.Second), 24*time.Hour)
	na.sendOrg(orgsync.Msg{Type: orgsync.TypeCert, Data: newer.Binary()})
	na.expectOrg(orgsync.TypeHello)
	nb.send(wire.Message{Kind: wire.KindLookup, Seq: 1, Address: a.Public().Address()})
	nb.expect(wire.KindLookupReply)
	if m := nb.expectOrg(orgsync.TypeCert); !bytes.Equal(m.Data, newer.Binary()) {
		t.Fatal("the lookup came with the older certificate")
	}
}
