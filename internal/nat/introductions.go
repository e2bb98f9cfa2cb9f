package nat

import (
	"sync"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// maxIntroduced bounds the peers whose introductions a node remembers per
// bridge.
const maxIntroduced = 4096

// Introductions is what a node remembers of one bridge's introductions:
// the bridge's time of its newest introduction of each peer. The zero
// value is empty and ready.
type Introductions struct {
	mu         sync.Mutex // guards introduced
	introduced map[identity.PublicKey]int64
}

// Fresh reports whether an introduction of key stamped t (the bridge's
// clock) is news at now, and if so notes it. The bridge and this node
// agree on the time within wire.MaxClockSkew (the bridge refuses it
// otherwise), and the bridge's introductions of one peer come in order: a
// replayed one (which would make this node probe old endpoints and point
// the peer's relay at an old id) is neither fresh nor newer. When the
// memory is full of live entries the introduction is refused: forgetting
// one would let it be replayed.
func (in *Introductions) Fresh(key identity.PublicKey, t int64, now time.Time) bool {
	floor := now.Add(-ClockWindow).UnixNano()
	if t < floor || t > now.Add(ClockWindow).UnixNano() {
		return false
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	last, ok := in.introduced[key]
	if ok && t <= last {
		return false
	}
	if !ok && len(in.introduced) >= maxIntroduced {
		for k, at := range in.introduced {
			if at < floor {
				delete(in.introduced, k)
			}
		}
		if len(in.introduced) >= maxIntroduced {
			return false
		}
	}
	if in.introduced == nil {
		in.introduced = make(map[identity.PublicKey]int64)
	}
	in.introduced[key] = t
	return true
}
