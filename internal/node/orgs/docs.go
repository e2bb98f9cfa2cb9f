package orgs

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node/joins"
	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/orgpolicy"
	"github.com/tomoe-net/tomoe/internal/orgsync"
	"github.com/tomoe-net/tomoe/internal/statefile"
)

// verifyDoc is the Exchanger's check of a whole document.
func (e *Engine) verifyDoc(id orgsync.DocID, doc []byte) error {
	key := org.PublicKey(id.Org)
	o := e.org(key)
	if o == nil {
		return errNoOrg
	}
	switch id.Kind {
	case orgsync.KindCRL:
		l, err := org.DecodeCRL(doc)
		if err != nil {
			return err
		}
		if err := l.Verify(key); err != nil {
			return err
		}
		if l.Version != id.Version {
			return fmt.Errorf("revocation list version %d announced as %d", l.Version, id.Version)
		}
	case orgsync.KindPolicy:
		d, err := org.DecodePolicyDoc(doc)
		if err != nil {
			return err
		}
		if err := d.Verify(key); err != nil {
			return err
		}
		if d.Version != id.Version {
			return fmt.Errorf("organisation policy version %d announced as %d", d.Version, id.Version)
		}
	default:
		return fmt.Errorf("unknown document kind %d", id.Kind)
	}
	return nil
}

// fresh acts on a document newly kept: a list revokes, a policy applies;
// then it is saved and announced to every peer with a session and every
// bridge, so that it spreads within seconds.
func (e *Engine) fresh(id orgsync.DocID, doc []byte) {
	o := e.org(org.PublicKey(id.Org))
	switch id.Kind {
	case orgsync.KindCRL:
		l, err := org.DecodeCRL(doc)
		if err != nil {
			return
		}
		e.applyCRL(o, l)
	case orgsync.KindPolicy:
		d, err := org.DecodePolicyDoc(doc)
		if err != nil {
			return
		}
		e.applyPolicy(o, d)
	}
	if err := e.save(); err != nil {
		e.log.Warn("cannot save the organisation documents", "err", err)
	}
	e.announce(id)
}

// announce tells every peer in the device and every bridge about id.
func (e *Engine) announce(id orgsync.DocID) {
	hello := &orgsync.Msg{Type: orgsync.TypeHello, Docs: []orgsync.DocID{id}}
	for _, a := range e.node.SessionPeers() {
		e.peerChan(a).Send(hello)
	}
	for _, b := range e.node.Bridges() {
		e.bridgeChan(b).Send(hello)
	}
}

// applyCRL installs a newer list: certificates it revokes leave the
// directory, and the sessions and flows of the peers they belonged to
// (or whose keys it names) are cut at once.
func (e *Engine) applyCRL(o *Org, l *org.CRL) {
	var cut []identity.PublicKey
	e.mu.Lock()
	e.crls[o.Key] = l
	for k, byOrg := range e.certs {
		if c := byOrg[o.Key]; c != nil && l.Revokes(c) {
			cut = append(cut, k)
		}
	}
	e.mu.Unlock()
	e.checkStale()
	e.rebuild() // revoked certificates leave the directory (and the policy) first
	// Peers whose certificates are not held (refused while the list was
	// stale, or lost) are asked again.
	for _, a := range e.node.SessionPeers() {
		if k, ok := e.node.PeerKey(a); ok && !e.hasValid(k) {
			e.peerChan(a).Send(&orgsync.Msg{Type: orgsync.TypeHello, WantCerts: true})
		}
	}
	// A peer whose certificate in this organisation is revoked but that is
	// still a valid member of another keeps its session: the rebuilt
	// policy refuses, from its next packet, what only the revoked
	// membership allowed. Cutting it would black-hole its other traffic
	// until its own WireGuard gave up on the session (15 s). A key the
	// list names is cut whatever else it holds.
	kept := 0
	cut = slices.DeleteFunc(cut, func(k identity.PublicKey) bool {
		if e.hasValid(k) && !l.RevokesKey(k) {
			kept++
			return true
		}
		return false
	})
	for _, k := range l.Keys {
		if _, ok := e.node.PeerKey(k.Address()); ok && !slices.Contains(cut, k) {
			cut = append(cut, k)
		}
	}
	// The event marks the list's arrival; the peer_removed events of the
	// sessions it cuts follow it (bench/sim times the one from the other).
	e.node.Event("org_crl", "", fmt.Sprintf("%s revocation list version %d: %d revoked, %d sessions cut", o.Name, l.Version, len(l.Serials)+len(l.Keys), len(cut)))
	if len(cut) > 0 {
		e.node.Cut(cut, fmt.Sprintf("revoked by %s revocation list version %d", o.Name, l.Version))
	}
	e.log.Info("organisation revocation list installed", "org", o.Name, "version", l.Version, "revoked", len(l.Serials)+len(l.Keys), "sessions_cut", len(cut), "kept_as_members_elsewhere", kept)
	if own := o.Cert; own != nil && l.Revokes(own) {
		e.log.Error("this node's own certificate is revoked", "org", o.Name, "serial", own.SerialString())
	}
}

