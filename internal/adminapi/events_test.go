package adminapi

import "testing"

// TestEventBusOverflow: a subscriber that falls behind misses events, is
// told so once when it catches up, and then gets the new ones; publishing
// never blocks; Close ends every subscription.
func TestEventBusOverflow(t *testing.T) {
	b := NewEventBus()
	ch, cancel := b.Subscribe()
	defer cancel()
	for range subscriberBuffer + 10 { // never blocks
		b.Publish(Event{Type: EventPeerUp})
	}
	for range subscriberBuffer {
		if ev := <-ch; ev.Type != EventPeerUp || ev.Time == "" {
			t.Fatalf("event %+v", ev)
		}
	}
	b.Publish(Event{Type: EventPeerDown})
	if ev := <-ch; ev.Type != EventOverflow {
		t.Fatalf("after missed events: %+v, want an overflow", ev)
	}
	if ev := <-ch; ev.Type != EventPeerDown {
		t.Fatalf("after the overflow: %+v, want the event that found room", ev)
	}
	b.Close()
	if _, ok := <-ch; ok {
		t.Fatal("channel open after Close")
	}
	late, _ := b.Subscribe()
	if _, ok := <-late; ok {
		t.Fatal("a subscription after Close is open")
	}
}
