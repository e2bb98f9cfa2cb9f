package bridge

import (
	"bytes"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/bridgetest"
	"github.com/tomoe-net/tomoe/internal/bridge/client"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/orgsync"
)

// orgNode is a real client whose organisation engine is an
// orgsync.Exchanger over SendOrg and OrgMessage: on each registration it
// presents its certificate and its hello.
type orgNode struct {
	c      *client.Client
	x      *orgsync.Exchanger
	bridge identity.PublicKey
}

func (n *orgNode) Send(m *orgsync.Msg) {
	if b, err := m.Marshal(); err == nil {
		_ = n.c.SendOrg(n.bridge, b)
	}
}

func startOrgNode(t *testing.T, h *srvHarness, key identity.PrivateKey, cert []byte) *orgNode {
	t.Helper()
	return startOrgNodeStore(t, h, key, cert, orgsync.NewStore())
}

func startOrgNodeStore(t *testing.T, h *srvHarness, key identity.PrivateKey, cert []byte, store *orgsync.Store) *orgNode {
	t.Helper()
	n := &orgNode{x: orgsync.NewExchanger(store), bridge: h.key.Public()}
	n.x.Accept = func(orgsync.DocID) bool { return true }
	n.x.Verify = verifyDoc
	bind, _ := bridgetest.OpenBind(t)
	bind.SetPrivateKey(key)
	n.c = client.New(client.Config{Key: key, Bind: bind, Bridges: []client.BridgeConfig{{Endpoint: h.addr().String(), Key: h.key.Public()}},
		OnRegistered: func(identity.PublicKey) {
			n.Send(&orgsync.Msg{Type: orgsync.TypeCert, Data: cert})
			n.Send(n.x.Hello(false))
		},
		OrgMessage: func(_ identity.PublicKey, payload []byte) {
			if m, err := orgsync.Unmarshal(payload); err == nil {
				n.x.Handle(n, &m)
			}
		}})
	bind.SetFrameHandler(n.c)
	n.c.Start()
	t.Cleanup(n.c.Close)
	return n
}

// Two real clients: a presents its certificate and announces a newer
// revocation list when it registers; the bridge pulls it and pushes it
// to b, which pulls it through its client.
func TestOrgThroughClients(t *testing.T) {
	a, b := testKey(t), testKey(t)
	h := newSrvHarness(t, ServerConfig{Allow: []identity.PublicKey{a.Public(), b.Public()}})
	h.clk.AdvanceTo(time.Now()) // the clients' clocks are the real one
	o := newOrg(t)
	now := time.Now()
	nb := startOrgNode(t, h, b, signCert(t, o, b.Public(), now, time.Hour).Binary())
	waitCond(t, "b's certificate held", func() bool { return h.s.Stats().OrgCerts == 1 })
	crl, err := o.Revoke(nil, []identity.PublicKey{testKey(t).Public()}, now)
	if err != nil {
		t.Fatal(err)
	}
	id := orgsync.DocID{Kind: orgsync.KindCRL, Org: crl.Org, Version: crl.Version}
	startOrgNodeWith(t, h, a, signCert(t, o, a.Public(), now, time.Hour).Binary(), id, crl.Binary())
	waitCond(t, "b holds a's revocation list", func() bool {
		got, doc, ok := nb.x.Store.Get(orgsync.KindCRL, crl.Org)
		return ok && got == id && bytes.Equal(doc, crl.Binary())
	})
	if got := nb.c.Bridges(); len(got) != 1 || got[0] != h.key.Public() {
		t.Fatalf("Bridges() = %v", got)
	}
	if err := nb.c.SendOrg(testKey(t).Public(), []byte{1}); err == nil {
		t.Fatal("SendOrg to a bridge that is not the node's succeeded")
	}
}

// startOrgNodeWith starts a node that holds doc (id) before it registers.
func startOrgNodeWith(t *testing.T, h *srvHarness, key identity.PrivateKey, cert []byte, id orgsync.DocID, doc []byte) *orgNode {
	t.Helper()
	store := orgsync.NewStore()
	store.Put(id, doc)
	return startOrgNodeStore(t, h, key, cert, store)
}
