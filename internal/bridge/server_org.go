package bridge

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/orgsync"
	"github.com/tomoe-net/tomoe/internal/ratelimit"
)

// A bridge carries organisation documents without holding any
// organisation's key (issue 11). A registered member presents its
// certificates (orgsync Cert in wire Org messages); the bridge keeps those
// that are signed by the organisation they name, name the member's key
// and are not revoked by the newest revocation list it holds, and hands
// them out with lookup answers and introductions, so that two members
// that meet through it learn each other's certificates. It pulls the
// documents (revocation lists, organisation policies) its members announce
// for those organisations, keeps the newest verified version of each and
// announces a fresh one to every member of that organisation at once; they
// pull it from the bridge. A bridge checks signatures: it can withhold a
// document or a certificate, never forge one, and the nodes verify
// everything again themselves.
//
// Memory is bounded: at most maxMemberCerts certificates per registered
// member (freed when its registration goes) and the documents of at most
// maxOrgs organisations (orgsync.Store: two documents each).

// Organisation limits.
const (
	maxMemberCerts = 4  // certificates kept per member: the newest per organisation
	maxOrgs        = 64 // organisations whose documents the bridge keeps
	// What a member can make the bridge do: chunks sent in answer to its
	// Gets (a 256-chunk document in one burst, then 64 KB/s), and
	// certificates and hellos taken from it (an Ed25519 check each).
	orgChunkRate  = 64
	orgChunkBurst = 256
	orgInRate     = 20
	orgInBurst    = 64
	orgRetryEvery = time.Second
)

// orgState is the bridge's organisation table. Lock order: Server.mu,
// then orgState.mu, then the Exchanger's own; nothing here takes
// Server.mu while holding mu.
type orgState struct {
	x *orgsync.Exchanger

	mu      sync.Mutex // guards members, orgs
	members map[identity.PublicKey]*orgMember
	orgs    map[org.PublicKey]*orgEntry

	certs                    atomic.Int64 // certificates held
	certsRefused, pushed     atomic.Uint64
	chunksLimited, inLimited atomic.Uint64
}

// orgEntry is an organisation the bridge keeps documents for.
type orgEntry struct {
	members int      // members holding a certificate of it; at 0 it may be evicted
	crl     *org.CRL // the newest verified revocation list, or nil
}

// orgMember is a registered member's organisation state: its channel for
// the Exchanger (a pointer, compared with ==) and its certificates.
type orgMember struct {
	s   *Server
	key identity.PublicKey

	certs  []*org.Cert      // guarded by orgState.mu; one per organisation
	chunks ratelimit.Bucket // chunks sent to it
	in     ratelimit.Bucket // certificates and hellos taken from it
}

func newOrgState(s *Server) *orgState {
	o := &orgState{
		members: make(map[identity.PublicKey]*orgMember),
		orgs:    make(map[org.PublicKey]*orgEntry),
	}
	o.x = orgsync.NewExchanger(orgsync.NewStore())
	o.x.Now = s.now
	o.x.Accept = o.accept
	o.x.Verify = verifyDoc
	o.x.Fresh = func(id orgsync.DocID, doc []byte) { s.orgFresh(id, doc) }
	return o
}

// accept: documents of an organisation a current member holds a
// certificate of.
func (o *orgState) accept(id orgsync.DocID) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	e := o.orgs[org.PublicKey(id.Org)]
	return e != nil && e.members > 0
}

// verifyDoc checks a whole document: it decodes as id's kind, is signed
// by id's organisation and has id's version.
func verifyDoc(id orgsync.DocID, doc []byte) error {
	k := org.PublicKey(id.Org)
	switch id.Kind {
	case orgsync.KindCRL:
		l, err := org.DecodeCRL(doc)
		if err != nil {
			return err
		}
		if err := l.Verify(k); err != nil {
			return err
		}
		if l.Version != id.Version {
			return fmt.Errorf("revocation list is version %d, announced as %d", l.Version, id.Version)
		}
	case orgsync.KindPolicy:
		d, err := org.DecodePolicyDoc(doc)
		if err != nil {
			return err
		}
		if err := d.Verify(k); err != nil {
			return err
		}
		if d.Version != id.Version {
			return fmt.Errorf("organisation policy is version %d, announced as %d", d.Version, id.Version)
		}
	default:
		return fmt.Errorf("unknown document kind %d", id.Kind)
	}
	return nil
}