// applyPolicy installs an organisation policy's rules, if this node
// accepts that organisation's policy.
func (e *Engine) applyPolicy(o *Org, d *org.PolicyDoc) {
	e.mu.Lock()
	e.policies[o.Key] = d
	e.mu.Unlock()
	if !o.AcceptPolicy {
		e.log.Info("organisation policy held and passed on, not applied (accept_policy is off)", "org", o.Name, "version", d.Version)
		return
	}
	rules, err := orgpolicy.Rules(d)
	e.mu.Lock()
	if err != nil {
		e.policyErr[o.Key] = err.Error()
	} else {
		delete(e.policyErr, o.Key)
	}
	e.mu.Unlock()
	if err != nil {
		// Signed by the organisation but not understood here (a newer
		// build's rule): apply none of it rather than part of it.
		e.log.Error("organisation policy not applied", "org", o.Name, "version", d.Version, "err", err)
		return
	}
	e.node.OrgRules(o.Name, d.Version, rules)
	e.log.Info("organisation policy applied", "org", o.Name, "version", d.Version, "rules", len(rules))
	e.node.Event("org_policy", "", fmt.Sprintf("%s policy version %d applied: %d rules", o.Name, d.Version, len(rules)))
}

// stateFile is the on-disk form of the documents held, and of what this
// node asked for and got by request (join.go). Version 2 adds Joined and
// Requests; it is written only when they are not empty, so that an older
// build, which would drop them unseen, refuses the file instead.
type stateFile struct {
	Version   int           `json:"version"`
	Documents []string      `json:"documents"`          // text forms
	Joined    []string      `json:"joined,omitempty"`   // this node's certificates received by request, text forms
	Requests  []joins.Saved `json:"requests,omitempty"` // this node's pending join requests
}

const stateVersionJoins = 2

func (e *Engine) file() statefile.File {
	return statefile.File{Path: e.cfg.StateFile, What: "organisation state", MaxVersion: stateVersionJoins,
		Forget: "the revocation lists and organisation policies this node received (peers and bridges send them again), and the certificates it received and requests it made with `tomoe org join` (make them again)"}
}

// load reads the state file: the certificates this node received by
// request (its organisations), the documents (each verified and
// installed), and its pending requests.
func (e *Engine) load() error {
	if e.cfg.StateFile == "" {
		return nil
	}
	var st stateFile
	found, err := e.file().Load(&st, &st.Version)
	if err != nil || !found {
		return err
	}
	for i, text := range st.Joined {
		c, err := org.ParseCert(text)
		if err != nil {
			return e.file().Corrupt(fmt.Errorf("joined[%d]: %v", i, err))
		}
		if c.Node != e.cfg.Self {
			e.log.Warn("kept certificate is for another node key; dropped", "name", c.Name, "node", c.Node.ShortString())
			continue
		}
		if err := c.Verify(c.Org, e.clock.Now()); err != nil && !errors.Is(err, org.ErrExpired) && !errors.Is(err, org.ErrNotYetValid) {
			e.log.Warn("kept certificate does not verify; dropped", "name", c.Name, "err", err)
			continue
		}
		set, err := e.withJoined(e.set.Load(), c)
		if err != nil {
			e.log.Warn("kept certificate not installed", "name", c.Name, "err", err)
			continue
		}
		e.set.Store(set)
		e.log.Info("organisation joined by request", "org", c.OrgName, "name", c.Name, "serial", c.SerialString())
	}
	e.joins.Load(st.Requests)
	for i, text := range st.Documents {
		id, doc, err := decodeText(text)
		if err != nil {
			return e.file().Corrupt(fmt.Errorf("documents[%d]: %v", i, err))
		}
		o := e.org(org.PublicKey(id.Org))
		if o == nil {
			continue // the organisation left the config
		}
		if err := e.verifyDoc(id, doc); err != nil {
			e.log.Warn("kept organisation document does not verify; dropped", "org", o.Name, "kind", id.Kind, "err", err)
			continue
		}
		if !e.store.Put(id, doc) {
			continue
		}
		switch id.Kind {
		case orgsync.KindCRL:
			l, _ := org.DecodeCRL(doc)
			e.crls[o.Key] = l
		case orgsync.KindPolicy:
			d, _ := org.DecodePolicyDoc(doc)
			e.applyPolicy(o, d)
		}
	}
	return nil
}

