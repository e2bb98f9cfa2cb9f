package vlab

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/node"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// TestConsoleView: an operator node is listed as read in every node's
// [[admin.allow]], the bridge's included. Knowing only its bridge, its
// console finds every node through the bridge's registrations, shows
// each online with its rules, says who may open what, and marks a node
// that stops as unreachable since then.
func TestConsoleView(t *testing.T) {
	lab := New(t, vnetConfig())
	br := lab.NewNode("bridge", lab.AddHost("bridge"))
	op := lab.NewNode("operator", lab.AddHost("operator"))
	web := lab.NewNode("web", lab.AddHost("web"))
	db := lab.NewNode("db", lab.AddHost("db"))
	admin := fmt.Sprintf("[[admin.allow]]\nfrom = %q\nrole = \"read\"\n", op.Public())
	br.Start(t, BridgeConfig(op, web, db)+admin)
	op.Start(t, JoinConfig(br, ""))
	web.Start(t, JoinConfig(br, "")+admin+AllowConfig(op, "tcp", "80,443"))
	db.Start(t, JoinConfig(br, "")+admin+AllowConfig(web, "tcp", "5432")+"[[policy.deny]]\nfrom = \""+op.Public().String()+"\"\nproto = \"tcp\"\nports = \"22\"\n")
	for _, n := range []*Node{op, web, db} {
		n.WaitBridge(t, "registered", "udp", 10*time.Second)
	}
	console := node.ConsoleArea{Node: op.Node}
	byAddr := func(v adminapi.ConsoleView) map[string]adminapi.ConsoleNode {
		m := map[string]adminapi.ConsoleNode{}
		for _, n := range v.Nodes {
			m[n.Address] = n
		}
		return m
	}
	var v adminapi.ConsoleView
	testnet.WaitFor(t, 20*time.Second, "the console sees every node online", func() bool {
		var err error
		v, err = console.View(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		nodes := byAddr(v)
		for _, n := range []*Node{br, op, web, db} {
			if nodes[n.Addr().String()].State != "online" {
				return false
			}
		}
		return true
	})
	nodes := byAddr(v)
	if !nodes[op.Addr().String()].Self || len(nodes[web.Addr().String()].Rules) != 2 { // the allow, and admin.allow's
		t.Fatalf("view: %+v", v.Nodes)
	}
	cell := func(from, to *Node) string {
		for _, c := range v.Matrix {
			if c.From == from.Addr().String() && c.To == to.Addr().String() {
				return strings.Join(c.Allow, ",") + "|" + strings.Join(c.Deny, ",")
			}
		}
		return "none"
	}
	for _, tc := range []struct {
		from, to *Node
		want     string
	}{
		{op, web, "tcp 80,443,tcp 4680|"},
		{op, db, "tcp 4680|tcp 22"},
		{web, db, "tcp 5432|"},
		{db, web, "|"},
	} {
		if got := cell(tc.from, tc.to); got != tc.want {
			t.Errorf("%s -> %s: %q, want %q", tc.from.Name, tc.to.Name, got, tc.want)
		}
	}

	stopped := time.Now()
	db.Stop()
	testnet.WaitFor(t, 20*time.Second, "the console marks db unreachable", func() bool {
		v, _ = console.View(context.Background())
		return byAddr(v)[db.Addr().String()].State == "unreachable"
	})
	n := byAddr(v)[db.Addr().String()]
	since, err := time.Parse(time.RFC3339, n.Since)
	if err != nil || since.Before(stopped.Add(-time.Second)) || n.LastSeen == "" || n.Error == "" {
		t.Fatalf("db after it stopped: %+v", n)
	}
}

// TestConsoleActions: alice holds the organisation's key ([console]
// org_key) and the write role on the server. From her console she changes
// the server's rules, refuses to sign a policy whose test fails, signs and
// pushes one whose tests pass, and revokes mallory, whose live connection
// to the server is then cut.
func TestConsoleActions(t *testing.T) {
	l := newOrgLab(t, devRule)
	// Restart alice and the server with what the console needs.
	l.alice.Stop()
	l.alice.Start(t, JoinConfig(l.br, "")+l.orgConfig(l.alice, "")+fmt.Sprintf("[console]\norg_key = %q\n", l.keyPath))
	l.alice.Echo(t, echoPort)
	l.server.Stop()
	l.server.Start(t, JoinConfig(l.br, "")+l.orgConfig(l.server, "accept_policy = true\n")+devRule+fmt.Sprintf("[[admin.allow]]\nfrom = %q\nrole = \"write\"\n", l.alice.Public()))
	l.server.Echo(t, echoPort)
	for _, n := range []*Node{l.alice, l.server} {
		n.WaitBridge(t, "registered", "udp", 10*time.Second)
	}
	live := l.mallory.Talk(t, l.server, echoPort)
	console := node.ConsoleArea{Node: l.alice.Node}
	ctx := context.Background()

	// Another node's rule, with alice's write role there.
	testnet.WaitFor(t, 20*time.Second, "alice's console changes the server's rules", func() bool {
		_, err := console.ConsoleRule(ctx, adminapi.ConsoleRuleRequest{Node: l.server.Addr().String(), Op: "allow", From: l.eve.Public().String(), Proto: "udp", Ports: "53"})
		return err == nil
	})
	rules, err := l.server.PolicyArea().Policy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rules {
		found = found || (r.From == l.eve.Public().String() && r.Proto == "udp" && r.Ports == "53" && r.Source == "api")
	}
	if !found {
		t.Fatalf("the console's rule is not on the server: %+v", rules)
	}

	// A policy whose test fails is not signed; one whose tests pass is,
	// and reaches the server.
	bad := "[[allow]]\nfrom = \"group:acme/sales\"\nto = \"name:server.acme\"\nproto = \"tcp\"\nports = \"443\"\n[[test]]\nfrom = \"name:eve@sales.acme\"\ngroups = [\"sales\"]\nto = \"name:server.acme\"\nproto = \"tcp\"\nport = 22\nexpect = \"allow\"\n"
	if _, err := console.ConsolePolicy(ctx, adminapi.ConsolePolicyRequest{Policy: bad}); err == nil || !strings.Contains(err.Error(), "not signed") {
		t.Fatalf("a policy with a failing test: %v", err)
	}
	good := strings.Replace(bad, "port = 22", "port = 443", 1)
	res, err := console.ConsolePolicy(ctx, adminapi.ConsolePolicyRequest{Policy: good})
	if err != nil || res.Version != 1 || !res.Pushed {
		t.Fatalf("policy: %+v, %v", res, err)
	}
	testnet.WaitFor(t, 15*time.Second, "the server holds policy version 1", func() bool {
		p := orgStatus(t, l.server).Policy
		return p != nil && p.Version == 1
	})

	// Revoking mallory by serial cuts her live connection to the server.
	res, err = console.ConsoleRevoke(ctx, adminapi.ConsoleRevokeRequest{Serial: l.certs[l.mallory].SerialString()})
	if err != nil || res.Version != 1 || res.Kind != "revocation list" {
		t.Fatalf("revoke: %+v, %v", res, err)
	}
	testnet.WaitFor(t, 15*time.Second, "the server has revocation list 1", func() bool { return crlVersion(t, l.server) == 1 })
	// Status shows the list as soon as it is held; the cut follows.
	testnet.WaitFor(t, 10*time.Second, "mallory's live connection cut", func() bool {
		return testnet.RoundTrip(live, "mallory after the console revoked her", 2*time.Second) != nil
	})
	// Without the organisation's key, no signing: the server's console.
	if _, err := (node.ConsoleArea{Node: l.server.Node}).ConsoleRevoke(ctx, adminapi.ConsoleRevokeRequest{Serial: "1"}); err == nil || !strings.Contains(err.Error(), "org_key") {
		t.Fatalf("a console without the key: %v", err)
	}
}
