// Package greetings keeps the organisation engine's timing per peer: when
// it last greeted a peer and answered its Hello (each at most so often),
// and when it asks a greeted peer again for a certificate that has not
// come. It sends nothing itself.
package greetings

import (
	"net/netip"
	"sync"
	"time"
)

const (
	// GreetInterval: at most one greeting per peer this often, unless
	// forced.
	GreetInterval = 2 * time.Second
	// AnswerInterval: at most one answer with certificates per peer this
	// often.
	AnswerInterval = time.Second
	// A greeted peer whose certificate has not come is asked again
	// (a Hello asking for certificates) AskFirst after the greeting, then
	// at waits doubling up to AskMaxWait, while AskFor lasts: 2, 6, 14,
	// 22, 30, 38, 46 and 54 s after it. The greeting and its answer are
	// datagrams; one lost (a crossing handshake, a full queue) would
	// otherwise leave the peer unknown until its next session. The waits
	// stay short so that a session WireGuard mends by itself (its retry
	// after 15 s without an answer) is asked again within seconds.
	AskFirst   = 2 * time.Second
	AskMaxWait = 8 * time.Second
	AskFor     = time.Minute
	// forget is how long a greeting or an answer is remembered.
	forget = time.Minute
)

// Book is the timing of greetings, answers and asking again, per peer
// address. Safe for concurrent use.
type Book struct {
	mu       sync.Mutex
	greeted  map[netip.Addr]time.Time
	answered map[netip.Addr]time.Time
	asking   map[netip.Addr]ask
}

// ask is when a peer was greeted, when it is asked again next, and the
// wait after that.
type ask struct {
	since, next time.Time
	wait        time.Duration
}

// New returns an empty Book.
func New() *Book {
	return &Book{greeted: map[netip.Addr]time.Time{}, answered: map[netip.Addr]time.Time{}, asking: map[netip.Addr]ask{}}
}

// Greet reports whether a may be greeted now (always when force), and if
// so records the greeting.
func (b *Book) Greet(a netip.Addr, now time.Time, force bool) bool {
	return b.take(b.greeted, a, now, GreetInterval, force)
}

// Answer reports whether a's Hello asking for certificates may be
// answered now, and if so records the answer.
func (b *Book) Answer(a netip.Addr, now time.Time) bool {
	return b.take(b.answered, a, now, AnswerInterval, false)
}

func (b *Book) take(m map[netip.Addr]time.Time, a netip.Addr, now time.Time, every time.Duration, force bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if last, ok := m[a]; ok && now.Sub(last) < every && !force {
		return false
	}
	m[a] = now
	return true
}

// Ask starts asking a again for its certificate, greeted now (want), or
// stops (its certificate is held).
func (b *Book) Ask(a netip.Addr, now time.Time, want bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if want {
		b.asking[a] = ask{since: now, next: now.Add(AskFirst), wait: AskFirst}
	} else {
		delete(b.asking, a)
	}
}

// Due returns the peers to ask again now, and moves each to its next
// time; a peer asked for AskFor is dropped.
func (b *Book) Due(now time.Time) []netip.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	var due []netip.Addr
	for a, st := range b.asking {
		switch {
		case now.Before(st.next):
			continue
		case now.Sub(st.since) >= AskFor:
			delete(b.asking, a)
			continue
		}
		st.wait = min(2*st.wait, AskMaxWait)
		st.next = now.Add(st.wait)
		b.asking[a] = st
		due = append(due, a)
	}
	return due
}

// Greeted reports whether a was greeted within the last minute.
func (b *Book) Greeted(a netip.Addr) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.greeted[a]
	return ok
}

// Prune forgets greetings and answers older than a minute.
func (b *Book) Prune(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range []map[netip.Addr]time.Time{b.greeted, b.answered} {
		for a, t := range m {
			if now.Sub(t) > forget {
				delete(m, a)
			}
		}
	}
}
