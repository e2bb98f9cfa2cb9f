package orgs

import (
	"errors"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/org"
)

// Status describes each organisation: this node's certificate, the
// documents held, whether its list is stale, how many peers are members.
func (e *Engine) Status() []adminapi.OrgStatus {
	if e == nil {
		return []adminapi.OrgStatus{}
	}
	now := e.clock.Now()
	members := map[string]int{}
	if m := e.members.Load(); m != nil {
		for _, ms := range *m {
			for _, mb := range ms {
				members[mb.Org]++
			}
		}
	}
	list := e.orgList()
	out := make([]adminapi.OrgStatus, 0, len(list))
	for _, o := range list {
		e.mu.Lock()
		crl, pol, stale, perr := e.crls[o.Key], e.policies[o.Key], e.stale[o.Key], e.policyErr[o.Key]
		e.mu.Unlock()
		st := adminapi.OrgStatus{Name: o.Name, PublicKey: o.Key.String(), CRLStale: stale, AcceptPolicy: o.AcceptPolicy, PolicyError: perr, Members: members[o.Name], Join: e.joins.Status(o.Key)}
		if o.CRLMaxAge > 0 {
			st.CRLMaxAge = o.CRLMaxAge.String()
		}
		if c := o.Cert; c != nil {
			oc := &adminapi.OrgCert{Name: c.Name, Groups: c.Groups, Serial: c.SerialString(), NotAfter: c.NotAfter.UTC().Format(time.RFC3339), State: "valid", Source: "config"}
			if o.Joined {
				oc.Source = "join"
			}
			if oc.Groups == nil {
				oc.Groups = []string{}
			}
			if _, err := e.check(c, now); err != nil {
				oc.Error = err.Error()
				switch {
				case errors.Is(err, org.ErrExpired):
					oc.State = "expired"
				case errors.Is(err, org.ErrNotYetValid):
					oc.State = "not_yet_valid"
				case errors.Is(err, org.ErrRevoked):
					oc.State = "revoked"
				case stale:
					oc.State = "crl_stale"
				default:
					oc.State = "invalid"
				}
			}
			st.Cert = oc
		}
		if crl != nil {
			st.CRL = &adminapi.OrgDoc{Version: crl.Version, Issued: crl.Issued.UTC().Format(time.RFC3339), Entries: len(crl.Serials) + len(crl.Keys)}
		}
		if pol != nil {
			st.Policy = &adminapi.OrgDoc{Version: pol.Version, Issued: pol.Issued.UTC().Format(time.RFC3339), Rules: len(pol.Rules)}
		}
		out = append(out, st)
	}
	return append(out, e.joins.Untrusted()...)
}

// Counters are the engine's message counters.
type Counters struct {
	Received, Bad, Dropped, Limited uint64
}

// Counters returns the engine's message counters.
func (e *Engine) Counters() Counters {
	return Counters{Received: e.received.Load(), Bad: e.certsBad.Load(), Dropped: e.dropped.Load(), Limited: e.limited.Load()}
}
