package transport

import (
	"context"
	"errors"
	"testing"
	"time"
)

// Sent counts a peer's transport messages handed over, directly or
// through a relay, not its handshakes; WaitSent ends at the next one.
func TestWaitSent(t *testing.T) {
	b := newBind(&captureBind{}, nil)
	peer := newKey(t).Public()
	p := b.SetPeer(peer, loopback(4610))
	transport := make([]byte, 32)
	transport[0] = msgTransport
	initiation := make([]byte, initiationSize)
	initiation[0] = msgInitiation

	if err := b.Send([][]byte{initiation}, p); err != nil {
		t.Fatal(err)
	}
	if got := b.Sent(peer); got != 0 {
		t.Fatalf("a handshake counted: %d", got)
	}
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := b.WaitSent(short, peer, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("nothing sent yet: %v", err)
	}

	done := make(chan error, 1)
	go func() { done <- b.WaitSent(context.Background(), peer, 0) }()
	if err := b.Send([][]byte{transport, transport}, p); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitSent did not wake at the send")
	}
	b.SetRelay(peer, testRelay{}, 7)
	p.direct.Store(nil) // the relay is its only path now
	if err := b.Send([][]byte{transport}, p); err != nil {
		t.Fatal(err)
	}
	if got := b.Sent(peer); got != 3 {
		t.Fatalf("%d transport messages counted, want 3 (2 direct, 1 relayed)", got)
	}
	if err := b.WaitSent(context.Background(), newKey(t).Public(), 0); err == nil {
		t.Fatal("waited for a key that is not a peer")
	}
}