func (e *Engine) save() error {
	if e.cfg.StateFile == "" {
		return nil
	}
	e.saveMu.Lock()
	defer e.saveMu.Unlock()
	st := stateFile{Version: statefile.Version, Documents: []string{}}
	for _, o := range e.orgList() {
		if o.Joined && o.Cert != nil {
			st.Joined = append(st.Joined, o.Cert.Text())
		}
	}
	st.Requests = e.joins.Saved()
	if len(st.Joined) > 0 || len(st.Requests) > 0 {
		st.Version = stateVersionJoins
	}
	for _, id := range e.store.Held() {
		_, doc, ok := e.store.Get(id.Kind, id.Org)
		if !ok {
			continue
		}
		switch id.Kind {
		case orgsync.KindCRL:
			l, err := org.DecodeCRL(doc)
			if err == nil {
				st.Documents = append(st.Documents, l.Text())
			}
		case orgsync.KindPolicy:
			d, err := org.DecodePolicyDoc(doc)
			if err == nil {
				st.Documents = append(st.Documents, d.Text())
			}
		}
	}
	return e.file().Save(st)
}

// decodeText reads a document's text form: a revocation list or an
// organisation policy.
func decodeText(text string) (orgsync.DocID, []byte, error) {
	text = strings.TrimSpace(text)
	if l, err := org.ParseCRL(text); err == nil {
		return orgsync.DocID{Kind: orgsync.KindCRL, Org: l.Org, Version: l.Version}, l.Binary(), nil
	} else if strings.HasPrefix(text, "tomoe-crl:") {
		return orgsync.DocID{}, nil, err
	}
	d, err := org.ParsePolicyDoc(text)
	if err != nil {
		if strings.HasPrefix(text, "tomoe-orgpolicy:") {
			return orgsync.DocID{}, nil, err
		}
		return orgsync.DocID{}, nil, errors.New("neither a revocation list (tomoe-crl:...) nor an organisation policy (tomoe-orgpolicy:...)")
	}
	return orgsync.DocID{Kind: orgsync.KindPolicy, Org: d.Org, Version: d.Version}, d.Binary(), nil
}

// PushResult says what became of a document handed to the node.
type PushResult struct {
	Org     string
	Kind    string
	Version uint64
	Held    uint64 // the version held before
	Newer   bool   // installed (and announced); false: the node had it or newer
}

// Push installs a document given in its text form (the admin API), which
// then spreads from this node. A document that does not verify against
// the organisation the config names is refused with the reason.
func (e *Engine) Push(text string) (PushResult, error) {
	id, doc, err := decodeText(text)
	if err != nil {
		return PushResult{}, err
	}
	o := e.org(org.PublicKey(id.Org))
	if o == nil {
		return PushResult{}, fmt.Errorf("%s of organisation %s: %w", id.Kind, org.PublicKey(id.Org), errNoOrg)
	}
	res := PushResult{Org: o.Name, Kind: id.Kind.String(), Version: id.Version, Held: e.store.Version(id.Kind, id.Org)}
	done := make(chan struct{})
	var newer bool
	// Through the engine's goroutine, as documents from peers are.
	e.enqueueFunc(func() {
		defer close(done)
		newer, err = e.x.Offer(id, doc)
	})
	select {
	case <-done:
	case <-e.cfg.Done:
		return res, errors.New("the node is shutting down")
	case <-time.After(10 * time.Second):
		return res, errors.New("the node's organisation engine did not answer in 10 s")
	}
	if err != nil {
		return res, fmt.Errorf("%s %s version %d: %w", o.Name, id.Kind, id.Version, err)
	}
	res.Newer = newer
	return res, nil
}
