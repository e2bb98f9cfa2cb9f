// Package changes keeps what the admin API changed of a node's routes,
// exposed services and virtual Ethernet members, so that the changes outlive a restart. They persist in
// services.json beside the key file, as a delta over the config file: an
// entry adds (or changes) an offer, accept rule or exposed service, or,
// with "removed", takes one away, even one the file lists. The latest
// change per item wins.
package changes

import (
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/offers"
	"github.com/tomoe-net/tomoe/internal/policy"
	"github.com/tomoe-net/tomoe/internal/services"
	"github.com/tomoe-net/tomoe/internal/statefile"
)

// state is the file's content.
type state struct {
	Version int            `json:"version"`
	Offers  []offerChange  `json:"offers"`
	Accepts []acceptChange `json:"accepts"`
	Expose  []exposeChange `json:"expose"`
	L2      []l2Change     `json:"l2,omitempty"`
}

type l2Change struct {
	Segment string `json:"segment"`
	Member  string `json:"member"`
	Removed bool   `json:"removed,omitempty"`
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

// File is where a node with this config keeps its changes.
func File(cfg *config.Config) statefile.File {
	return statefile.File{Path: filepath.Join(filepath.Dir(cfg.KeyFile), "services.json"), What: "route and service state",
		Forget: "the routes and exposed services changed through the admin API"}
}

// Store is the changes of one node. It is safe for concurrent use.
type Store struct {
	file statefile.File
	log  *slog.Logger
	mu   sync.Mutex // guards st and the file
	st   state
	// warned are the config file's l2 members (segment, then member)
	// this process has warned stay removed: L2 runs after every new
	// directory, and says it once. Guarded by mu.
	warned map[[2]string]bool
}

// Open reads the file (an empty state if there is none).
func Open(f statefile.File, log *slog.Logger) (*Store, error) {
	s := &Store{file: f, log: log, st: state{Version: statefile.Version}}
	if _, err := f.Load(&s.st, &s.st.Version); err != nil {
		return nil, err
	}
	return s, nil
}

// Path is the file's path.
func (s *Store) Path() string { return s.file.Path }

// Offers applies the persisted offer changes to the config's offers.
func (s *Store) Offers(list []config.Offer) ([]config.Offer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.st.Offers {
		p, err := config.ParseRoutePrefix(c.Prefix)
		if err != nil {
			return nil, s.file.Corrupt(fmt.Errorf("offer %v", err))
		}
		i := slices.IndexFunc(list, func(o config.Offer) bool { return o.Prefix == p })
		switch {
		case c.Removed && i >= 0:
			s.log.Warn("a routes.offer of the config file stays withdrawn (tomoe routes withdraw); `tomoe routes offer` brings it back", "prefix", p)
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

// Accepts applies the persisted accept rule changes to the config's.
func (s *Store) Accepts(rules []offers.Rule) ([]offers.Rule, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.st.Accepts {
		id, err1 := policy.ParseIdentity(c.From)
		p, err2 := config.ParseRoutePrefix(c.Prefix)
		if err1 != nil || err2 != nil {
			return nil, s.file.Corrupt(fmt.Errorf("accept %q %q", c.From, c.Prefix))
		}
		i := slices.IndexFunc(rules, func(r offers.Rule) bool { return r.From.Same(id) && r.Prefix == p })
		switch {
		case c.Removed && i >= 0:
			s.log.Warn("a routes.accept of the config file stays removed (tomoe routes unaccept); `tomoe routes accept` brings it back", "from", id, "prefix", p)
			rules = slices.Delete(rules, i, i+1)
		case c.Removed, i >= 0:
		default:
			rules = append(rules, offers.Rule{From: id, Prefix: p})
		}
	}
	return rules, nil
}

// Exposed applies the persisted changes to the config's exposed services.
func (s *Store) Exposed(list []services.Service) ([]services.Service, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.st.Expose {
		if (c.Proto != "tcp" && c.Proto != "udp") || c.Port == 0 {
			return nil, s.file.Corrupt(fmt.Errorf("expose %s/%d", c.Proto, c.Port))
		}
		i := slices.IndexFunc(list, func(sv services.Service) bool { return sv.Proto == c.Proto && sv.Port == c.Port })
		switch {
		case c.Removed && i >= 0:
			s.log.Warn("an [[expose]] of the config file stays removed (tomoe expose remove); `tomoe expose add` brings it back", "proto", c.Proto, "port", c.Port)
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

// RecordOffer, RecordAccept and RecordExpose keep the latest change per
// item and save the file.
func (s *Store) RecordOffer(p netip.Prefix, masquerade, removed bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := offerChange{Prefix: p.String(), Masquerade: masquerade, Removed: removed}
	s.st.Offers = slices.DeleteFunc(s.st.Offers, func(o offerChange) bool { return o.Prefix == c.Prefix })
	s.st.Offers = append(s.st.Offers, c)
	return s.file.Save(s.st)
}

func (s *Store) RecordAccept(id policy.Identity, p netip.Prefix, removed bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := acceptChange{From: id.String(), Prefix: p.String(), Removed: removed}
	s.st.Accepts = slices.DeleteFunc(s.st.Accepts, func(a acceptChange) bool {
		other, err := policy.ParseIdentity(a.From)
		return a.Prefix == c.Prefix && err == nil && other.Same(id)
	})
	s.st.Accepts = append(s.st.Accepts, c)
	return s.file.Save(s.st)
}

func (s *Store) RecordExpose(proto string, port uint16, target string, removed bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := exposeChange{Proto: proto, Port: port, Target: target, Removed: removed}
	s.st.Expose = slices.DeleteFunc(s.st.Expose, func(e exposeChange) bool { return e.Proto == proto && e.Port == port })
	s.st.Expose = append(s.st.Expose, c)
	return s.file.Save(s.st)
}

// L2 applies the persisted member changes to the config's segments,
// returning a copy; a change for a segment the file does not have is
// kept, and ignored.
func (s *Store) L2(segs []config.L2Segment) ([]config.L2Segment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(segs)
	for i := range out {
		out[i].Members = slices.Clone(out[i].Members)
	}
	for _, c := range s.st.L2 {
		id, err := policy.ParseIdentity(c.Member)
		if err != nil {
			return nil, s.file.Corrupt(fmt.Errorf("l2 member %q: %v", c.Member, err))
		}
		i := slices.IndexFunc(out, func(g config.L2Segment) bool { return g.Name == c.Segment })
		if i < 0 {
			continue
		}
		j := slices.IndexFunc(out[i].Members, id.Same)
		switch {
		case c.Removed && j >= 0:
			if k := [2]string{c.Segment, c.Member}; !s.warned[k] {
				if s.warned == nil {
					s.warned = map[[2]string]bool{}
				}
				s.warned[k] = true
				s.log.Warn("a member of an [[l2]] segment of the config file stays removed (tomoe l2 remove); `tomoe l2 add` brings it back", "segment", c.Segment, "member", id)
			}
			out[i].Members = slices.Delete(out[i].Members, j, j+1)
		case c.Removed, j >= 0:
		default:
			out[i].Members = append(out[i].Members, id)
		}
	}
	return out, nil
}

// RecordL2Member keeps the latest change of a segment's member and saves
// the file.
func (s *Store) RecordL2Member(segment string, member policy.Identity, removed bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := l2Change{Segment: segment, Member: member.String(), Removed: removed}
	s.st.L2 = slices.DeleteFunc(s.st.L2, func(o l2Change) bool {
		other, err := policy.ParseIdentity(o.Member)
		return o.Segment == segment && err == nil && other.Same(member)
	})
	s.st.L2 = append(s.st.L2, c)
	return s.file.Save(s.st)
}
