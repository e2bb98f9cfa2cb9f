package orgsync

import (
	"bytes"
	"slices"
	"sync"
	"time"
)

// Store holds the newest version of each document: per kind and
// organisation, one verified document. Safe for concurrent use.
type Store struct {
	mu   sync.Mutex // guards docs
	docs map[key]held
}

type key struct {
	kind Kind
	org  [32]byte
}

type held struct {
	version uint64
	data    []byte
}

// NewStore returns an empty store.
func NewStore() *Store { return &Store{docs: make(map[key]held)} }

// Put keeps data as id if it is newer than what the store holds for id's
// kind and organisation. The caller has verified it.
func (s *Store) Put(id DocID, data []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key{id.Kind, id.Org}
	if h, ok := s.docs[k]; ok && h.version >= id.Version {
		return false
	}
	s.docs[k] = held{version: id.Version, data: bytes.Clone(data)}
	return true
}

// Get returns the document held for a kind and organisation.
func (s *Store) Get(kind Kind, org [32]byte) (DocID, []byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.docs[key{kind, org}]
	return DocID{Kind: kind, Org: org, Version: h.version}, h.data, ok
}

// Version returns the version held for id's kind and organisation (0:
// none).
func (s *Store) Version(kind Kind, org [32]byte) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.docs[key{kind, org}].version
}

// Newer reports whether id is newer than what the store holds.
func (s *Store) Newer(id DocID) bool { return id.Version > s.Version(id.Kind, id.Org) }

// Held lists what the store holds, in a stable order.
func (s *Store) Held() []DocID {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]DocID, 0, len(s.docs))
	for k, h := range s.docs {
		out = append(out, DocID{Kind: k.kind, Org: k.org, Version: h.version})
	}
	slices.SortFunc(out, func(a, b DocID) int {
		if c := int(a.Kind) - int(b.Kind); c != 0 {
			return c
		}
		return bytes.Compare(a.Org[:], b.Org[:])
	})
	return out
}

// Forget drops what the store holds for a kind and organisation.
func (s *Store) Forget(kind Kind, org [32]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.docs, key{kind, org})
}

// Assembler puts documents together from their chunks. It only collects
// documents it was asked to want (Want), at most MaxAssemblies at once, so
// chunks nobody asked for cost nothing. Chunks of one version of a
// document are the same whoever sends them; the caller verifies the whole
// document and, if it does not verify, wants it again from someone else.
// Safe for concurrent use.
type Assembler struct {
	mu    sync.Mutex // guards parts
	parts map[DocID]*assembly
}

// MaxAssemblies bounds the documents being assembled at once (memory:
// MaxAssemblies × MaxDoc).
const MaxAssemblies = 8

// AssemblyTimeout is how long a wanted document may take to arrive before
// Expire forgets it.
const AssemblyTimeout = 20 * time.Second

type assembly struct {
	started time.Time
	total   int
	got     int
	chunks  [][]byte
}

// NewAssembler returns an empty assembler.
func NewAssembler() *Assembler { return &Assembler{parts: make(map[DocID]*assembly)} }

// Want starts collecting id, dropping older versions of the same document
// being collected. It reports false when id is collected already or there
// is no room.
func (a *Assembler) Want(id DocID, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.parts[id]; ok {
		return false
	}
	for o := range a.parts {
		if o.Same(id) {
			if o.Version > id.Version {
				return false
			}
			delete(a.parts, o)
		}
	}
	if len(a.parts) >= MaxAssemblies {
		return false
	}
	a.parts[id] = &assembly{started: now}
	return true
}

// Wanted reports whether id is being collected.
func (a *Assembler) Wanted(id DocID) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.parts[id]
	return ok
}

// Add files a chunk. When it completes its document, Add returns the
// document and stops collecting it.
func (a *Assembler) Add(m *Msg) (doc []byte, done bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.parts[m.Doc]
	if p == nil || m.Type != TypeChunk {
		return nil, false
	}
	if p.total != int(m.Total) {
		// The first chunk fixes the size; one that disagrees restarts it.
		p.total, p.got, p.chunks = int(m.Total), 0, make([][]byte, m.Total)
	}
	if int(m.Index) < p.total-1 && len(m.Data) != ChunkSize {
		return nil, false // only the last chunk may be short
	}
	if p.chunks[m.Index] == nil {
		p.got++
	}
	p.chunks[m.Index] = bytes.Clone(m.Data)
	if p.got < p.total {
		return nil, false
	}
	delete(a.parts, m.Doc)
	return bytes.Join(p.chunks, nil), true
}

// Missing returns the first run of chunks of id not yet received (all of
// them, as far as a Get may ask, before the first chunk came).
func (a *Assembler) Missing(id DocID) (index, count uint16, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p := a.parts[id]
	if p == nil {
		return 0, 0, false
	}
	if p.total == 0 {
		return 0, MaxChunks, true
	}
	i := slices.IndexFunc(p.chunks, func(c []byte) bool { return c == nil })
	if i < 0 {
		return 0, 0, false
	}
	j := i
	for j < p.total && p.chunks[j] == nil {
		j++
	}
	return uint16(i), uint16(j - i), true
}

// Drop stops collecting id.
func (a *Assembler) Drop(id DocID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.parts, id)
}

// Expire stops collecting documents wanted longer than AssemblyTimeout ago
// and returns them.
func (a *Assembler) Expire(now time.Time) []DocID {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []DocID
	for id, p := range a.parts {
		if now.Sub(p.started) > AssemblyTimeout {
			delete(a.parts, id)
			out = append(out, id)
		}
	}
	return out
}
