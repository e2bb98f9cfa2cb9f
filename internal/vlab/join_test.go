package vlab

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node"
	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// joinStatus returns n's organisation named name in its status, if any.
func joinOrgStatus(t *testing.T, n *Node, name string) (adminapi.OrgStatus, bool) {
	t.Helper()
	st, err := n.StatusArea().Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range st.Orgs {
		if o.Name == name {
			return o, true
		}
	}
	return adminapi.OrgStatus{}, false
}

func listRequests(t *testing.T, via *Node, s *org.Signer) adminapi.OrgRequestsResponse {
	t.Helper()
	q, err := s.SignJoinQuery(org.JoinList, via.Public(), identity.PublicKey{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	res, err := node.OrgsArea{Node: via.Node}.Requests(context.Background(), adminapi.OrgQueryRequest{Query: q.Text()})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestJoinByRequest: the whole enrolment flow on the in-memory internet,
// with real nodes. A new node that trusts no organisation asks to join
// acme through the bridge; the key holder, through its own node (alice),
// lists the request with a query acme signed, and approves it with a
// certificate; the bridge passes it on; the new node verifies and
// installs it, and a group rule on the server admits it at once. A
// replayed query and an approval by another key change nothing. After a
// restart the new node is still a member.
func TestJoinByRequest(t *testing.T) {
	lab := New(t, vnetConfig())
	s, err := org.Init("acme", filepath.Join(t.TempDir(), "acme.key"))
	if err != nil {
		t.Fatal(err)
	}
	evil, err := org.Init("acme", filepath.Join(t.TempDir(), "evil.key"))
	if err != nil {
		t.Fatal(err)
	}
	l := &orgLab{Lab: lab, signer: s, certs: map[*Node]*org.Cert{}}
	br := lab.NewNode("bridge", lab.AddHost("bridge"))
	server := lab.NewNode("server", lab.AddHost("server"))
	alice := lab.NewNode("alice", lab.AddHost("alice"))
	newbie := lab.NewNode("newbie", lab.AddHost("newbie"))
	br.Start(t, BridgeConfig(server, alice, newbie))
	for n, name := range map[*Node]string{server: "server.acme", alice: "alice@dev.acme"} {
		c, err := s.SignCert(org.CertRequest{Node: n.Public(), Name: name, Groups: []string{"dev"}, TTL: 24 * time.Hour}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		l.certs[n] = c
	}
	server.Start(t, JoinConfig(br, "")+l.orgConfig(server, "")+devRule)
	server.Echo(t, echoPort)
	alice.Start(t, JoinConfig(br, "")+l.orgConfig(alice, ""))
	newbie.Start(t, JoinConfig(br, "")) // no [[orgs]] at all
	for _, n := range []*Node{server, alice, newbie} {
		n.WaitBridge(t, "registered", "udp", 10*time.Second)
	}
	if c, err := newbie.Dial(server, echoPort, 2*time.Second); err == nil {
		c.Close()
		t.Fatal("the new node reached the server before it joined")
	}

	// 1. The new node asks.
	ctx := context.Background()
	jr, err := node.OrgsArea{Node: newbie.Node}.Join(ctx, adminapi.OrgJoinRequest{Org: s.Public().String(), Name: "newbie@dev.acme", Groups: []string{"dev"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(jr.Bridges) != 1 || jr.Bridges[0].State != "held" || jr.Node != newbie.Public().String() {
		t.Fatalf("join: %+v", jr)
	}
	if st, ok := joinOrgStatus(t, newbie, "acme"); !ok || !st.JoinOnly || st.Join == nil || st.Join.Name != "newbie@dev.acme" {
		t.Fatalf("the new node's status does not show its request: %+v", st)
	}

	// 2. The key holder lists it through alice.
	asked := time.Now()
	res := listRequests(t, alice, s)
	if len(res.Requests) != 1 || len(res.Bridges) != 1 || res.Bridges[0].State != "answered" {
		t.Fatalf("list: %+v", res)
	}
	req := res.Requests[0]
	if req.Node != newbie.Public().String() || req.Name != "newbie@dev.acme" || strings.Join(req.Groups, ",") != "dev" || req.State != "pending" {
		t.Fatalf("request listed: %+v", req)
	}
	t.Logf("request listed in %v", time.Since(asked).Round(time.Millisecond))
	// A replayed query is refused by the bridge; one signed for another
	// node is refused by alice's node.
	q, _ := s.SignJoinQuery(org.JoinList, alice.Public(), identity.PublicKey{}, time.Now())
	if _, err := (node.OrgsArea{Node: alice.Node}).Requests(ctx, adminapi.OrgQueryRequest{Query: q.Text()}); err != nil {
		t.Fatal(err)
	}
	again, err := node.OrgsArea{Node: alice.Node}.Requests(ctx, adminapi.OrgQueryRequest{Query: q.Text()})
	if err != nil || len(again.Requests) != 0 || again.Bridges[0].State != "refused" || !strings.Contains(again.Bridges[0].Error, "replayed") {
		t.Fatalf("replayed query: %+v, %v", again, err)
	}
	if _, err := (node.OrgsArea{Node: server.Node}).Requests(ctx, adminapi.OrgQueryRequest{Query: q.Text()}); err == nil {
		t.Fatal("a query signed for alice was forwarded by the server")
	}

	// 3. An approval by another key with acme's name is not passed on.
	fake, err := evil.SignCert(org.CertRequest{Node: newbie.Public(), Name: "newbie@dev.acme", Groups: []string{"dev", "servers"}, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	fr, err := node.OrgsArea{Node: alice.Node}.Approve(ctx, adminapi.OrgApproveRequest{Cert: fake.Text()})
	if err != nil || fr.Bridges[0].State != "no_request" {
		t.Fatalf("approval by another key: %+v, %v", fr, err)
	}

	// 4. The real approval: delivered, verified, installed.
	cert, err := s.SignCert(org.CertRequest{Node: newbie.Public(), Name: req.Name, Groups: req.Groups, TTL: 24 * time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	approved := time.Now()
	ar, err := node.OrgsArea{Node: alice.Node}.Approve(ctx, adminapi.OrgApproveRequest{Cert: cert.Text()})
	if err != nil || ar.Bridges[0].State != "delivered" {
		t.Fatalf("approval: %+v, %v", ar, err)
	}
	memberOK := func() bool {
		st, ok := joinOrgStatus(t, newbie, "acme")
		return ok && !st.JoinOnly && st.Join == nil && st.Cert != nil && st.Cert.State == "valid" && st.Cert.Source == "join" && st.Cert.Serial == cert.SerialString()
	}
	testnet.WaitFor(t, 10*time.Second, "the new node holds its certificate", memberOK)
	t.Logf("certificate installed %v after the approval", time.Since(approved).Round(time.Millisecond))
	newbie.Talk(t, server, echoPort) // the group rule admits it now
	testnet.WaitFor(t, 10*time.Second, "the request is gone from the bridge", func() bool { return len(listRequests(t, alice, s).Requests) == 0 })

	// 5. A restart keeps it.
	newbie.Restart(t)
	newbie.WaitBridge(t, "registered", "udp", 10*time.Second)
	if !memberOK() {
		st, _ := joinOrgStatus(t, newbie, "acme")
		t.Fatalf("after a restart: %+v", st)
	}
	testnet.WaitFor(t, 15*time.Second, "the restarted node reaches the server", func() bool {
		c, err := newbie.Dial(server, echoPort, 3*time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		return testnet.RoundTrip(c, "newbie after restart", 3*time.Second) == nil
	})
}

// TestJoinApprovedWhileAway: the new node asks, then stops; the key
// holder approves while it is away, and the bridge keeps the certificate;
// the node, restarted, sends its request again (it kept it) and picks the
// certificate up.
func TestJoinApprovedWhileAway(t *testing.T) {
	lab := New(t, vnetConfig())
	s, err := org.Init("acme", filepath.Join(t.TempDir(), "acme.key"))
	if err != nil {
		t.Fatal(err)
	}
	br := lab.NewNode("bridge", lab.AddHost("bridge"))
	holder := lab.NewNode("holder", lab.AddHost("holder"))
	newbie := lab.NewNode("newbie", lab.AddHost("newbie"))
	br.Start(t, BridgeConfig(holder, newbie))
	holder.Start(t, JoinConfig(br, ""))
	newbie.Start(t, JoinConfig(br, ""))
	holder.WaitBridge(t, "registered", "udp", 10*time.Second)
	newbie.WaitBridge(t, "registered", "udp", 10*time.Second)
	ctx := context.Background()
	if jr, err := (node.OrgsArea{Node: newbie.Node}).Join(ctx, adminapi.OrgJoinRequest{Org: s.Public().String(), Name: "laptop@sales.acme", Groups: []string{"sales"}}); err != nil || jr.Bridges[0].State != "held" {
		t.Fatalf("join: %+v, %v", jr, err)
	}
	newbie.Stop()
	if res := listRequests(t, holder, s); len(res.Requests) != 1 || res.Requests[0].State != "pending" {
		t.Fatalf("list while away: %+v", res)
	}
	cert, err := s.SignCert(org.CertRequest{Node: newbie.Public(), Name: "laptop@sales.acme", Groups: []string{"sales"}, TTL: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ar, err := node.OrgsArea{Node: holder.Node}.Approve(ctx, adminapi.OrgApproveRequest{Cert: cert.Text()})
	if err != nil || ar.Bridges[0].State != "kept" {
		t.Fatalf("approval while away: %+v, %v", ar, err)
	}
	if res := listRequests(t, holder, s); len(res.Requests) != 1 || res.Requests[0].State != "approved" {
		t.Fatalf("list after approval: %+v", res)
	}
	newbie.Restart(t)
	testnet.WaitFor(t, 15*time.Second, "the restarted node picked its certificate up", func() bool {
		st, ok := joinOrgStatus(t, newbie, "acme")
		return ok && st.Cert != nil && st.Cert.Serial == cert.SerialString() && st.Cert.State == "valid" && st.Join == nil
	})
	testnet.WaitFor(t, 10*time.Second, "the bridge dropped the request", func() bool { return len(listRequests(t, holder, s).Requests) == 0 })
}
