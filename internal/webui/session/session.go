// Package session owns the web UI's logins: single-use, short-lived login
// tokens (minted over the admin socket, spent by opening the URL `tomoe
// ui` prints), the sessions they open (a random cookie value, kept in a
// bounded table with an idle and an absolute expiry) and each session's
// CSRF token. It keeps only hashes of tokens and session cookies, so a
// memory dump or a timing difference in a map lookup gives away nothing
// that logs in. It imports no other internal package.
package session

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"
)

// Limits. A login token is for the one browser that opens it now; a
// session is one administrator's browser.
const (
	TokenTTL    = 60 * time.Second
	MaxTokens   = 16 // outstanding login tokens; minting more drops the oldest
	IdleTimeout = time.Hour
	MaxLifetime = 12 * time.Hour
	MaxSessions = 32 // logging in past this ends the least recently used session
)

// Session is one logged-in browser.
type Session struct {
	// CSRF is the token every change must carry (a hidden form field).
	CSRF    string
	created time.Time
	used    time.Time
	flash   Flash
}

// Flash is a message shown once, on the next page (after a change).
type Flash struct {
	Text  string
	Error bool
}

type digest [sha256.Size]byte

// Table holds the login tokens and sessions. It is safe for concurrent use.
type Table struct {
	now func() time.Time

	mu       sync.Mutex // guards tokens and sessions
	tokens   map[digest]time.Time
	sessions map[digest]*Session
}

// New returns an empty table; now is the clock (time.Now if nil).
func New(now func() time.Time) *Table {
	if now == nil {
		now = time.Now
	}
	return &Table{now: now, tokens: map[digest]time.Time{}, sessions: map[digest]*Session{}}
}

// random returns n random bytes, base64url without padding.
func random(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// MintToken returns a new login token and when it expires.
func (t *Table) MintToken() (string, time.Time) {
	tok := random(32)
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pruneLocked(now)
	for len(t.tokens) >= MaxTokens {
		var oldest digest
		var at time.Time
		for d, exp := range t.tokens {
			if at.IsZero() || exp.Before(at) {
				oldest, at = d, exp
			}
		}
		delete(t.tokens, oldest)
	}
	exp := now.Add(TokenTTL)
	t.tokens[sha256.Sum256([]byte(tok))] = exp
	return tok, exp
}

// Login spends a login token: if it is known and unexpired, it is
// forgotten and a new session starts, whose cookie value Login returns.
// A token works once.
func (t *Table) Login(token string) (cookie string, ok bool) {
	if token == "" || len(token) > 128 {
		return "", false
	}
	now := t.now()
	d := sha256.Sum256([]byte(token))
	t.mu.Lock()
	defer t.mu.Unlock()
	exp, found := t.tokens[d]
	if !found {
		return "", false
	}
	delete(t.tokens, d)
	if !now.Before(exp) {
		return "", false
	}
	t.pruneLocked(now)
	for len(t.sessions) >= MaxSessions {
		var lru digest
		var at time.Time
		for d, s := range t.sessions {
			if at.IsZero() || s.used.Before(at) {
				lru, at = d, s.used
			}
		}
		delete(t.sessions, lru)
	}
	cookie = random(32)
	t.sessions[sha256.Sum256([]byte(cookie))] = &Session{CSRF: random(32), created: now, used: now}
	return cookie, true
}

// Lookup returns the session of a cookie value, or nil if there is none
// (unknown, expired, logged out). It counts as use of the session.
func (t *Table) Lookup(cookie string) *Session {
	if cookie == "" || len(cookie) > 128 {
		return nil
	}
	now := t.now()
	d := sha256.Sum256([]byte(cookie))
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.sessions[d]
	if s == nil {
		return nil
	}
	if expired(s, now) {
		delete(t.sessions, d)
		return nil
	}
	s.used = now
	return s
}

// Logout ends the session of a cookie value.
func (t *Table) Logout(cookie string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.sessions, sha256.Sum256([]byte(cookie)))
}

// Len returns the number of live sessions and outstanding tokens.
func (t *Table) Len() (sessions, tokens int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pruneLocked(t.now())
	return len(t.sessions), len(t.tokens)
}

// CheckCSRF reports whether token is the session's CSRF token (in
// constant time).
func (s *Session) CheckCSRF(token string) bool {
	return subtle.ConstantTimeCompare([]byte(token), []byte(s.CSRF)) == 1
}

// SetFlash keeps a message for the session's next page.
func (t *Table) SetFlash(s *Session, f Flash) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s.flash = f
}

// TakeFlash returns the session's message and forgets it.
func (t *Table) TakeFlash(s *Session) Flash {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := s.flash
	s.flash = Flash{}
	return f
}

func expired(s *Session, now time.Time) bool {
	return now.Sub(s.used) >= IdleTimeout || now.Sub(s.created) >= MaxLifetime
}

func (t *Table) pruneLocked(now time.Time) {
	for d, exp := range t.tokens {
		if !now.Before(exp) {
			delete(t.tokens, d)
		}
	}
	for d, s := range t.sessions {
		if expired(s, now) {
			delete(t.sessions, d)
		}
	}
}
