package orgsync

import (
	"sync"
	"time"
)

// Channel is one party documents travel to and from: a peer (over the
// control port) or a bridge (sealed in its control frames). Send must not
// block; a message it cannot send is lost (the protocol retries).
type Channel interface {
	Send(m *Msg)
}

// Exchanger runs the document protocol over any number of channels: it
// answers Gets from its Store, pulls documents newer than it holds when a
// Hello names them, and keeps a pulled document once Verify accepts it.
// Certificates (TypeCert) and WantCerts are the caller's business: it
// sees every message first (Handle returns false for those). Safe for
// concurrent use.
type Exchanger struct {
	Store *Store
	// Accept reports whether documents of id's organisation are wanted at
	// all (the organisation is trusted here); nil accepts none.
	Accept func(id DocID) bool
	// Verify checks a whole document (signature, kind, organisation and
	// version equal to id's); only documents it accepts are kept.
	Verify func(id DocID, doc []byte) error
	// Fresh is called, without locks held, for each document newly kept:
	// the caller acts on it and announces it (Announce) to its channels.
	Fresh func(id DocID, doc []byte)
	// Now is the clock (time.Now when nil).
	Now func() time.Time

	asm  *Assembler
	mu   sync.Mutex // guards from
	from map[DocID]*pull
}

// pull is a document being pulled: from whom, and the end of the chunks
// last asked for (the next Get goes out when that chunk arrives).
type pull struct {
	ch   Channel
	upto int
}

// ChunksPerGet bounds the chunks one Get asks for and is answered with.
const ChunksPerGet = 32

// NewExchanger returns an exchanger keeping documents in store.
func NewExchanger(store *Store) *Exchanger {
	return &Exchanger{Store: store, asm: NewAssembler(), from: make(map[DocID]*pull)}
}

func (x *Exchanger) now() time.Time {
	if x.Now != nil {
		return x.Now()
	}
	return time.Now()
}

// Hello returns the Hello that names every document held.
func (x *Exchanger) Hello(wantCerts bool) *Msg {
	docs := x.Store.Held()
	if len(docs) > MaxDocs {
		docs = docs[:MaxDocs]
	}
	return &Msg{Type: TypeHello, WantCerts: wantCerts, Docs: docs}
}

// Handle acts on a document message from ch: Hello (pull what is newer),
// Get (answer from the store) and Chunk (collect; keep when whole and
// verified). It returns false for messages it leaves to the caller
// (certificates; a Hello's WantCerts is also the caller's to honour).
func (x *Exchanger) Handle(ch Channel, m *Msg) bool {
	switch m.Type {
	case TypeHello:
		for _, id := range m.Docs {
			x.consider(ch, id)
		}
		return true
	case TypeGet:
		id, doc, ok := x.Store.Get(m.Doc.Kind, m.Doc.Org)
		if !ok || id.Version != m.Doc.Version {
			return true
		}
		n := min(int(m.Count), ChunksPerGet)
		for i := int(m.Index); i < int(m.Index)+n; i++ {
			c, ok := Chunk(id, doc, i)
			if !ok {
				break
			}
			ch.Send(&c)
		}
		return true
	case TypeChunk:
		doc, done := x.asm.Add(m)
		if !done {
			x.mu.Lock()
			p := x.from[m.Doc]
			next := p != nil && int(m.Index)+1 >= p.upto
			x.mu.Unlock()
			if next {
				x.ask(p.ch, m.Doc)
			}
			return true
		}
		x.mu.Lock()
		delete(x.from, m.Doc)
		x.mu.Unlock()
		if x.Verify == nil || x.Verify(m.Doc, doc) != nil {
			return true // a bad copy: the next Hello naming it pulls it again
		}
		if x.Store.Put(m.Doc, doc) && x.Fresh != nil {
			x.Fresh(m.Doc, doc)
		}
		return true
	}
	return false
}

// consider pulls id from ch if it is newer than what is held.
func (x *Exchanger) consider(ch Channel, id DocID) {
	if x.Accept == nil || !x.Accept(id) || !x.Store.Newer(id) {
		return
	}
	if !x.asm.Want(id, x.now()) && !x.asm.Wanted(id) {
		return
	}
	x.ask(ch, id)
}

// ask sends ch a Get for the next chunks of id that are missing.
func (x *Exchanger) ask(ch Channel, id DocID) {
	i, n, ok := x.asm.Missing(id)
	if !ok {
		return
	}
	n = min(n, ChunksPerGet)
	x.mu.Lock()
	x.from[id] = &pull{ch: ch, upto: int(i) + int(n)}
	x.mu.Unlock()
	ch.Send(&Msg{Type: TypeGet, Doc: id, Index: i, Count: n})
}

// Retry asks again for the missing chunks of every document being
// pulled, and forgets those wanted for too long. Call it every second or
// so.
func (x *Exchanger) Retry() {
	for _, id := range x.asm.Expire(x.now()) {
		x.mu.Lock()
		delete(x.from, id)
		x.mu.Unlock()
	}
	x.mu.Lock()
	pending := make(map[DocID]Channel, len(x.from))
	for id, p := range x.from {
		pending[id] = p.ch
	}
	x.mu.Unlock()
	for id, ch := range pending {
		x.ask(ch, id)
	}
}

// Forget stops pulling from ch (a peer or bridge that went away).
// Channels are compared with ==: use pointers.
func (x *Exchanger) Forget(ch Channel) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for id, p := range x.from {
		if p.ch == ch {
			delete(x.from, id)
			x.asm.Drop(id)
		}
	}
}

// Pulling reports how many documents are being pulled.
func (x *Exchanger) Pulling() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.from)
}

// Offer keeps a document given from outside the protocol (the admin API,
// a file named in the config) after Verify accepts it, as if pulled. It
// reports whether the document was newer than the one held.
func (x *Exchanger) Offer(id DocID, doc []byte) (bool, error) {
	if x.Verify == nil {
		return false, nil
	}
	if err := x.Verify(id, doc); err != nil {
		return false, err
	}
	if !x.Store.Put(id, doc) {
		return false, nil
	}
	if x.Fresh != nil {
		x.Fresh(id, doc)
	}
	return true, nil
}
