package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/tomoe-net/tomoe/internal/statefile"
)

// Where a rule came from.
const (
	SourceConfig = "config"
	SourceAPI    = "api"
	SourceOrg    = "org"   // an organisation's signed policy document
	SourceAdmin  = "admin" // [[admin.allow]]: the admin port, for the identities it names
	SourceL2     = "l2"    // [[l2]]: the segment's tunnels (proto l2), from its members
)

// Entry is one effective rule with its origin.
type Entry struct {
	Rule
	Source string    // SourceConfig, SourceAPI or SourceOrg
	Origin string    // for display: "config", "api", "org acme v3"
	Added  time.Time // when it was added through the API; zero otherwise
}

// Store holds the rule set: the config file's rules, the rules added through
// the admin API, the organisations' policy documents, and revocations.
// Changes made through the API persist in a state file so they survive
// restarts:
//
//   - effective rules = config and organisation rules (allow rules only if
//     their identity is not revoked), plus API rules, none expired;
//   - Revoke(X) deletes X's API allow rules and, if the config names X,
//     records a revocation that suppresses X's config and organisation
//     allow rules (so a restart never brings a revoked identity back);
//   - Allow(X, ...) lifts a revocation of X (its config rules apply again) and
//     adds the rule unless an equal one is already effective;
//   - Deny and Undeny add and remove API deny rules; revocations never
//     touch deny rules (revoking never widens what passes).
//
// The Store holds no goroutine: its owner calls Expire at
// Matcher().NextExpiry().
type Store struct {
	path string // state file; "" keeps changes in memory only

	mu      sync.Mutex // guards the fields below
	config  []Rule
	admin   []Rule
	l2      []Rule
	api     []Entry
	revoked []revocation
	orgs    map[string]orgDoc
	dir     Directory
	self    Self
	hosted  []netip.Addr // Self.Hosted, kept apart: SetSelf does not carry it
	matcher *Matcher
	// publish, if set (Publish), is given each new matcher, under mu.
	publish func(*Matcher)
}

type orgDoc struct {
	version uint64
	rules   []Rule
}

type revocation struct {
	id Identity
	at time.Time
}

// State file versions: 1 holds allow rules only; 2 adds deny rules, `to`
// and `until`, which a version-1 reader would drop silently (widening what
// passes), so a file using them is written as version 2 and older nodes
// refuse it.
const (
	stateV1 = 1
	stateV2 = 2
)

// stateFile is the on-disk form. Identities are stored as written.
type stateFile struct {
	Version int          `json:"version"`
	Rules   []stateRule  `json:"rules"`
	Revoked []stateRevok `json:"revoked"`
}

type stateRule struct {
	Action string    `json:"action,omitempty"` // "deny"; "" for allow
	From   string    `json:"from"`
	To     string    `json:"to,omitempty"`
	Proto  string    `json:"proto"`
	Ports  string    `json:"ports,omitempty"`
	Until  string    `json:"until,omitempty"`
	Added  time.Time `json:"added"`
}

type stateRevok struct {
	From string    `json:"from"`
	At   time.Time `json:"at"`
}

// OpenStore loads the state file at path (a missing file is an empty state)
// and combines it with the config rules (allow and deny). warnings name
// config rules that a stored revocation suppresses.
func OpenStore(path string, config []Rule) (s *Store, warnings []string, err error) {
	s = &Store{path: path, config: slices.Clone(config)}
	if path != "" {
		if err := s.load(); err != nil {
			return nil, nil, err
		}
	}
	for _, r := range s.config {
		if r.Deny {
			continue
		}
		if rv, ok := s.revokedLocked(r.From); ok {
			warnings = append(warnings, fmt.Sprintf("config rule %q is suppressed: %s was revoked through the admin API at %s; `tomoe policy allow %s` restores it",
				r.String(), r.From, rv.at.Format(time.RFC3339), r.From))
		}
	}
	s.rebuildLocked(time.Now())
	return s, warnings, nil
}

