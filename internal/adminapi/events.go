package adminapi

import (
	"sync"
	"time"
)

// subscriberBuffer is how many events a subscriber may lag behind before it
// misses some.
const subscriberBuffer = 256

// EventBus fans a node's events out to the admin API's subscribers
// (GET /v1/events). Publishing never blocks: a subscriber whose buffer is
// full misses events and is told so with one EventOverflow once it catches
// up. It is safe for concurrent use.
type EventBus struct {
	mu     sync.Mutex // guards subs and closed
	subs   map[*subscriber]struct{}
	closed bool
}

type subscriber struct {
	ch      chan Event
	dropped bool
}

// NewEventBus returns a bus without subscribers.
func NewEventBus() *EventBus { return &EventBus{subs: make(map[*subscriber]struct{})} }

// Publish sends ev to every subscriber, stamped with the time if it has
// none.
func (b *EventBus) Publish(ev Event) {
	if ev.Time == "" {
		ev.Time = time.Now().UTC().Format(time.RFC3339Nano)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		if s.dropped {
			select {
			case s.ch <- Event{Type: EventOverflow, Time: ev.Time}:
				s.dropped = false
			default:
				continue
			}
		}
		select {
		case s.ch <- ev:
		default:
			s.dropped = true
		}
	}
}

// Subscribe returns a channel of the events published from now on, and a
// function that ends the subscription (and closes the channel). After
// Close, the channel is closed at once.
func (b *EventBus) Subscribe() (<-chan Event, func()) {
	s := &subscriber{ch: make(chan Event, subscriberBuffer)}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(s.ch)
		return s.ch, func() {}
	}
	b.subs[s] = struct{}{}
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if _, ok := b.subs[s]; ok {
				delete(b.subs, s)
				close(s.ch)
			}
		})
	}
}

// Close ends every subscription.
func (b *EventBus) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for s := range b.subs {
		close(s.ch)
		delete(b.subs, s)
	}
}
