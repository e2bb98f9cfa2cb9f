package orgsync

import (
	"bytes"
	"crypto/rand"
	"testing"
	"time"
)

func org(b byte) [32]byte {
	var k [32]byte
	k[0] = b
	return k
}

func TestMessagesRoundTrip(t *testing.T) {
	id := DocID{Kind: KindCRL, Org: org(7), Version: 42}
	msgs := []Msg{
		{Type: TypeHello},
		{Type: TypeHello, WantCerts: true, Docs: []DocID{id, {Kind: KindPolicy, Org: org(1), Version: 3}}},
		{Type: TypeCert, Data: bytes.Repeat([]byte{9}, MaxCert)},
		{Type: TypeGet, Doc: id, Index: 3, Count: 5},
		{Type: TypeGet, Doc: id, Index: 0, Count: MaxChunks},
		{Type: TypeChunk, Doc: id, Index: 1, Total: 2, Data: []byte("tail")},
	}
	for _, m := range msgs {
		b, err := m.Marshal()
		if err != nil {
			t.Fatalf("%+v: %v", m, err)
		}
		if len(b) > MaxMessage || len(b) > 1232 {
			t.Fatalf("type %d: %d bytes, more than one minimum-MTU datagram", m.Type, len(b))
		}
		got, err := Unmarshal(b)
		if err != nil {
			t.Fatalf("%+v: unmarshal: %v", m, err)
		}
		if !got.Equal(&m) {
			t.Fatalf("round trip: got %+v, want %+v", got, m)
		}
	}
	full := Msg{Type: TypeChunk, Doc: id, Index: 0, Total: MaxChunks, Data: make([]byte, ChunkSize)}
	if b, _ := full.Marshal(); len(b) > MaxMessage || MaxMessage > 1232 {
		t.Fatalf("largest chunk message is %d bytes (MaxMessage %d)", len(b), MaxMessage)
	}
}

func TestMarshalRefusesOutOfBounds(t *testing.T) {
	id := DocID{Kind: KindCRL, Org: org(1), Version: 1}
	bad := []Msg{
		{Type: 9},
		{Type: TypeHello, Docs: make([]DocID, MaxDocs+1)},
		{Type: TypeCert},
		{Type: TypeCert, Data: make([]byte, MaxCert+1)},
		{Type: TypeGet, Doc: id, Count: 0},
		{Type: TypeGet, Doc: id, Index: 255, Count: 2},
		{Type: TypeChunk, Doc: id, Index: 2, Total: 2, Data: []byte{1}},
		{Type: TypeChunk, Doc: id, Index: 0, Total: 1, Data: make([]byte, ChunkSize+1)},
	}
	for _, m := range bad {
		if _, err := m.Marshal(); err == nil {
			t.Errorf("%+v: marshalled", m)
		}
	}
}

