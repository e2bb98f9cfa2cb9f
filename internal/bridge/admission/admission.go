// Package admission decides which keys may register with a bridge: the
// config's allow list, keys enrolled with a join token, and revocations,
// which override both. Join tokens are kept only as SHA-256 hashes.
// Changes persist in the bridge's state file (statefile), so that
// enrolments and revocations outlive a restart.
package admission

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/statefile"
)

// TokenInfo describes a join token without revealing it.
type TokenInfo struct {
	ID       string    `json:"id"` // first 8 hex characters of the token's SHA-256
	UsesLeft int       `json:"uses_left"`
	Expires  time.Time `json:"expires"`
	Created  time.Time `json:"created"`
}

// Reasons a Register is refused; a node shows them to its user.
const (
	RefuseNotAllowed = "key not allowed; ask the bridge's admin for a token"
	RefuseRevoked    = "revoked"
	RefuseExpired    = "token expired"
	RefuseUsedUp     = "token used up"
	RefuseBadToken   = "token not valid"
	RefuseStore      = "bridge cannot store the enrolment; try again later"
)

const (
	// TokenPrefix begins every join token.
	TokenPrefix = "tomoe-join-"
	// tokenRetention is how long an expired token stays listed (so that a
	// late join learns "token expired" rather than "not valid").
	tokenRetention = 24 * time.Hour
	maxTokenUses   = 1 << 20
)

// Admission is one bridge's decision of which keys may register. Its
// methods ending in Locked need its lock (Lock, Unlock), which the bridge
// holds across a registration, before its own, so that a revocation
// cannot interleave with one; the others take it themselves.
type Admission struct {
	path string // state file; "" keeps changes in memory only

	mu       sync.Mutex // guards the fields below; taken before the bridge's own lock
	allow    map[identity.PublicKey]bool
	enrolled map[identity.PublicKey]enrolment
	revoked  map[identity.PublicKey]time.Time
	tokens   map[[sha256.Size]byte]*joinToken
}

type enrolment struct {
	at    time.Time
	token string // TokenInfo.ID of the token used
}

type joinToken struct {
	usesLeft int
	expires  time.Time
	created  time.Time
}

// bridgeStateFile is the on-disk form of an Admission.
type bridgeStateFile struct {
	Version  int             `json:"version"`
	Tokens   []stateToken    `json:"tokens"`
	Enrolled []stateEnrolled `json:"enrolled"`
	Revoked  []stateRevoked  `json:"revoked"`
}

type stateToken struct {
	SHA256   string    `json:"sha256"`
	UsesLeft int       `json:"uses_left"`
	Expires  time.Time `json:"expires"`
	Created  time.Time `json:"created"`
}

type stateEnrolled struct {
	Key   identity.PublicKey `json:"key"`
	At    time.Time          `json:"at"`
	Token string             `json:"token_id"`
}

type stateRevoked struct {
	Key identity.PublicKey `json:"key"`
	At  time.Time          `json:"at"`
}

