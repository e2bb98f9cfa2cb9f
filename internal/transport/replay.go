package transport

import (
	"bytes"
	"container/list"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/noise"
	"github.com/tomoe-net/tomoe/internal/statefile"
)

// ReplayStore remembers the newest handshake initiation timestamp of each
// key this node answered, so that a recorded initiation is never answered
// again. WireGuard keeps that timestamp only while the peer is in the
// device; tomoe removes idle peers and restarts, after which a replayed
// initiation would get a response (an oracle against a silent node) and
// could point the peer's path at the replayer. The store outlives both:
// the Bind consults it for every initiation, and the node saves it.
//
// It is bounded: at most max keys, the least recently answered forgotten
// first. A key forgotten that way, or answered in the last moments before
// a crash (the node saves every few seconds and at shutdown), can have an
// older initiation answered once more; README's security model says so.
//
// The timestamp is the initiator's clock, as in WireGuard: a peer whose
// clock goes back is refused until it passes the newest time seen.
type ReplayStore struct {
	file statefile.File // Path "": memory only
	max  int

	saveMu sync.Mutex // serialises Save, so an older snapshot never lands last

	mu    sync.Mutex // guards the fields below
	byKey map[identity.PublicKey]*list.Element
	lru   *list.List // of *replayEntry, most recently answered first
	dirty bool
}

type replayEntry struct {
	key identity.PublicKey
	ts  noise.Timestamp
}

// DefaultReplayKeys bounds a node's replay store: every peer it has talked
// to for a long while, as it holds at most that many peers at once.
const DefaultReplayKeys = 65536

// OpenReplayStore loads the store at path (created on the first Save; ""
// keeps it in memory only) holding at most max keys.
func OpenReplayStore(path string, max int) (*ReplayStore, error) {
	s := &ReplayStore{
		file:  statefile.File{Path: path, What: "handshake replay state", Forget: "the newest handshake time of each peer (a recorded handshake could then be answered once more)"},
		max:   max,
		byKey: make(map[identity.PublicKey]*list.Element),
		lru:   list.New(),
	}
	if path == "" {
		return s, nil
	}
	var st replayState
	if _, err := s.file.Load(&st, &st.Version); err != nil {
		return nil, err
	}
	for i, e := range st.Initiations {
		k, err := identity.ParsePublicKey(e.Key)
		if err != nil {
			return nil, s.file.Corrupt(fmt.Errorf("initiations[%d]: %v", i, err))
		}
		var ts noise.Timestamp
		if b, err := hex.DecodeString(e.Time); err != nil || len(b) != len(ts) {
			return nil, s.file.Corrupt(fmt.Errorf("initiations[%d]: time %q is not 24 hex digits", i, e.Time))
		} else {
			copy(ts[:], b)
		}
		if s.byKey[k] == nil && s.lru.Len() < max {
			s.byKey[k] = s.lru.PushBack(&replayEntry{key: k, ts: ts}) // the file is newest first
		}
	}
	return s, nil
}

type replayState struct {
	Version     int            `json:"version"`
	Initiations []replayEntryJ `json:"initiations"` // most recently answered first
}

type replayEntryJ struct {
	Key  string `json:"key"`
	Time string `json:"time"` // TAI64N, hex
}

// Fresh reports whether an initiation from key stamped ts is newer than
// every one answered before.
func (s *ReplayStore) Fresh(key identity.PublicKey, ts noise.Timestamp) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.byKey[key]
	return e == nil || bytes.Compare(ts[:], e.Value.(*replayEntry).ts[:]) > 0
}

// Newest returns the newest timestamp answered for key, if any.
func (s *ReplayStore) Newest(key identity.PublicKey) (noise.Timestamp, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.byKey[key]; e != nil {
		return e.Value.(*replayEntry).ts, true
	}
	return noise.Timestamp{}, false
}

// Record notes that an initiation from key stamped ts is being answered.
func (s *ReplayStore) Record(key identity.PublicKey, ts noise.Timestamp) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dirty = true
	if e := s.byKey[key]; e != nil {
		r := e.Value.(*replayEntry)
		if bytes.Compare(ts[:], r.ts[:]) > 0 {
			r.ts = ts
		}
		s.lru.MoveToFront(e)
		return
	}
	if s.lru.Len() >= s.max {
		old := s.lru.Back()
		delete(s.byKey, old.Value.(*replayEntry).key)
		s.lru.Remove(old)
	}
	s.byKey[key] = s.lru.PushFront(&replayEntry{key: key, ts: ts})
}

// Len returns the number of keys remembered.
func (s *ReplayStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lru.Len()
}

// Save writes the store if it changed since the last Save.
func (s *ReplayStore) Save() error {
	s.saveMu.Lock()
	defer s.saveMu.Unlock()
	s.mu.Lock()
	if !s.dirty || s.file.Path == "" {
		s.mu.Unlock()
		return nil
	}
	st := replayState{Version: statefile.Version, Initiations: make([]replayEntryJ, 0, s.lru.Len())}
	for e := s.lru.Front(); e != nil; e = e.Next() {
		r := e.Value.(*replayEntry)
		st.Initiations = append(st.Initiations, replayEntryJ{Key: r.key.String(), Time: hex.EncodeToString(r.ts[:])})
	}
	s.dirty = false
	s.mu.Unlock()
	if err := s.file.Save(&st); err != nil {
		s.mu.Lock()
		s.dirty = true
		s.mu.Unlock()
		return err
	}
	return nil
}