func TestUnmarshalRejectsTruncatedAndTrailing(t *testing.T) {
	m := Msg{Type: TypeChunk, Doc: DocID{Kind: KindPolicy, Org: org(3), Version: 9}, Index: 0, Total: 1, Data: []byte("abc")}
	b, _ := m.Marshal()
	for i := range len(b) {
		if _, err := Unmarshal(b[:i]); err == nil {
			t.Fatalf("truncated to %d bytes: accepted", i)
		}
	}
	if _, err := Unmarshal(append(b, 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
	b[2] = 7 // unknown kind
	if _, err := Unmarshal(b); err == nil {
		t.Fatal("unknown document kind accepted")
	}
}

func TestChunksReassemble(t *testing.T) {
	doc := make([]byte, 3*ChunkSize+17)
	rand.Read(doc)
	id := DocID{Kind: KindCRL, Org: org(5), Version: 2}
	a := NewAssembler()
	if _, done := a.Add(&Msg{Type: TypeChunk, Doc: id, Total: 1, Data: []byte{1}}); done {
		t.Fatal("a chunk nobody wanted completed a document")
	}
	if !a.Want(id, time.Unix(0, 0)) || a.Want(id, time.Unix(0, 0)) {
		t.Fatal("Want: first must start, second must report already wanted")
	}
	if i, n, ok := a.Missing(id); !ok || i != 0 || n != MaxChunks {
		t.Fatalf("Missing before any chunk = %d,%d,%v", i, n, ok)
	}
	n := Chunks(doc)
	for _, i := range []int{3, 1, 0} {
		c, _ := Chunk(id, doc, i)
		if _, done := a.Add(&c); done {
			t.Fatalf("done after chunk %d of %d", i, n)
		}
	}
	if i, cnt, ok := a.Missing(id); !ok || i != 2 || cnt != 1 {
		t.Fatalf("Missing = %d,%d,%v; want 2,1", i, cnt, ok)
	}
	c, _ := Chunk(id, doc, 2)
	got, done := a.Add(&c)
	if !done || !bytes.Equal(got, doc) {
		t.Fatalf("reassembled %d bytes, done %v; want the %d-byte document", len(got), done, len(doc))
	}
	if a.Wanted(id) {
		t.Fatal("still wanted after completion")
	}
}

func TestAssemblerBounds(t *testing.T) {
	a := NewAssembler()
	now := time.Unix(100, 0)
	for i := range MaxAssemblies {
		if !a.Want(DocID{Kind: KindCRL, Org: org(byte(i)), Version: 1}, now) {
			t.Fatalf("want %d refused", i)
		}
	}
	if a.Want(DocID{Kind: KindCRL, Org: org(200), Version: 1}, now) {
		t.Fatal("more than MaxAssemblies wanted at once")
	}
	// A newer version of a document being collected replaces the older.
	if !a.Want(DocID{Kind: KindCRL, Org: org(0), Version: 2}, now) || a.Wanted(DocID{Kind: KindCRL, Org: org(0), Version: 1}) {
		t.Fatal("newer version did not replace the older")
	}
	if a.Want(DocID{Kind: KindCRL, Org: org(0), Version: 1}, now) {
		t.Fatal("older version wanted while a newer one is collected")
	}
	if got := a.Expire(now.Add(AssemblyTimeout + time.Second)); len(got) != MaxAssemblies {
		t.Fatalf("expired %d, want %d", len(got), MaxAssemblies)
	}
	// Only the last chunk may be short: a short middle chunk is ignored.
	id := DocID{Kind: KindPolicy, Org: org(1), Version: 1}
	a.Want(id, now)
	if _, done := a.Add(&Msg{Type: TypeChunk, Doc: id, Index: 0, Total: 2, Data: []byte{1}}); done {
		t.Fatal("done")
	}
	if i, _, _ := a.Missing(id); i != 0 {
		t.Fatalf("short middle chunk was kept (first missing %d)", i)
	}
}

func TestStoreKeepsNewest(t *testing.T) {
	s := NewStore()
	id := DocID{Kind: KindCRL, Org: org(1), Version: 5}
	if !s.Put(id, []byte("v5")) {
		t.Fatal("first put refused")
	}
	if s.Put(DocID{Kind: KindCRL, Org: org(1), Version: 5}, []byte("other")) || s.Put(DocID{Kind: KindCRL, Org: org(1), Version: 4}, []byte("v4")) {
		t.Fatal("same or older version replaced the held one")
	}
	if !s.Newer(DocID{Kind: KindCRL, Org: org(1), Version: 6}) || s.Newer(id) {
		t.Fatal("Newer wrong")
	}
	got, data, ok := s.Get(KindCRL, org(1))
	if !ok || got != id || string(data) != "v5" {
		t.Fatalf("Get = %v %q %v", got, data, ok)
	}
	if s.Version(KindPolicy, org(1)) != 0 {
		t.Fatal("kinds are not separate")
	}
}

func FuzzUnmarshal(f *testing.F) {
	id := DocID{Kind: KindCRL, Org: org(1), Version: 1}
	for _, m := range []Msg{
		{Type: TypeHello, WantCerts: true, Docs: []DocID{id}},
		{Type: TypeCert, Data: []byte("cert")},
		{Type: TypeGet, Doc: id, Count: 1},
		{Type: TypeChunk, Doc: id, Total: 1, Data: []byte("x")},
	} {
		b, _ := m.Marshal()
		f.Add(b)
	}
	for _, m := range joinMsgs() {
		b, _ := m.Marshal()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Unmarshal(b)
		if err != nil {
			return
		}
		again, err := m.Marshal()
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("not canonical: %x re-encodes as %x", b, again)
		}
	})
}