func (s *Store) load() error {
	var st stateFile
	if found, err := s.file().Load(&st, &st.Version); err != nil || !found {
		return err
	}
	corrupt := s.file().Corrupt
	for i, sr := range st.Rules {
		if sr.Action != "" && sr.Action != "deny" {
			return corrupt(fmt.Errorf("rules[%d]: action %q is neither empty nor deny", i, sr.Action))
		}
		r, err := ParseRuleSpec(RuleSpec{Deny: sr.Action == "deny", From: sr.From, To: sr.To, Proto: sr.Proto, Ports: sr.Ports, Until: sr.Until})
		if err != nil {
			return corrupt(fmt.Errorf("rules[%d]: %v", i, err))
		}
		s.api = append(s.api, apiEntry(r, sr.Added))
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

func apiEntry(r Rule, added time.Time) Entry {
	return Entry{Rule: r, Source: SourceAPI, Origin: SourceAPI, Added: added}
}

// save writes the state atomically (temp file, fsync, rename), mode 0600.
func (s *Store) saveLocked() error {
	if s.path == "" {
		return nil
	}
	st := stateFile{Version: stateV1, Rules: []stateRule{}, Revoked: []stateRevok{}}
	for _, e := range s.api {
		sp := e.Spec()
		sr := stateRule{From: sp.From, To: sp.To, Proto: sp.Proto, Ports: sp.Ports, Until: sp.Until, Added: e.Added}
		if e.Deny {
			sr.Action = "deny"
		}
		if sr.Action != "" || sr.To != "" || sr.Until != "" {
			st.Version = stateV2
		}
		st.Rules = append(st.Rules, sr)
	}
	for _, rv := range s.revoked {
		st.Revoked = append(st.Revoked, stateRevok{From: rv.id.String(), At: rv.at})
	}
	return s.file().Save(st)
}

func (s *Store) file() statefile.File {
	return statefile.File{Path: s.path, What: "policy state", Forget: "the rules added and revoked through the admin API", MaxVersion: stateV2}
}

func (s *Store) revokedLocked(id Identity) (revocation, bool) {
	for _, rv := range s.revoked {
		if rv.id.Same(id) {
			return rv, true
		}
	}
	return revocation{}, false
}

// allEntriesLocked gives config, organisation (by org name) and API
// entries, revoked allow rules left out, expired ones kept.
func (s *Store) allEntriesLocked() []Entry {
	var out []Entry
	keep := func(r Rule) bool {
		_, revoked := s.revokedLocked(r.From)
		return r.Deny || !revoked
	}
	for _, r := range s.config {
		if keep(r) {
			out = append(out, Entry{Rule: r, Source: SourceConfig, Origin: SourceConfig})
		}
	}
	for _, r := range s.admin {
		if keep(r) {
			out = append(out, Entry{Rule: r, Source: SourceAdmin, Origin: "admin.allow"})
		}
	}
	for _, r := range s.l2 {
		if keep(r) {
			out = append(out, Entry{Rule: r, Source: SourceL2, Origin: "l2"})
		}
	}
	orgs := make([]string, 0, len(s.orgs))
	for o := range s.orgs {
		orgs = append(orgs, o)
	}
	sort.Strings(orgs)
	for _, o := range orgs {
		doc := s.orgs[o]
		origin := fmt.Sprintf("org %s v%d", o, doc.version)
		for _, r := range doc.rules {
			if keep(r) {
				out = append(out, Entry{Rule: r, Source: SourceOrg, Origin: origin})
			}
		}
	}
	return append(out, s.api...)
}

func (s *Store) effectiveLocked(now time.Time) []Entry {
	return slices.DeleteFunc(s.allEntriesLocked(), func(e Entry) bool { return e.Expired(now) })
}

func (s *Store) rebuildLocked(now time.Time) {
	s.matcher = CompileAt(s.allEntriesLocked(), s.dir, s.selfLocked(), now)
	if s.publish != nil {
		s.publish(s.matcher)
	}
}

// Publish hands f the current matcher, then every new one as the store
// compiles it, under the store's lock: f (as Filter.SetMatcher) sees
// them in the order they were made, and a change racing another never
// installs the older rule set last. f must not call the store.
func (s *Store) Publish(f func(*Matcher)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.publish = f
	if f != nil {
		f(s.matcher)
	}
}

// Revoked reports whether rules naming addr (its key or address, not "*"
// nor a certificate identity) were revoked and not allowed again since.
func (s *Store) Revoked(addr netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rv := range s.revoked {
		if rv.id.kind() == KindNode && rv.id.Addr == addr {
			return true
		}
	}
	return false
}

// Rules returns the effective, unexpired rules: config rules first, then
// organisation rules (by organisation name), then API rules.
func (s *Store) Rules() []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.effectiveLocked(time.Now())
}

// Matcher returns the compiled effective rules.
func (s *Store) Matcher() *Matcher {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.matcher
}

// SetDirectory installs the verified memberships certificate rules are
// resolved against, and recompiles. dir must not change afterwards.
func (s *Store) SetDirectory(dir Directory) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dir = dir
	s.rebuildLocked(time.Now())
}

