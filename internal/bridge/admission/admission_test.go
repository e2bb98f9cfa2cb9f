package admission

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
)

func key(t *testing.T) identity.PublicKey {
	t.Helper()
	k, err := identity.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

// The decision in one place: the allow list, a token's uses and lifetime,
// and a revocation that overrides both and outlives a restart.
func TestAdmit(t *testing.T) {
	state := filepath.Join(t.TempDir(), "bridge.json")
	allowed, joiner, late, stranger := key(t), key(t), key(t), key(t)
	a, err := Open(state, []identity.PublicKey{allowed})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tok, info, err := a.CreateToken(1, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	admit := func(k identity.PublicKey, token string, at time.Time) (string, string) {
		t.Helper()
		a.Lock()
		defer a.Unlock()
		reason, with, err := a.AdmitLocked(k, token, at)
		if err != nil {
			t.Fatal(err)
		}
		return reason, with
	}
	if r, w := admit(allowed, "", now); r != "" || w != "" {
		t.Fatalf("allowed key: %q %q", r, w)
	}
	if r, _ := admit(stranger, "", now); r != RefuseNotAllowed {
		t.Fatalf("stranger: %q", r)
	}
	if r, _ := admit(stranger, TokenPrefix+"x", now); r != RefuseBadToken {
		t.Fatalf("wrong token: %q", r)
	}
	if r, w := admit(joiner, tok, now); r != "" || w != info.ID {
		t.Fatalf("token: %q, enrolled with %q, want %q", r, w, info.ID)
	}
	if r, w := admit(joiner, "", now); r != "" || w != "" {
		t.Fatalf("enrolled key: %q %q", r, w)
	}
	if r, _ := admit(late, tok, now); r != RefuseUsedUp {
		t.Fatalf("second use: %q", r)
	}
	tok2, _, _ := a.CreateToken(1, time.Minute, now)
	if r, _ := admit(late, tok2, now.Add(time.Minute)); r != RefuseExpired {
		t.Fatalf("expired token: %q", r)
	}
	if got := a.AdmittedKeys(); len(got) != 2 || !a.Admits(allowed) || !a.Admits(joiner) || a.Admits(late) {
		t.Fatalf("admitted %v", got)
	}
	a.Lock()
	known, err := a.RevokeLocked(joiner, now)
	a.Unlock()
	if err != nil || !known {
		t.Fatalf("revoke: %v %v", known, err)
	}

	b, err := Open(state, []identity.PublicKey{allowed, joiner}) // the config allows it again: revoked still
	if err != nil {
		t.Fatal(err)
	}
	b.Lock()
	reason, _, _ := b.AdmitLocked(joiner, "", now)
	b.Unlock()
	if reason != RefuseRevoked || !b.Admits(allowed) || len(b.Tokens(now)) != 2 {
		t.Fatalf("after a restart: %q, tokens %+v", reason, b.Tokens(now))
	}
}