// Send implements orgsync.Channel: m goes to the member over its current
// path. Chunks (answers to its Gets) spend its chunk budget.
func (mb *orgMember) Send(m *orgsync.Msg) {
	s := mb.s
	if m.Type == orgsync.TypeChunk && !mb.chunks.Allow(s.now().UnixNano(), 1, orgChunkRate, orgChunkBurst) {
		s.org.chunksLimited.Add(1)
		return
	}
	s.sendOrg(mb.key, nil, m)
}

// sendOrg seals m to the registered node key (with shared, if not nil)
// over its current path. It does nothing if key is not registered.
func (s *Server) sendOrg(key identity.PublicKey, shared *wire.SharedKey, m *orgsync.Msg) {
	data, err := m.Marshal()
	if err != nil {
		s.logLimited(slog.LevelWarn, "bridge: cannot encode an organisation message", "peer", key.String(), "err", err)
		return
	}
	s.mu.RLock()
	reg := s.regs[key]
	var dst netip.AddrPort
	var c *serverConn
	if reg != nil {
		dst, c = reg.endpoint, reg.tcp
	}
	s.mu.RUnlock()
	if reg == nil || (c == nil && !dst.IsValid()) {
		return
	}
	s.sendControl(key, shared, wire.Message{Kind: wire.KindOrg, Data: data}, dst, c)
}

// orgMessage acts on an Org message from a registered member.
func (s *Server) orgMessage(from identity.PublicKey, shared *wire.SharedKey, m wire.Message, src netip.AddrPort, c *serverConn, now time.Time) {
	s.mu.RLock()
	reg := s.regs[from]
	ok := reg != nil && onPathLocked(reg, src, c)
	s.mu.RUnlock()
	if !ok {
		return
	}
	msg, err := orgsync.Unmarshal(m.Data)
	if err != nil {
		s.stats.badControl.Add(1)
		return
	}
	mb := s.orgMember(reg, now)
	if mb == nil {
		return // the registration went meanwhile
	}
	switch msg.Type {
	case orgsync.TypeCert, orgsync.TypeHello, orgsync.TypeJoin, orgsync.TypeJoinQuery, orgsync.TypeJoinCert:
		if !mb.in.Allow(now.UnixNano(), 1, orgInRate, orgInBurst) {
			s.org.inLimited.Add(1)
			return
		}
	}
	switch msg.Type {
	case orgsync.TypeCert:
		s.presentCert(mb, reg, shared, msg.Data, now)
	case orgsync.TypeJoin, orgsync.TypeJoinQuery, orgsync.TypeJoinCert:
		s.joinMessage(mb, shared, &msg, now)
	case orgsync.TypeHello, orgsync.TypeGet, orgsync.TypeChunk:
		s.org.x.Handle(mb, &msg)
	}
}

// orgMember returns reg's member entry, making it while reg is still
// registered (so an entry never outlives its registration).
func (s *Server) orgMember(reg *registration, now time.Time) *orgMember {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.regs[reg.key] != reg {
		return nil
	}
	o := s.org
	o.mu.Lock()
	defer o.mu.Unlock()
	mb := o.members[reg.key]
	if mb == nil {
		mb = &orgMember{s: s, key: reg.key}
		mb.chunks.Init(now.UnixNano(), orgChunkBurst)
		mb.in.Init(now.UnixNano(), orgInBurst)
		o.members[reg.key] = mb
	}
	return mb
}

