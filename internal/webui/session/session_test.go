package session

import (
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestTokenSingleUse(t *testing.T) {
	c := &fakeClock{time.Unix(1e9, 0)}
	tb := New(c.now)
	tok, exp := tb.MintToken()
	if exp.Sub(c.t) != TokenTTL || len(tok) < 40 {
		t.Fatalf("token %q expires %v", tok, exp)
	}
	cookie, ok := tb.Login(tok)
	if !ok || cookie == "" || cookie == tok {
		t.Fatalf("first login: %q %v", cookie, ok)
	}
	if _, ok := tb.Login(tok); ok {
		t.Fatal("second use of a login token accepted")
	}
	s := tb.Lookup(cookie)
	if s == nil || len(s.CSRF) < 40 {
		t.Fatalf("session: %+v", s)
	}
	if !s.CheckCSRF(s.CSRF) || s.CheckCSRF("") || s.CheckCSRF(s.CSRF[1:]) {
		t.Fatal("CSRF check")
	}
	for _, bad := range []string{"", "x", tok + "x", string(make([]byte, 200))} {
		if _, ok := tb.Login(bad); ok {
			t.Errorf("login with %q accepted", bad)
		}
	}
}

func TestTokenExpiry(t *testing.T) {
	c := &fakeClock{time.Unix(1e9, 0)}
	tb := New(c.now)
	tok, _ := tb.MintToken()
	c.t = c.t.Add(TokenTTL)
	if _, ok := tb.Login(tok); ok {
		t.Fatal("expired token accepted")
	}
	tok, _ = tb.MintToken()
	c.t = c.t.Add(TokenTTL - time.Second)
	if _, ok := tb.Login(tok); !ok {
		t.Fatal("fresh token refused")
	}
}

func TestSessionExpiryAndBounds(t *testing.T) {
	c := &fakeClock{time.Unix(1e9, 0)}
	tb := New(c.now)
	login := func() string {
		tok, _ := tb.MintToken()
		ck, ok := tb.Login(tok)
		if !ok {
			t.Fatal("login")
		}
		return ck
	}
	ck := login()
	c.t = c.t.Add(IdleTimeout - time.Minute)
	if tb.Lookup(ck) == nil {
		t.Fatal("session ended before its idle timeout")
	}
	c.t = c.t.Add(IdleTimeout)
	if tb.Lookup(ck) != nil {
		t.Fatal("idle session still valid")
	}
	// Used all the time, a session still ends at MaxLifetime.
	ck = login()
	for end := c.t.Add(MaxLifetime); c.t.Before(end.Add(-time.Minute)); c.t = c.t.Add(30 * time.Minute) {
		if tb.Lookup(ck) == nil {
			t.Fatal("busy session ended early")
		}
	}
	c.t = c.t.Add(2 * time.Minute)
	if tb.Lookup(ck) != nil {
		t.Fatal("session outlived MaxLifetime")
	}
	// The table is bounded: the least recently used session goes.
	first := login()
	c.t = c.t.Add(time.Second)
	var last string
	for range MaxSessions {
		last = login()
		c.t = c.t.Add(time.Second)
	}
	if n, _ := tb.Len(); n != MaxSessions {
		t.Fatalf("%d sessions, want %d", n, MaxSessions)
	}
	if tb.Lookup(first) != nil || tb.Lookup(last) == nil {
		t.Fatal("eviction did not take the least recently used session")
	}
	tb.Logout(last)
	if tb.Lookup(last) != nil {
		t.Fatal("session valid after logout")
	}
	for range 3 * MaxTokens {
		tb.MintToken()
	}
	if _, n := tb.Len(); n != MaxTokens {
		t.Fatalf("%d tokens outstanding, want %d", n, MaxTokens)
	}
}

func TestFlash(t *testing.T) {
	tb := New(nil)
	tok, _ := tb.MintToken()
	ck, _ := tb.Login(tok)
	s := tb.Lookup(ck)
	tb.SetFlash(s, Flash{Text: "done"})
	if f := tb.TakeFlash(s); f.Text != "done" {
		t.Fatalf("flash %+v", f)
	}
	if f := tb.TakeFlash(s); f.Text != "" {
		t.Fatalf("flash shown twice: %+v", f)
	}
}
