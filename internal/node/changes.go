package node

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/offers"
	"github.com/tomoe-net/tomoe/internal/policy"
	"github.com/tomoe-net/tomoe/internal/services"
	"github.com/tomoe-net/tomoe/internal/statefile"
)

// Changes made through the API to routes and exposed services persist in
// services.json beside the key file, as a delta over the config file: an
// entry adds (or changes) an offer, accept rule or exposed service, or,
// with "removed", takes one away, even one the file lists. The latest
// change per item wins.
type changesState struct {
	Version int            `json:"version"`
	Offers  []offerChange  `json:"offers"`
	Accepts []acceptChange `json:"accepts"`
	Expose  []exposeChange `json:"expose"`
}

type offerChange struct {
	Prefix     string `json:"prefix"`
	Masquerade bool   `json:"masquerade,omitempty"`
	Removed    bool   `json:"removed,omitempty"`
}

type acceptChange struct {
	From    string `json:"from"`
	Prefix  string `json:"prefix"`
	Removed bool   `json:"removed,omitempty"`
}

type exposeChange struct {
	Proto   string `json:"proto"`
	Port    uint16 `json:"port"`
	Target  string `json:"target,omitempty"`
	Removed bool   `json:"removed,omitempty"`
}

func changesFile(cfg *config.Config) statefile.File {
	return statefile.File{Path: filepath.Join(filepath.Dir(cfg.KeyFile), "services.json"), What: "route and service state",
		Forget: "the routes and exposed services changed through the admin API"}
}

// loadChanges reads the state file (an empty state if there is none).
func (n *Node) loadChanges() error {
	st := changesState{Version: statefile.Version}
	if _, err := changesFile(n.cfg).Load(&st, &st.Version); err != nil {
		return err
	}
	n.changes = st
	return nil
}

func (n *Node) saveChangesLocked() error {
	return changesFile(n.cfg).Save(n.changes)
}

// applyOfferChanges applies the persisted offer changes to the file's.
func (n *Node) applyOfferChanges(list []config.Offer) ([]config.Offer, error) {
	for _, c := range n.changes.Offers {
		p, err := config.ParseRoutePrefix(c.Prefix)
		if err != nil {
			return nil, changesFile(n.cfg).Corrupt(fmt.Errorf("offer %v", err))
		}
		i := slices.IndexFunc(list, func(o config.Offer) bool { return o.Prefix == p })
		switch {
		case c.Removed && i >= 0:
			n.log.Warn("a routes.offer of the config file stays withdrawn (tomoe routes withdraw); `tomoe routes offer` brings it back", "prefix", p)
			list = slices.Delete(list, i, i+1)
		case c.Removed:
		case i >= 0:
			list[i].Masquerade = c.Masquerade
		default:
			list = append(list, config.Offer{Prefix: p, Masquerade: c.Masquerade})
		}
	}
	return list, nil
}

// applyAcceptChanges applies the persisted accept rule changes.
func (n *Node) applyAcceptChanges(rules []offers.Rule) ([]offers.Rule, error) {
	for _, c := range n.changes.Accepts {
		id, err1 := policy.ParseIdentity(c.From)
		p, err2 := config.ParseRoutePrefix(c.Prefix)
		if err1 != nil || err2 != nil {
			return nil, changesFile(n.cfg).Corrupt(fmt.Errorf("accept %q %q", c.From, c.Prefix))
		}
		i := slices.IndexFunc(rules, func(r offers.Rule) bool { return r.From.Same(id) && r.Prefix == p })
		switch {
		case c.Removed && i >= 0:
			n.log.Warn("a routes.accept of the config file stays removed (tomoe routes unaccept); `tomoe routes accept` brings it back", "from", id, "prefix", p)
			rules = slices.Delete(rules, i, i+1)
		case c.Removed, i >= 0:
		default:
			rules = append(rules, offers.Rule{From: id, Prefix: p})
		}
	}
	return rules, nil
}

// exposedServices returns the file's exposed services with the persisted
// changes applied.
func (n *Node) exposedServices() ([]services.Service, error) {
	var list []services.Service
	for _, e := range n.cfg.Expose {
		list = append(list, services.Service{Proto: e.Proto.String(), Port: uint16(e.Port), Target: e.Target.String()})
	}
	for _, c := range n.changes.Expose {
		if (c.Proto != "tcp" && c.Proto != "udp") || c.Port == 0 {
			return nil, changesFile(n.cfg).Corrupt(fmt.Errorf("expose %s/%d", c.Proto, c.Port))
		}
		i := slices.IndexFunc(list, func(s services.Service) bool { return s.Proto == c.Proto && s.Port == c.Port })
		switch {
		case c.Removed && i >= 0:
			n.log.Warn("an [[expose]] of the config file stays removed (tomoe expose remove); `tomoe expose add` brings it back", "proto", c.Proto, "port", c.Port)
			list = slices.Delete(list, i, i+1)
		case c.Removed:
		case i >= 0:
			list[i].Target = c.Target
		default:
			list = append(list, services.Service{Proto: c.Proto, Port: c.Port, Target: c.Target})
		}
	}
	return list, nil
}

// recordOfferLocked, recordAcceptLocked and recordExposeLocked keep the
// latest change per item and save the file.
func (n *Node) recordOfferLocked(p netip.Prefix, masquerade, removed bool) error {
	c := offerChange{Prefix: p.String(), Masquerade: masquerade, Removed: removed}
	n.changes.Offers = slices.DeleteFunc(n.changes.Offers, func(o offerChange) bool { return o.Prefix == c.Prefix })
	n.changes.Offers = append(n.changes.Offers, c)
	return n.saveChangesLocked()
}

func (n *Node) recordAcceptLocked(id policy.Identity, p netip.Prefix, removed bool) error {
	c := acceptChange{From: id.String(), Prefix: p.String(), Removed: removed}
	n.changes.Accepts = slices.DeleteFunc(n.changes.Accepts, func(a acceptChange) bool {
		other, err := policy.ParseIdentity(a.From)
		return a.Prefix == c.Prefix && err == nil && other.Same(id)
	})
	n.changes.Accepts = append(n.changes.Accepts, c)
	return n.saveChangesLocked()
}

func (n *Node) recordExpose(proto string, port uint16, target string, removed bool) error {
	n.rtMu.Lock()
	defer n.rtMu.Unlock()
	c := exposeChange{Proto: proto, Port: port, Target: target, Removed: removed}
	n.changes.Expose = slices.DeleteFunc(n.changes.Expose, func(e exposeChange) bool { return e.Proto == proto && e.Port == port })
	n.changes.Expose = append(n.changes.Expose, c)
	return n.saveChangesLocked()
}
