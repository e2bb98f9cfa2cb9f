package orgs

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/orgsync"
	"github.com/tomoe-net/tomoe/internal/packet"
	"github.com/tomoe-net/tomoe/internal/policy"
	"github.com/tomoe-net/tomoe/internal/ratelimit"
)

// peerChan sends document messages to a peer over the control port, and
// holds what the peer may make this node do: messages taken from it (a
// bounded share of the engine's queue), certificates and hellos (an
// Ed25519 check or a pull each) and chunks sent in answer to its Gets.
type peerChan struct {
	e    *Engine
	addr netip.Addr

	in, costly, chunks ratelimit.Bucket
	seen               atomic.Int64 // Unix nanoseconds of its last message
}

// What one peer can make this node do. A peer pulls a whole document
// (256 chunks) in one burst, then 64 KB/s; it is asked for at most 32
// chunks per Get, so messages it sends in answer stay well within in.
const (
	peerInRate      = 128
	peerInBurst     = 512
	peerCostlyRate  = 20
	peerCostlyBurst = 64
	peerChunkRate   = 64
	peerChunkBurst  = 256
)

func (c *peerChan) Send(m *orgsync.Msg) {
	if m.Type == orgsync.TypeChunk && !c.chunks.Allow(c.e.clock.Now().UnixNano(), 1, peerChunkRate, peerChunkBurst) {
		c.e.limited.Add(1)
		return
	}
	b, err := m.Marshal()
	if err != nil {
		return
	}
	port := c.e.cfg.ControlPort
	c.e.node.Inject(packet.UDP(c.e.cfg.Self.Address(), c.addr, port, port, b))
}

// bridgeChan sends document messages to a bridge.
type bridgeChan struct {
	e   *Engine
	key identity.PublicKey
}

func (c *bridgeChan) Send(m *orgsync.Msg) {
	b, err := m.Marshal()
	if err != nil {
		return
	}
	c.e.node.SendBridge(c.key, b)
}

func (e *Engine) peerChan(a netip.Addr) *peerChan {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.peerChans[a]
	if c == nil {
		now := e.clock.Now().UnixNano()
		c = &peerChan{e: e, addr: a}
		c.in.Init(now, peerInBurst)
		c.costly.Init(now, peerCostlyBurst)
		c.chunks.Init(now, peerChunkBurst)
		c.seen.Store(now)
		e.peerChans[a] = c
	}
	return c
}

func (e *Engine) bridgeChan(k identity.PublicKey) *bridgeChan {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.bridgeChans[k]
	if c == nil {
		c = &bridgeChan{e: e, key: k}
		e.bridgeChans[k] = c
	}
	return c
}

// ownCerts returns this node's certificates.
func (e *Engine) ownCerts() []*org.Cert {
	var out []*org.Cert
	for _, o := range e.orgList() {
		if o.Cert != nil {
			out = append(out, o.Cert)
		}
	}
	return out
}

// greet sends a peer this node's certificates and a Hello asking for its
// own (at most once per greetings.GreetInterval unless force), and asks
// again later while its certificate has not come.
func (e *Engine) greet(a netip.Addr, force bool) {
	now := e.clock.Now()
	if !e.greetings.Greet(a, now, force) {
		return
	}
	ch := e.peerChan(a)
	for _, c := range e.ownCerts() {
		ch.Send(&orgsync.Msg{Type: orgsync.TypeCert, Data: c.Binary()})
	}
	key, _ := e.node.PeerKey(a)
	want := !e.hasValid(key)
	ch.Send(e.x.Hello(want))
	e.greetings.Ask(a, now, want)
}

// askAgain sends a Hello asking for its certificates to each greeted peer
// that is due (greetings.Book.Due), still in the device, and has not
// presented one that verifies.
func (e *Engine) askAgain(now time.Time) {
	due := e.greetings.Due(now)
	if len(due) == 0 {
		return
	}
	inDevice := make(map[netip.Addr]bool)
	for _, a := range e.node.SessionPeers() {
		inDevice[a] = true
	}
	for _, a := range due {
		if key, ok := e.node.PeerKey(a); !ok || !inDevice[a] || e.hasValid(key) {
			e.greetings.Ask(a, now, false)
			continue
		}
		e.peerChan(a).Send(e.x.Hello(true))
	}
}

