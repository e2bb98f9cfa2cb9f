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