// presentCert keeps a certificate a member presents if it is its own, is
// signed by the organisation it names, is valid now and is not revoked;
// then it tells the member which documents of that organisation the
// bridge holds, so a node that was away catches up.
func (s *Server) presentCert(mb *orgMember, reg *registration, shared *wire.SharedKey, b []byte, now time.Time) {
	o := s.org
	cert, err := org.DecodeCert(b)
	if err == nil && cert.Node != mb.key {
		err = fmt.Errorf("certificate %q is for node %s, presented by %s", cert.Name, cert.Node.ShortString(), mb.key.ShortString())
	}
	// Members present their certificates again every so often (a lost
	// presentation, a registration dropped and taken back): one already
	// held, byte for byte, is not verified again.
	genuine := false // signed by its organisation: its documents may be named
	if err == nil && !o.holds(mb, cert, now) {
		err = cert.Verify(cert.Org, now)
		if err == nil {
			genuine = true
			err = s.keepCert(mb, reg, cert)
		}
	}
	if err != nil {
		o.certsRefused.Add(1)
		s.logLimited(slog.LevelInfo, "bridge: certificate not kept", "peer", mb.key.String(), "err", err)
		// A member whose certificate is refused as revoked (or older) is
		// still told of the documents: its node learns the list that
		// revoked it, which its peers, having cut it, no longer announce.
		if !genuine {
			return
		}
	}
	s.joins.joinPickedUp(cert.Org, mb.key)
	var docs []orgsync.DocID
	for _, k := range []orgsync.Kind{orgsync.KindCRL, orgsync.KindPolicy} {
		if id, _, ok := o.x.Store.Get(k, cert.Org); ok {
			docs = append(docs, id)
		}
	}
	if len(docs) > 0 {
		o.pushed.Add(1)
		s.sendOrg(mb.key, shared, &orgsync.Msg{Type: orgsync.TypeHello, Docs: docs})
	}
}

// holds reports whether mb's certificate of cert's organisation is cert
// (the same signed body and signature) and still within its validity.
func (o *orgState) holds(mb *orgMember, cert *org.Cert, now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.members[mb.key] != mb {
		return false
	}
	for _, held := range mb.certs {
		if held.Org == cert.Org {
			return bytes.Equal(held.Binary(), cert.Binary()) && !now.After(held.NotAfter.Add(org.ClockSkew))
		}
	}
	return false
}

// keepCert files cert as mb's certificate of its organisation, replacing
// an older one, under the registration reg (still current).
func (s *Server) keepCert(mb *orgMember, reg *registration, cert *org.Cert) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.regs[reg.key] != reg {
		return fmt.Errorf("node %s is no longer registered", mb.key.ShortString())
	}
	o := s.org
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.members[mb.key] != mb {
		return fmt.Errorf("node %s is no longer registered", mb.key.ShortString())
	}
	e := o.orgs[cert.Org]
	if e != nil && e.crl != nil && e.crl.Revokes(cert) {
		return fmt.Errorf("certificate %q (serial %s) is revoked by revocation list version %d", cert.Name, cert.SerialString(), e.crl.Version)
	}
	for i, held := range mb.certs {
		if held.Org == cert.Org {
			if cert.NotBefore.Before(held.NotBefore) {
				return fmt.Errorf("certificate %q (serial %s) is older than the one held", cert.Name, cert.SerialString())
			}
			mb.certs[i] = cert
			return nil
		}
	}
	if len(mb.certs) >= maxMemberCerts {
		return fmt.Errorf("node %s presented certificates of more than %d organisations", mb.key.ShortString(), maxMemberCerts)
	}
	if e == nil {
		if !o.makeRoomLocked() {
			return fmt.Errorf("the bridge serves %d organisations already", maxOrgs)
		}
		e = &orgEntry{}
		o.orgs[cert.Org] = e
	}
	e.members++
	mb.certs = append(mb.certs, cert)
	o.certs.Add(1)
	return nil
}

// makeRoomLocked makes room for one more organisation, evicting one no
// member holds a certificate of (and its documents).
func (o *orgState) makeRoomLocked() bool {
	if len(o.orgs) < maxOrgs {
		return true
	}
	for k, e := range o.orgs {
		if e.members == 0 {
			delete(o.orgs, k)
			o.x.Store.Forget(orgsync.KindCRL, k)
			o.x.Store.Forget(orgsync.KindPolicy, k)
			return true
		}
	}
	return false
}

