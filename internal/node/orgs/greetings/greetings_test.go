package greetings

import (
	"net/netip"
	"testing"
	"time"
)

var peer = netip.MustParseAddr("fc00::1")

// Greetings and answers are rate limited per peer; force greets anyway.
func TestGreetAndAnswerIntervals(t *testing.T) {
	b := New()
	t0 := time.Unix(1000, 0)
	if !b.Greet(peer, t0, false) || b.Greet(peer, t0.Add(GreetInterval/2), false) {
		t.Fatal("a second greeting within GreetInterval was allowed, or the first refused")
	}
	if !b.Greet(peer, t0.Add(GreetInterval/2), true) {
		t.Fatal("a forced greeting was refused")
	}
	if !b.Answer(peer, t0) || b.Answer(peer, t0.Add(AnswerInterval/2)) || !b.Answer(peer, t0.Add(AnswerInterval)) {
		t.Fatal("answers are not limited to one per AnswerInterval")
	}
	if !b.Greeted(peer) {
		t.Fatal("a greeted peer is not Greeted")
	}
	b.Prune(t0.Add(forget + GreetInterval))
	if b.Greeted(peer) || !b.Answer(peer, t0.Add(AnswerInterval+time.Millisecond)) {
		t.Fatal("Prune kept a greeting or an answer older than forget")
	}
}

// A peer asked again is due at 2, 6, 14, 22, ... s after its greeting
// while AskFor lasts; Ask(false) stops it.
func TestDue(t *testing.T) {
	b := New()
	t0 := time.Unix(1000, 0)
	b.Ask(peer, t0, true)
	var at []time.Duration
	for d := time.Duration(0); d <= AskFor+AskMaxWait; d += time.Second {
		if due := b.Due(t0.Add(d)); len(due) > 0 {
			if len(due) != 1 || due[0] != peer {
				t.Fatalf("due %v at %s", due, d)
			}
			at = append(at, d)
		}
	}
	want := []time.Duration{2, 6, 14, 22, 30, 38, 46, 54}
	if len(at) != len(want) {
		t.Fatalf("asked again at %v, want %v s", at, want)
	}
	for i := range want {
		if at[i] != want[i]*time.Second {
			t.Fatalf("asked again at %v, want %v s", at, want)
		}
	}
	b.Ask(peer, t0, true)
	b.Ask(peer, t0, false)
	if due := b.Due(t0.Add(AskFor / 2)); len(due) != 0 {
		t.Fatalf("a peer no longer asked for is due: %v", due)
	}
}