// SetSelf installs this node's address and memberships (for rules whose To
// names destination nodes), and recompiles.
func (s *Store) SetSelf(self Self) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.self = self
	s.rebuildLocked(time.Now())
}

// SetMembers installs the verified memberships (as SetDirectory) and this
// node's own (as SetSelf), and recompiles once: no matcher has the one
// without the other.
func (s *Store) SetMembers(dir Directory, self Self) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dir = dir
	s.self = self
	s.rebuildLocked(time.Now())
}

// SetAdminRules replaces the rules [[admin.allow]] implies (its
// identities to the admin port), and recompiles.
func (s *Store) SetAdminRules(rules []Rule) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.admin = slices.Clone(rules)
	s.rebuildLocked(time.Now())
}

// SetL2Rules replaces the rules the [[l2]] segments imply (each tunnel's
// remote end to this node, proto l2), and recompiles. A revocation of a
// member suppresses them like its config rules.
func (s *Store) SetL2Rules(rules []Rule) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.l2 = slices.Clone(rules)
	s.rebuildLocked(time.Now())
}

// SetConfig replaces the config file's rules and those [[admin.allow]]
// implies (a live reload), and recompiles once: the matcher goes from the
// old rule set to the new one in one step, never through a state that
// admits what neither admits. warnings name new config allow rules that a
// stored revocation suppresses, as OpenStore's do.
func (s *Store) SetConfig(config, admin []Rule) (warnings []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range config {
		if r.Deny || slices.ContainsFunc(s.config, r.Equal) {
			continue
		}
		if rv, ok := s.revokedLocked(r.From); ok {
			warnings = append(warnings, fmt.Sprintf("config rule %q is suppressed: %s was revoked through the admin API at %s; `tomoe policy allow %s` restores it",
				r.String(), r.From, rv.at.Format(time.RFC3339), r.From))
		}
	}
	s.config = slices.Clone(config)
	s.admin = slices.Clone(admin)
	s.rebuildLocked(time.Now())
	return warnings
}

// SetOrgRules replaces the rules of org's policy document (version is for
// display); nil rules remove the document. It recompiles.
func (s *Store) SetOrgRules(org string, version uint64, rules []Rule) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rules == nil {
		delete(s.orgs, org)
	} else {
		if s.orgs == nil {
			s.orgs = make(map[string]orgDoc)
		}
		s.orgs[org] = orgDoc{version: version, rules: slices.Clone(rules)}
	}
	s.rebuildLocked(time.Now())
}

// Snapshot returns what the matcher is compiled from: every entry (expired
// ones included), the directory and self. With them, CompileAt can
// evaluate hypothetical sources (see EvalTest).
func (s *Store) Snapshot() ([]Entry, Directory, Self) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.allEntriesLocked(), s.dir, s.selfLocked()
}

func (s *Store) selfLocked() Self {
	self := s.self
	self.Hosted = s.hosted
	return self
}

// SetHosted installs the node addresses of the devices this node hosts
// (for rules whose To names one), and recompiles.
func (s *Store) SetHosted(addrs []netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hosted = slices.Clone(addrs)
	s.rebuildLocked(time.Now())
}

// Allow adds the allow rule r. It reports false when an equal rule was
// already effective (nothing changed apart from lifting a revocation of
// r.From). An equal API rule with another Until takes r's Until (and
// Allow reports true). r must not be a deny rule nor expired at now.
func (s *Store) Allow(r Rule, now time.Time) (added bool, err error) {
	if r.Deny {
		return false, errors.New("allow: the rule is a deny rule; use Deny")
	}
	return s.add(r, now, true)
}