func (e *Engine) fromPeer(src netip.Addr, m *orgsync.Msg) {
	key, ok := e.node.PeerKey(src)
	if !ok {
		return
	}
	ch := e.peerChan(src)
	switch m.Type {
	case orgsync.TypeCert, orgsync.TypeHello:
		if !ch.costly.Allow(e.clock.Now().UnixNano(), 1, peerCostlyRate, peerCostlyBurst) {
			e.limited.Add(1)
			return
		}
	}
	switch m.Type {
	case orgsync.TypeCert:
		c, err := org.DecodeCert(m.Data)
		if err == nil && c.Node != key {
			err = fmt.Errorf("certificate for %s presented by %s", c.Node.ShortString(), key.ShortString())
		}
		if err == nil {
			err = e.addCert(c)
		}
		if err != nil {
			e.certRefused(key, err)
		}
	case orgsync.TypeHello:
		if m.WantCerts {
			if e.greetings.Answer(src, e.clock.Now()) {
				for _, c := range e.ownCerts() {
					ch.Send(&orgsync.Msg{Type: orgsync.TypeCert, Data: c.Binary()})
				}
				if !e.hasValid(key) {
					ch.Send(&orgsync.Msg{Type: orgsync.TypeHello, WantCerts: true})
				}
			}
		}
		e.x.Handle(ch, m)
	default:
		e.x.Handle(ch, m)
	}
}

// certRefused acts on a certificate a peer presented that this node
// does not accept. A member of several organisations presents a
// certificate of each, one after another: one of an organisation this
// node does not trust says nothing about the peer, and another may still
// verify. So a peer admitted pending its certificate is not cut at the
// first refusal: it has refusedGrace for one of its certificates to
// verify, then it is cut (onTick).
func (e *Engine) certRefused(key identity.PublicKey, err error) {
	if errors.Is(err, errNoOrg) {
		e.log.Debug("peer certificate of an organisation this node does not trust ignored", "peer", key.ShortString())
		return
	}
	e.certsBad.Add(1)
	e.log.Info("peer certificate refused", "peer", key.ShortString(), "err", err)
	e.mu.Lock()
	p, pending := e.pending[key]
	switch {
	case !pending:
	case errors.Is(err, errStale):
		// A certificate refused only for a stale list is kept: the
		// session stays, its traffic meeting no rule, until a fresh list
		// lets it in (fail closed, without a new handshake).
		delete(e.pending, key)
	default:
		if until := e.clock.Now().Add(refusedGrace); until.Before(p.until) {
			e.pending[key] = pendingPeer{until: until, why: "certificate refused: " + err.Error()}
		}
	}
	e.mu.Unlock()
	if pending && errors.Is(err, errStale) {
		e.node.Settled(key, false)
	}
}

func (e *Engine) fromBridge(bridge identity.PublicKey, m *orgsync.Msg) {
	if e.joins.Handle(bridge, m) {
		return
	}
	ch := e.bridgeChan(bridge)
	if m.Type == orgsync.TypeCert {
		c, err := org.DecodeCert(m.Data)
		if err == nil {
			err = e.addCert(c)
		}
		if err != nil {
			e.certsBad.Add(1)
			e.log.Debug("certificate from bridge refused", "bridge", bridge.ShortString(), "err", err)
		}
		return
	}
	e.x.Handle(ch, m)
}

// check verifies c as this node accepts certificates now.
func (e *Engine) check(c *org.Cert, now time.Time) (*Org, error) {
	o := e.org(c.Org)
	if o == nil {
		return nil, errNoOrg
	}
	if c.OrgName != o.Name {
		return o, fmt.Errorf("certificate is for organisation %q, but [[orgs]] names this key %q", c.OrgName, o.Name)
	}
	if err := c.Verify(o.Key, now); err != nil {
		return o, err
	}
	e.mu.Lock()
	crl, stale := e.crls[o.Key], e.stale[o.Key]
	e.mu.Unlock()
	if crl != nil && crl.Revokes(c) {
		return o, fmt.Errorf("%w: serial %s of %s is on revocation list version %d", org.ErrRevoked, c.SerialString(), o.Name, crl.Version)
	}
	if stale {
		return o, fmt.Errorf("%w: organisation %s: newest revocation list is older than crl_max_age (%s): its certificates are refused until a fresh list arrives", errStale, o.Name, o.CRLMaxAge)
	}
	return o, nil
}

// addCert keeps a verified certificate for its node and rebuilds the
// directory if it changed anything.
func (e *Engine) addCert(c *org.Cert) error {
	_, err := e.check(c, e.clock.Now())
	if err != nil && !errors.Is(err, errStale) {
		return err
	}
	// A certificate refused only because the organisation's list is stale
	// is kept (out of the directory): a fresh list brings it in.
	e.mu.Lock()
	byOrg := e.certs[c.Node]
	if byOrg == nil {
		if len(e.certs) >= maxKnown {
			e.mu.Unlock()
			return fmt.Errorf("certificates of %d nodes held already", maxKnown)
		}
		byOrg = make(map[org.PublicKey]*org.Cert)
		e.certs[c.Node] = byOrg
	}
	old := byOrg[c.Org]
	if old != nil && (old.Fingerprint() == c.Fingerprint() || old.NotBefore.After(c.NotBefore)) {
		e.mu.Unlock()
		return err // the same, or older than the one held
	}
	byOrg[c.Org] = c
	e.dirty = true
	e.mu.Unlock()
	if err != nil {
		return err
	}
	e.log.Debug("peer certificate verified", "peer", c.Node.ShortString(), "org", c.OrgName, "name", c.Name)
	return nil
}

