package orgs

import (
	"fmt"
	"slices"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node/joins"
	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/orgsync"
)

// Joins is this node's requests to join organisations (package joins):
// the admin API's join, requests, approve and reject.
func (e *Engine) Joins() *joins.Requests { return e.joins }

// joinHost is the engine as its join requests see it (joins.Host).
type joinHost struct{ e *Engine }

func (h joinHost) SendBridge(b identity.PublicKey, payload []byte) error {
	return h.e.node.SendBridge(b, payload)
}
func (h joinHost) Bridges() []identity.PublicKey   { return h.e.node.Bridges() }
func (h joinHost) Event(kind, peer, detail string) { h.e.node.Event(kind, peer, detail) }
func (h joinHost) Save() error                     { return h.e.save() }
func (h joinHost) Install(c *org.Cert) error       { return h.e.installJoined(c) }
func (h joinHost) Trusted(k org.PublicKey) (string, string, bool) {
	o := h.e.org(k)
	if o == nil {
		return "", "", false
	}
	if o.Cert != nil && !o.Joined {
		return o.Name, o.CertFile, true
	}
	return o.Name, "", true
}
func (h joinHost) Holds(c *org.Cert) bool {
	o := h.e.org(c.Org)
	return o != nil && o.Cert != nil && o.Cert.Fingerprint() == c.Fingerprint()
}

// installJoined makes c (verified, asked for) this node's certificate of
// its organisation, joined by request: trusted from now on as if the
// config named it, presented to the bridges (which hand it out with
// lookups) and to every peer with a session. Runs on the engine's
// goroutine.
func (e *Engine) installJoined(c *org.Cert) error {
	set, err := e.withJoined(e.set.Load(), c)
	if err != nil {
		return err
	}
	e.mu.Lock()
	crl := e.crls[c.Org]
	e.mu.Unlock()
	if crl != nil && crl.Revokes(c) {
		return fmt.Errorf("certificate %q (serial %s) is revoked by %s revocation list version %d", c.Name, c.SerialString(), c.OrgName, crl.Version)
	}
	e.set.Store(set)
	for _, b := range e.node.Bridges() {
		ch := e.bridgeChan(b)
		ch.Send(&orgsync.Msg{Type: orgsync.TypeCert, Data: c.Binary()})
		ch.Send(e.x.Hello(false))
	}
	e.rebuild()
	for _, a := range e.node.SessionPeers() {
		e.greet(a, true)
	}
	return nil
}

// withJoined returns set with c installed as this node's certificate of
// its organisation (joined by request): added, or replacing a joined one.
func (e *Engine) withJoined(set *orgSet, c *org.Cert) (*orgSet, error) {
	list := slices.Clone(set.list)
	if o := set.byKey[c.Org]; o != nil {
		if o.Cert != nil && !o.Joined {
			return nil, fmt.Errorf("this node has a certificate of %s from its config (%s); the config's stays", o.Name, o.CertFile)
		}
		if o.Name != c.OrgName {
			return nil, fmt.Errorf("certificate is for organisation %q, but [[orgs]] names this key %q", c.OrgName, o.Name)
		}
		if o.Cert != nil && o.Cert.NotBefore.After(c.NotBefore) {
			return nil, fmt.Errorf("certificate %q (serial %s) is older than the one held (%s)", c.Name, c.SerialString(), o.Cert.SerialString())
		}
		n := *o
		n.Cert, n.Joined = c, true
		list[slices.Index(list, o)] = &n
	} else {
		if other := set.byName[c.OrgName]; other != nil {
			return nil, fmt.Errorf("certificate is for organisation %q, a name [[orgs]] gives another key (%s)", c.OrgName, other.Key)
		}
		list = append(list, &Org{Name: c.OrgName, Key: c.Org, Cert: c, Joined: true})
	}
	return newOrgSet(list)
}