// Open loads the state file at path ("": changes are kept in memory
// only) and allows the keys in allow (the config's allow list).
func Open(path string, allow []identity.PublicKey) (*Admission, error) {
	a := &Admission{
		path:     path,
		allow:    make(map[identity.PublicKey]bool, len(allow)),
		enrolled: make(map[identity.PublicKey]enrolment),
		revoked:  make(map[identity.PublicKey]time.Time),
		tokens:   make(map[[sha256.Size]byte]*joinToken),
	}
	a.Allow(allow...)
	if path != "" {
		if err := a.load(); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func (a *Admission) load() error {
	var st bridgeStateFile
	if found, err := a.file().Load(&st, &st.Version); err != nil || !found {
		return err
	}
	corrupt := a.file().Corrupt
	for i, t := range st.Tokens {
		h, err := hex.DecodeString(t.SHA256)
		if err != nil || len(h) != sha256.Size {
			return corrupt(fmt.Errorf("tokens[%d]: sha256 is not 64 hex characters", i))
		}
		if t.UsesLeft < 0 {
			return corrupt(fmt.Errorf("tokens[%d]: negative uses_left", i))
		}
		a.tokens[[sha256.Size]byte(h)] = &joinToken{usesLeft: t.UsesLeft, expires: t.Expires, created: t.Created}
	}
	for i, e := range st.Enrolled {
		if e.Key.IsZero() {
			return corrupt(fmt.Errorf("enrolled[%d]: no key", i))
		}
		a.enrolled[e.Key] = enrolment{at: e.At, token: e.Token}
	}
	for i, r := range st.Revoked {
		if r.Key.IsZero() {
			return corrupt(fmt.Errorf("revoked[%d]: no key", i))
		}
		a.revoked[r.Key] = r.At
	}
	return nil
}

// saveLocked writes the state atomically (temp file, fsync, rename), mode
// 0600. Tokens past their retention are dropped first.
func (a *Admission) saveLocked(now time.Time) error {
	if a.path == "" {
		return nil
	}
	a.pruneLocked(now)
	st := bridgeStateFile{Version: 1, Tokens: []stateToken{}, Enrolled: []stateEnrolled{}, Revoked: []stateRevoked{}}
	for h, t := range a.tokens {
		st.Tokens = append(st.Tokens, stateToken{SHA256: hex.EncodeToString(h[:]), UsesLeft: t.usesLeft, Expires: t.expires, Created: t.created})
	}
	slices.SortFunc(st.Tokens, func(x, y stateToken) int { return x.Created.Compare(y.Created) })
	for k, e := range a.enrolled {
		st.Enrolled = append(st.Enrolled, stateEnrolled{Key: k, At: e.at, Token: e.token})
	}
	slices.SortFunc(st.Enrolled, func(x, y stateEnrolled) int { return x.At.Compare(y.At) })
	for k, at := range a.revoked {
		st.Revoked = append(st.Revoked, stateRevoked{Key: k, At: at})
	}
	slices.SortFunc(st.Revoked, func(x, y stateRevoked) int { return x.At.Compare(y.At) })
	return a.file().Save(st)
}

func (a *Admission) file() statefile.File {
	return statefile.File{Path: a.path, What: "bridge state", Forget: "join tokens, enrolled keys and revocations"}
}

func (a *Admission) pruneLocked(now time.Time) {
	for h, t := range a.tokens {
		if now.Sub(t.expires) > tokenRetention {
			delete(a.tokens, h)
		}
	}
}

// Allow lets keys register without a token, as the config's allow list
// does (in memory: the config is where they persist).
func (a *Admission) Allow(keys ...identity.PublicKey) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, k := range keys {
		a.allow[k] = true
	}
}

// Lock takes the lock the methods ending in Locked need.
func (a *Admission) Lock() { a.mu.Lock() }

// Unlock releases it.
func (a *Admission) Unlock() { a.mu.Unlock() }

// AdmittedKeys lists the keys that may register without a token now.
func (a *Admission) AdmittedKeys() []identity.PublicKey {
	a.mu.Lock()
	defer a.mu.Unlock()
	keys := make([]identity.PublicKey, 0, len(a.allow)+len(a.enrolled))
	for k := range a.allow {
		if _, revoked := a.revoked[k]; !revoked {
			keys = append(keys, k)
		}
	}
	for k := range a.enrolled {
		if _, revoked := a.revoked[k]; !revoked && !a.allow[k] {
			keys = append(keys, k)
		}
	}
	return keys
}

// Admits reports whether key may register without a token now.
func (a *Admission) Admits(key identity.PublicKey) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, revoked := a.revoked[key]
	_, enrolled := a.enrolled[key]
	return !revoked && (a.allow[key] || enrolled)
}