// Deny adds the deny rule r (r.Deny is set), persisted like Allow's. It
// reports false when an equal rule was already effective.
func (s *Store) Deny(r Rule, now time.Time) (added bool, err error) {
	r.Deny = true
	return s.add(r, now, false)
}

func (s *Store) add(r Rule, now time.Time, lift bool) (bool, error) {
	if r.Expired(now) {
		return false, fmt.Errorf("rule %q: until %s is not in the future", r.String(), r.Until.Format(time.RFC3339))
	}
	if err := r.Check(); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	oldAPI, oldRevoked := slices.Clone(s.api), slices.Clone(s.revoked)
	if lift {
		s.revoked = slices.DeleteFunc(s.revoked, func(rv revocation) bool { return rv.id.Same(r.From) })
	}
	changed := len(s.revoked) != len(oldRevoked)
	added := false
	if i := slices.IndexFunc(s.api, func(e Entry) bool { return e.Equal(r) && !e.Expired(now) }); i >= 0 {
		if !s.api[i].Until.Equal(r.Until) {
			s.api[i].Until = r.Until
			changed, added = true, true
		}
	} else if !slices.ContainsFunc(s.effectiveLocked(now), func(e Entry) bool { return e.Equal(r) && e.Until.IsZero() }) {
		s.api = append(s.api, apiEntry(r, now.UTC()))
		changed, added = true, true
	}
	if changed {
		if err := s.saveLocked(); err != nil {
			s.api, s.revoked = oldAPI, oldRevoked
			return false, err
		}
		s.rebuildLocked(now)
	}
	return added, nil
}

// ErrNoRule is returned by Revoke and Undeny when no rule names the identity.
var ErrNoRule = errors.New("no rule names this identity")

// Revoke removes every allow rule for id and returns what it removed.
// Revoking "*" removes the wildcard rules only, not the rules naming single
// nodes. Deny rules stay.
func (s *Store) Revoke(id Identity, now time.Time) ([]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var removed []Entry
	for _, e := range s.effectiveLocked(now) {
		if !e.Deny && e.From.Same(id) {
			removed = append(removed, e)
		}
	}
	if len(removed) == 0 {
		return nil, fmt.Errorf("revoke %s: %w", id, ErrNoRule)
	}
	oldAPI, oldRevoked := slices.Clone(s.api), slices.Clone(s.revoked)
	s.api = slices.DeleteFunc(s.api, func(e Entry) bool { return !e.Deny && e.From.Same(id) })
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
	s.rebuildLocked(now)
	return removed, nil
}

// Undeny removes the API deny rules for id and returns them. Deny rules
// from the config or an organisation's document stay: ErrNoRule then says
// where they come from.
func (s *Store) Undeny(id Identity, now time.Time) ([]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var removed []Entry
	for _, e := range s.api {
		if e.Deny && e.From.Same(id) && !e.Expired(now) {
			removed = append(removed, e)
		}
	}
	if len(removed) == 0 {
		for _, e := range s.effectiveLocked(now) {
			if e.Deny && e.From.Same(id) {
				return nil, fmt.Errorf("undeny %s: %w through the admin API; the deny rule %q comes from %s: change it there", id, ErrNoRule, e.String(), e.Origin)
			}
		}
		return nil, fmt.Errorf("undeny %s: %w", id, ErrNoRule)
	}
	oldAPI := slices.Clone(s.api)
	s.api = slices.DeleteFunc(s.api, func(e Entry) bool { return e.Deny && e.From.Same(id) })
	if err := s.saveLocked(); err != nil {
		s.api = oldAPI
		return nil, err
	}
	s.rebuildLocked(now)
	return removed, nil
}

// Expire drops the API rules expired at now from the state (persisting
// it), recompiles at now, and returns the dropped rules. Expired config and
// organisation rules simply stop applying. The owner calls it when
// Matcher().NextExpiry() has passed. A failure to persist is harmless:
// expired rules never apply, whether or not they are still in the file, and
// the next change saves the state again.
func (s *Store) Expire(now time.Time) (removed []Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.api {
		if e.Expired(now) {
			removed = append(removed, e)
		}
	}
	if len(removed) > 0 {
		s.api = slices.DeleteFunc(s.api, func(e Entry) bool { return e.Expired(now) })
		_ = s.saveLocked()
	}
	s.rebuildLocked(now)
	return removed
}
