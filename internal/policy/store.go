package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/tomoe-net/tomoe/internal/statefile"
)

// Where a rule came from.
const (
	SourceConfig = "config"
	SourceAPI    = "api"
)

// Entry is one effective rule with its origin.
type Entry struct {
	Rule
	Source string
	Added  time.Time // when it was added through the API; zero for config rules
}

// Store holds the rule set: the config file's rules, the rules added through
// the admin API, and revocations. Changes made through the API persist in a
// state file so they survive restarts:
//
//   - effective rules = config rules whose identity is not revoked, plus API rules;
//   - Revoke(X) deletes X's API rules and, if the config names X, records a
//     revocation that suppresses X's config rules (so a restart never brings
//     a revoked identity back);
//   - Allow(X, ...) lifts a revocation of X (its config rules apply again) and
//     adds the rule unless an equal one is already effective.
type Store struct {
	path string // state file; "" keeps changes in memory only

	mu      sync.Mutex // guards the fields below
	config  []Rule
	api     []Entry
	revoked []revocation
	matcher *Matcher
}

type revocation struct {
	id Identity
	at time.Time
}

// stateFile is the on-disk form. Identities are stored as written.
type stateFile struct {
	Version int          `json:"version"`
	Rules   []stateRule  `json:"rules"`
	Revoked []stateRevok `json:"revoked"`
}

type stateRule struct {
	From  string    `json:"from"`
	Proto string    `json:"proto"`
	Ports string    `json:"ports,omitempty"`
	Added time.Time `json:"added"`
}

type stateRevok struct {
	From string    `json:"from"`
	At   time.Time `json:"at"`
}

// OpenStore loads the state file at path (a missing file is an empty state)
// and combines it with the config rules. warnings name config rules that a
// stored revocation suppresses.
func OpenStore(path string, config []Rule) (s *Store, warnings []string, err error) {
	s = &Store{path: path, config: slices.Clone(config)}
	if path != "" {
		if err := s.load(); err != nil {
			return nil, nil, err
		}
	}
	for _, r := range s.config {
		if rv, ok := s.revokedLocked(r.From); ok {
			warnings = append(warnings, fmt.Sprintf("config rule %q is suppressed: %s was revoked through the admin API at %s; `tomoe policy allow %s` restores it",
				r.String(), r.From, rv.at.Format(time.RFC3339), r.From))
		}
	}
	s.rebuildLocked()
	return s, warnings, nil
}

func (s *Store) load() error {
	var st stateFile
	if found, err := s.file().Load(&st, &st.Version); err != nil || !found {
		return err
	}
	corrupt := s.file().Corrupt
	for i, sr := range st.Rules {
		r, err := ParseRule(sr.From, sr.Proto, sr.Ports)
		if err != nil {
			return corrupt(fmt.Errorf("rules[%d]: %v", i, err))
		}
		s.api = append(s.api, Entry{Rule: r, Source: SourceAPI, Added: sr.Added})
	}
	for i, sr := range st.Revoked {
		id, err := ParseIdentity(sr.From)
		if err != nil {
			return corrupt(fmt.Errorf("revoked[%d]: %v", i, err))
		}
		s.revoked = append(s.revoked, revocation{id: id, at: sr.At})
	}
	return nil
}

// save writes the state atomically (temp file, fsync, rename), mode 0600.
func (s *Store) saveLocked() error {
	if s.path == "" {
		return nil
	}
	st := stateFile{Version: statefile.Version, Rules: []stateRule{}, Revoked: []stateRevok{}}
	for _, e := range s.api {
		st.Rules = append(st.Rules, stateRule{From: e.From.String(), Proto: e.Proto.String(), Ports: e.Ports.String(), Added: e.Added})
	}
	for _, rv := range s.revoked {
		st.Revoked = append(st.Revoked, stateRevok{From: rv.id.String(), At: rv.at})
	}
	return s.file().Save(st)
}

func (s *Store) file() statefile.File {
	return statefile.File{Path: s.path, What: "policy state", Forget: "the rules added and revoked through the admin API"}
}

func (s *Store) revokedLocked(id Identity) (revocation, bool) {
	for _, rv := range s.revoked {
		if rv.id.Same(id) {
			return rv, true
		}
	}
	return revocation{}, false
}

func (s *Store) effectiveLocked() []Entry {
	var out []Entry
	for _, r := range s.config {
		if _, ok := s.revokedLocked(r.From); !ok {
			out = append(out, Entry{Rule: r, Source: SourceConfig})
		}
	}
	return append(out, s.api...)
}

func (s *Store) rebuildLocked() {
	eff := s.effectiveLocked()
	rules := make([]Rule, len(eff))
	for i, e := range eff {
		rules[i] = e.Rule
	}
	s.matcher = Compile(rules)
}

// Revoked reports whether rules naming addr (its key or address, not "*")
// were revoked and not allowed again since.
func (s *Store) Revoked(addr netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rv := range s.revoked {
		if !rv.id.Any && rv.id.Addr == addr {
			return true
		}
	}
	return false
}

// Rules returns the effective rules, config rules first.
func (s *Store) Rules() []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.effectiveLocked()
}

// Matcher returns the compiled effective rules.
func (s *Store) Matcher() *Matcher {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.matcher
}

// Allow adds r. It reports false when an equal rule was already effective
// (nothing changed apart from lifting a revocation of r.From).
func (s *Store) Allow(r Rule, now time.Time) (added bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	oldAPI, oldRevoked := slices.Clone(s.api), slices.Clone(s.revoked)
	s.revoked = slices.DeleteFunc(s.revoked, func(rv revocation) bool { return rv.id.Same(r.From) })
	lifted := len(s.revoked) != len(oldRevoked)
	exists := slices.ContainsFunc(s.effectiveLocked(), func(e Entry) bool { return e.Equal(r) })
	if !exists {
		s.api = append(s.api, Entry{Rule: r, Source: SourceAPI, Added: now.UTC()})
	}
	if !exists || lifted {
		if err := s.saveLocked(); err != nil {
			s.api, s.revoked = oldAPI, oldRevoked
			return false, err
		}
		s.rebuildLocked()
	}
	return !exists, nil
}

// ErrNoRule is returned by Revoke when no rule names the identity.
var ErrNoRule = errors.New("no rule allows this identity")

// Revoke removes every rule for id and returns what it removed. Revoking
// "*" removes the wildcard rules only, not the rules naming single nodes.
func (s *Store) Revoke(id Identity, now time.Time) ([]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var removed []Entry
	for _, e := range s.effectiveLocked() {
		if e.From.Same(id) {
			removed = append(removed, e)
		}
	}
	if len(removed) == 0 {
		return nil, fmt.Errorf("revoke %s: %w", id, ErrNoRule)
	}
	oldAPI, oldRevoked := slices.Clone(s.api), slices.Clone(s.revoked)
	s.api = slices.DeleteFunc(s.api, func(e Entry) bool { return e.From.Same(id) })
	if _, ok := s.revokedLocked(id); !ok {
		// Remembered even when only API rules named id: a revoked static
		// peer stays cut (Revoked), and a config rule for id added later
		// stays suppressed until `tomoe policy allow` lifts it.
		s.revoked = append(s.revoked, revocation{id: id, at: now.UTC()})
	}
	if err := s.saveLocked(); err != nil {
		s.api, s.revoked = oldAPI, oldRevoked
		return nil, err
	}
	s.rebuildLocked()
	return removed, nil
}