// AdmitLocked decides whether key may register, enrolling it with token
// if that is what admits it. It returns "" to admit, or the reason to
// refuse; enrolledWith, the ID of the token that enrolled key now (""
// if none did); err, why an enrolment could not be stored.
func (a *Admission) AdmitLocked(key identity.PublicKey, token string, now time.Time) (reason, enrolledWith string, err error) {
	if _, ok := a.revoked[key]; ok {
		return RefuseRevoked, "", nil
	}
	if a.allow[key] {
		return "", "", nil
	}
	if _, ok := a.enrolled[key]; ok {
		return "", "", nil
	}
	if token == "" {
		return RefuseNotAllowed, "", nil
	}
	h := sha256.Sum256([]byte(token))
	t := a.tokens[h]
	switch {
	case t == nil:
		return RefuseBadToken, "", nil
	case !now.Before(t.expires):
		return RefuseExpired, "", nil
	case t.usesLeft <= 0:
		return RefuseUsedUp, "", nil
	}
	t.usesLeft--
	a.enrolled[key] = enrolment{at: now.UTC(), token: tokenID(h)}
	if err := a.saveLocked(now); err != nil {
		t.usesLeft++
		delete(a.enrolled, key)
		return RefuseStore, "", err
	}
	return "", tokenID(h), nil
}

// RevokeLocked records key as revoked and forgets its allowance and
// enrolment. It reports whether the key had been allowed or enrolled.
func (a *Admission) RevokeLocked(key identity.PublicKey, now time.Time) (bool, error) {
	wasAllowed := a.allow[key]
	e, wasEnrolled := a.enrolled[key]
	_, wasRevoked := a.revoked[key]
	delete(a.allow, key)
	delete(a.enrolled, key)
	if !wasRevoked {
		a.revoked[key] = now.UTC()
	}
	if err := a.saveLocked(now); err != nil {
		if wasAllowed {
			a.allow[key] = true
		}
		if wasEnrolled {
			a.enrolled[key] = e
		}
		if !wasRevoked {
			delete(a.revoked, key)
		}
		return false, err
	}
	return wasAllowed || wasEnrolled, nil
}

// CreateToken makes a join token that enrols up to uses keys within ttl
// of now, and stores its hash.
func (a *Admission) CreateToken(uses int, ttl time.Duration, now time.Time) (string, TokenInfo, error) {
	if uses < 1 || uses > maxTokenUses {
		return "", TokenInfo{}, fmt.Errorf("join token: uses must be between 1 and %d, not %d", maxTokenUses, uses)
	}
	if ttl <= 0 {
		return "", TokenInfo{}, fmt.Errorf("join token: the lifetime must be positive, not %s", ttl)
	}
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", TokenInfo{}, fmt.Errorf("join token: %w", err)
	}
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	h := sha256.Sum256([]byte(token))
	t := &joinToken{usesLeft: uses, expires: now.Add(ttl).UTC(), created: now.UTC()}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tokens[h] = t
	if err := a.saveLocked(now); err != nil {
		delete(a.tokens, h)
		return "", TokenInfo{}, err
	}
	return token, t.info(h), nil
}

func (t *joinToken) info(h [sha256.Size]byte) TokenInfo {
	return TokenInfo{ID: tokenID(h), UsesLeft: t.usesLeft, Expires: t.expires, Created: t.created}
}

func tokenID(h [sha256.Size]byte) string { return hex.EncodeToString(h[:4]) }

// Tokens lists the join tokens (never the tokens themselves) that are
// valid or expired within the retention, oldest first.
func (a *Admission) Tokens(now time.Time) []TokenInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]TokenInfo, 0, len(a.tokens))
	for h, t := range a.tokens {
		if now.Sub(t.expires) <= tokenRetention {
			out = append(out, t.info(h))
		}
	}
	slices.SortFunc(out, func(x, y TokenInfo) int {
		if c := x.Created.Compare(y.Created); c != 0 {
			return c
		}
		return strings.Compare(x.ID, y.ID)
	})
	return out
}