// dropMemberLocked forgets a member whose registration goes (Server.mu
// held for writing).
func (o *orgState) dropMemberLocked(key identity.PublicKey) {
	o.mu.Lock()
	mb := o.members[key]
	if mb == nil {
		o.mu.Unlock()
		return
	}
	delete(o.members, key)
	for _, c := range mb.certs {
		o.releaseLocked(c.Org)
	}
	o.mu.Unlock()
	o.x.Forget(mb)
}

// releaseLocked notes that one certificate of organisation k went. The
// organisation's documents stay until its slot is needed: a member that
// comes back is checked against its revocation list.
func (o *orgState) releaseLocked(k org.PublicKey) {
	if e := o.orgs[k]; e != nil && e.members > 0 {
		e.members--
	}
	o.certs.Add(-1)
}

// certsOf returns the certificates key presented that are still within
// their validity at now, in binary form.
func (o *orgState) certsOf(key identity.PublicKey, now time.Time) [][]byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	mb := o.members[key]
	if mb == nil {
		return nil
	}
	out := make([][]byte, 0, len(mb.certs))
	for _, c := range mb.certs {
		if !now.After(c.NotAfter.Add(org.ClockSkew)) {
			out = append(out, c.Binary())
		}
	}
	return out
}

// sendCerts sends to the node to (sealed with shared, if not nil) the
// certificates of the node owner: with a lookup answer or an
// introduction.
func (s *Server) sendCerts(to identity.PublicKey, shared *wire.SharedKey, owner identity.PublicKey, now time.Time) {
	for _, b := range s.org.certsOf(owner, now) {
		s.sendOrg(to, shared, &orgsync.Msg{Type: orgsync.TypeCert, Data: b})
	}
}

// orgFresh acts on a document newly kept: a revocation list drops the
// certificates it revokes; every member of the organisation is told.
func (s *Server) orgFresh(id orgsync.DocID, doc []byte) {
	o := s.org
	k := org.PublicKey(id.Org)
	var crl *org.CRL
	if id.Kind == orgsync.KindCRL {
		l, err := org.DecodeCRL(doc) // verified: it decodes
		if err != nil {
			return
		}
		crl = l
	}
	var tell []identity.PublicKey
	o.mu.Lock()
	e := o.orgs[k]
	if e != nil && crl != nil && (e.crl == nil || e.crl.Version < crl.Version) {
		e.crl = crl
	}
	for key, mb := range o.members {
		for i := 0; i < len(mb.certs); i++ {
			c := mb.certs[i]
			if c.Org != k {
				continue
			}
			if crl != nil && crl.Revokes(c) {
				mb.certs = append(mb.certs[:i], mb.certs[i+1:]...)
				i--
				o.releaseLocked(k)
			}
			// A revoked member is told too: its node learns the list.
			tell = append(tell, key)
		}
	}
	o.mu.Unlock()
	s.log.Info("bridge: organisation document updated", "kind", id.Kind.String(), "org", k.String(), "version", id.Version, "members", len(tell))
	hello := &orgsync.Msg{Type: orgsync.TypeHello, Docs: []orgsync.DocID{id}}
	for _, key := range tell {
		o.pushed.Add(1)
		s.sendOrg(key, nil, hello)
	}
}

// orgLoop asks again for the chunks of documents being pulled that did
// not come.
func (s *Server) orgLoop() {
	defer s.wg.Done()
	t := s.clock.NewTicker(orgRetryEvery)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C():
			s.org.x.Retry()
		}
	}
}

// orgStats fills the organisation counters of st.
func (o *orgState) orgStats(st *ServerStats) {
	st.OrgCerts = int(o.certs.Load())
	st.OrgDocs = len(o.x.Store.Held())
	st.OrgCertsRefused = o.certsRefused.Load()
	st.OrgPushed = o.pushed.Load()
	st.OrgLimited = o.chunksLimited.Load() + o.inLimited.Load()
}

// joinStats fills the join counters of st.
func (t *joinTable) joinStats(st *ServerStats) {
	st.OrgJoins = int(t.held.Load())
	st.OrgJoinsRefused = t.refused.Load()
	st.OrgJoinQueries = t.queries.Load()
	st.OrgJoinsApproved = t.approved.Load()
	st.OrgJoinsRejected = t.rejected.Load()
}
