package node

import (
	"sync"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
)

// subscriberBuffer is how many events a subscriber may lag behind before it
// misses some.
const subscriberBuffer = 256

// eventBus fans events out to admin API subscribers. Publishing never
// blocks: a subscriber whose buffer is full misses events and is told so
// with one EventOverflow once it catches up.
type eventBus struct {
	mu     sync.Mutex // guards subs and closed
	subs   map[*subscriber]struct{}
	closed bool
}

type subscriber struct {
	ch      chan Event
	dropped bool
}

func newEventBus() *eventBus { return &eventBus{subs: make(map[*subscriber]struct{})} }

func (b *eventBus) publish(ev Event) {
	if ev.Time == "" {
		ev.Time = time.Now().UTC().Format(time.RFC3339Nano)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		if s.dropped {
			select {
			case s.ch <- Event{Type: adminapi.EventOverflow, Time: ev.Time}:
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

func (b *eventBus) subscribe() (<-chan Event, func()) {
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

func (b *eventBus) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for s := range b.subs {
		close(s.ch)
		delete(b.subs, s)
	}
}
