package vlab

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// TestOrgMemberOfTwoAdmittedBySecond: a node in two organisations
// presents both certificates; a node that trusts only the second one
// admits it by its group there, though the first certificate it hears is
// of an organisation it does not know. The server knows the client only
// from its handshake (no bridge introduces it), so the client is admitted
// pending its certificate.
func TestOrgMemberOfTwoAdmittedBySecond(t *testing.T) {
	lab := New(t, vnetConfig())
	var signers []*org.Signer
	for _, name := range []string{"acme", "globex"} {
		s, err := org.Init(name, filepath.Join(t.TempDir(), name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		signers = append(signers, s)
	}
	acme, globex := signers[0], signers[1]
	server := lab.NewNode("server", lab.AddHost("server"))
	both := lab.NewNode("both", lab.AddHost("both"))

	block := func(n *Node, s *org.Signer, name, group string) string {
		c, err := s.SignCert(org.CertRequest{Node: n.Public(), Name: name, Groups: []string{group}, TTL: time.Hour}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		file := s.Name() + ".cert"
		if err := os.WriteFile(filepath.Join(n.Dir, file), []byte(c.Text()+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("[[orgs]]\nname = %q\npublic_key = %q\ncert = %q\n", s.Name(), s.Public(), file)
	}
	server.Start(t, block(server, globex, "server.globex", "servers")+
		"[[policy.allow]]\nfrom = \"group:globex/ops\"\nproto = \"tcp\"\nports = \"7\"\n")
	server.Echo(t, echoPort)
	// acme first: its certificate is the first the server hears.
	both.Start(t, fmt.Sprintf("[[peers]]\npublic_key = %q\nendpoint = %q\n", server.Public(), server.Endpoint())+
		block(both, acme, "both.acme", "dev")+block(both, globex, "both@ops.globex", "ops"))
	c := both.Talk(t, server, echoPort)
	// The session is not cut once the certificates have been heard.
	if err := testnet.RoundTrip(c, "again", 5*time.Second); err != nil {
		t.Fatalf("the member's connection after its certificates were heard: %v", err)
	}
}
