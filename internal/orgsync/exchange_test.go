package orgsync

import (
	"bytes"
	"errors"
	"testing"
)

// pipe delivers to the exchanger on the other side at once (through its
// wire encoding), as the node's control port and a bridge would.
type pipe struct {
	t    *testing.T
	to   *Exchanger
	back *pipe
	sent int
}

func (p *pipe) Send(m *Msg) {
	p.sent++
	b, err := m.Marshal()
	if err != nil {
		p.t.Fatalf("marshal: %v", err)
	}
	got, err := Unmarshal(b)
	if err != nil {
		p.t.Fatalf("unmarshal: %v", err)
	}
	p.to.Handle(p.back, &got)
}

func exchanger(valid map[DocID][]byte, fresh *[]DocID) *Exchanger {
	x := NewExchanger(NewStore())
	x.Accept = func(id DocID) bool { return id.Org == org(1) }
	x.Verify = func(id DocID, doc []byte) error {
		if !bytes.Equal(valid[id], doc) {
			return errors.New("bad signature")
		}
		return nil
	}
	x.Fresh = func(id DocID, doc []byte) { *fresh = append(*fresh, id) }
	return x
}

func TestExchangePullsNewerDocuments(t *testing.T) {
	big := bytes.Repeat([]byte("revoked "), 5000) // 40 KB: 40 chunks
	id := DocID{Kind: KindCRL, Org: org(1), Version: 3}
	stranger := DocID{Kind: KindCRL, Org: org(2), Version: 9}
	valid := map[DocID][]byte{id: big, stranger: []byte("x")}
	var freshA, freshB []DocID
	a, b := exchanger(valid, &freshA), exchanger(valid, &freshB)
	if ok, err := a.Offer(id, big); !ok || err != nil {
		t.Fatalf("Offer = %v, %v", ok, err)
	}
	if ok, err := a.Offer(stranger, []byte("y")); ok || err == nil {
		t.Fatal("a document that does not verify was kept")
	}
	a.Store.Put(stranger, []byte("x")) // held, but b does not trust that org
	ab, ba := &pipe{t: t, to: b}, &pipe{t: t, to: a}
	ab.back, ba.back = ba, ab
	ab.Send(a.Hello(false))
	if len(freshB) != 1 || freshB[0] != id {
		t.Fatalf("b kept %v, want only %v", freshB, id)
	}
	if _, got, _ := b.Store.Get(KindCRL, org(1)); !bytes.Equal(got, big) {
		t.Fatal("b holds a different document")
	}
	// Announcing again pulls nothing: b is up to date.
	before := ba.sent
	ab.Send(a.Hello(false))
	if ba.sent != before {
		t.Fatalf("b asked again for a document it holds (%d messages)", ba.sent-before)
	}
	if b.Pulling() != 0 {
		t.Fatal("still pulling")
	}
}

func TestExchangeDropsTamperedCopyAndRetries(t *testing.T) {
	id := DocID{Kind: KindPolicy, Org: org(1), Version: 1}
	valid := map[DocID][]byte{id: []byte("the real policy")}
	var freshA, freshB []DocID
	a, b := exchanger(valid, &freshA), exchanger(valid, &freshB)
	a.Store.Put(id, []byte("a forged policy")) // a holds a bad copy
	ab, ba := &pipe{t: t, to: b}, &pipe{t: t, to: a}
	ab.back, ba.back = ba, ab
	ab.Send(a.Hello(false))
	if len(freshB) != 0 || b.Store.Version(KindPolicy, org(1)) != 0 {
		t.Fatal("a document that does not verify was kept")
	}
	a.Store.Forget(KindPolicy, org(1))
	a.Store.Put(id, valid[id])
	ab.Send(a.Hello(false))
	if len(freshB) != 1 {
		t.Fatal("the good copy was not pulled after a bad one")
	}
}