func (e *Engine) hasValid(k identity.PublicKey) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.hasValidLocked(k)
}

func (e *Engine) hasValidLocked(k identity.PublicKey) bool {
	d := e.dir.Load()
	return d != nil && len((*d)[k.Address()]) > 0
}

// rebuild recomputes the directory from the certificates held (dropping
// those no longer valid) and hands it to the node.
func (e *Engine) rebuild() {
	now := e.clock.Now()
	dir := policy.Directory{}
	members := map[netip.Addr][]Membership{}
	e.mu.Lock()
	type held struct {
		key identity.PublicKey
		c   *org.Cert
	}
	var all []held
	for k, byOrg := range e.certs {
		for _, c := range byOrg {
			all = append(all, held{k, c})
		}
	}
	e.mu.Unlock()
	for _, h := range all {
		o, err := e.check(h.c, now)
		if err != nil {
			// Revoked and expired certificates go; those of an
			// organisation whose list is stale wait for a fresh one.
			if errors.Is(err, org.ErrRevoked) || errors.Is(err, org.ErrExpired) {
				e.mu.Lock()
				if byOrg := e.certs[h.key]; byOrg != nil && byOrg[h.c.Org] == h.c {
					delete(byOrg, h.c.Org)
					if len(byOrg) == 0 {
						delete(e.certs, h.key)
					}
				}
				e.mu.Unlock()
			}
			continue
		}
		a := h.key.Address()
		dir[a] = append(dir[a], policy.Member{Org: o.Name, Name: h.c.Name, Groups: h.c.Groups})
		members[a] = append(members[a], Membership{Org: o.Name, Name: h.c.Name, Groups: h.c.Groups, Serial: h.c.SerialString(), Expires: h.c.NotAfter, IPv4: h.c.IPv4})
	}
	for a := range members {
		slices.SortFunc(members[a], func(x, y Membership) int { return strings.Compare(x.Org, y.Org) })
		slices.SortFunc(dir[a], func(x, y policy.Member) int { return strings.Compare(x.Org, y.Org) })
	}
	e.dir.Store(&dir)
	e.members.Store(&members)
	e.node.MembersChanged(dir, e.selfMembers(now))
	// Peers that waited for their certificate: their packets meet the
	// rules now, within a round trip of their first.
	var settled []identity.PublicKey
	e.mu.Lock()
	for k := range e.pending {
		if len(dir[k.Address()]) > 0 {
			delete(e.pending, k)
			settled = append(settled, k)
		}
	}
	e.mu.Unlock()
	for _, k := range settled {
		e.node.Settled(k, true)
	}
}

// selfMembers are this node's own valid memberships.
func (e *Engine) selfMembers(now time.Time) []policy.Member {
	var out []policy.Member
	for _, o := range e.orgList() {
		if o.Cert == nil {
			continue
		}
		if _, err := e.check(o.Cert, now); err != nil {
			continue
		}
		out = append(out, policy.Member{Org: o.Name, Name: o.Cert.Name, Groups: o.Cert.Groups})
	}
	return out
}

// expiryPassed reports whether some certificate held expired since the
// last look.
func (e *Engine) expiryPassed(now time.Time) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, byOrg := range e.certs {
		for _, c := range byOrg {
			if now.After(c.NotAfter.Add(org.ClockSkew)) {
				return true
			}
		}
	}
	return false
}

// checkStale marks the organisations whose newest list is older than
// their crl_max_age, reporting whether that changed for any.
func (e *Engine) checkStale() bool {
	now := e.clock.Now()
	changed := false
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, o := range e.set.Load().byKey {
		if o.CRLMaxAge <= 0 {
			continue
		}
		crl := e.crls[k]
		stale := crl == nil || now.Sub(crl.Issued) > o.CRLMaxAge
		if stale != e.stale[k] {
			changed = true
			e.stale[k] = stale
			if stale {
				e.log.Warn("organisation certificates refused: no revocation list newer than crl_max_age", "org", o.Name, "crl_max_age", o.CRLMaxAge, "list_version", versionOf(crl))
			} else {
				e.log.Info("organisation revocation list fresh again", "org", o.Name, "list_version", crl.Version)
			}
		}
	}
	return changed
}

func versionOf(l *org.CRL) uint64 {
	if l == nil {
		return 0
	}
	return l.Version
}
