package vlab

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/cli"
	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// tomoe runs the command line against n's admin socket.
func tomoe(t *testing.T, n *Node, want int, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	full := append([]string{"--socket", filepath.Join(n.Dir, "admin.sock")}, args...)
	if code := cli.Main(full, strings.NewReader(""), &out, &errb); code != want {
		t.Fatalf("tomoe %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out.String(), errb.String())
	}
	t.Logf("tomoe %s\n%s%s", strings.Join(args, " "), out.String(), errb.String())
	return out.String()
}

// TestJoinByRequestCLI: the enrolment flow as an administrator types it,
// through the nodes' admin sockets: `tomoe org join` on two new nodes,
// `tomoe org requests`, `tomoe org approve` (name and groups from the
// request) and `tomoe org reject` beside the key file, `tomoe org status`.
func TestJoinByRequestCLI(t *testing.T) {
	lab := New(t, vnetConfig())
	keyFile := filepath.Join(t.TempDir(), "acme.key")
	s, err := org.Init("acme", keyFile)
	if err != nil {
		t.Fatal(err)
	}
	br := lab.NewNode("bridge", lab.AddHost("bridge"))
	admin := lab.NewNode("admin", lab.AddHost("admin"))
	web := lab.NewNode("web", lab.AddHost("web"))
	rogue := lab.NewNode("rogue", lab.AddHost("rogue"))
	br.Start(t, BridgeConfig(admin, web, rogue))
	for _, n := range []*Node{admin, web, rogue} {
		n.Start(t, JoinConfig(br, ""))
		n.WaitBridge(t, "registered", "udp", 10*time.Second)
	}
	pub := s.Public().String()

	out := tomoe(t, web, 0, "org", "join", "--org", pub, "--name", "web1.acme", "--groups", "web")
	if !strings.Contains(out, ": held") {
		t.Fatalf("join output: %s", out)
	}
	tomoe(t, rogue, 0, "org", "join", "--org", pub, "--name", "db.acme", "--groups", "admins")
	tomoe(t, web, 2, "org", "join", "--org", "not-a-key", "--name", "web1.acme")
	st := tomoe(t, web, 0, "org", "status")
	if !strings.Contains(st, "join request: web1.acme") {
		t.Fatalf("status: %s", st)
	}

	var list adminapi.OrgRequestsResponse
	if err := json.Unmarshal([]byte(tomoe(t, admin, 0, "org", "requests", "--org-key", keyFile, "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Requests) != 2 {
		t.Fatalf("requests: %+v", list)
	}

	out = tomoe(t, admin, 0, "org", "approve", "--org-key", keyFile, web.Public().String())
	if !strings.Contains(out, "as web1.acme (groups web") || !strings.Contains(out, ": delivered") {
		t.Fatalf("approve output: %s", out)
	}
	out = tomoe(t, admin, 0, "org", "reject", "--org-key", keyFile, rogue.Public().String())
	if !strings.Contains(out, ": removed") {
		t.Fatalf("reject output: %s", out)
	}
	// Neither a missing key file nor an unknown node approves anything.
	tomoe(t, admin, 1, "org", "approve", "--org-key", filepath.Join(t.TempDir(), "none.key"), web.Public().String())
	tomoe(t, admin, 1, "org", "approve", "--org-key", keyFile, admin.Public().String())

	testnet.WaitFor(t, 10*time.Second, "web holds its certificate", func() bool {
		var orgs []adminapi.OrgStatus
		var out, errb bytes.Buffer
		if cli.Main([]string{"--socket", filepath.Join(web.Dir, "admin.sock"), "org", "status", "--json"}, strings.NewReader(""), &out, &errb) != 0 {
			return false
		}
		if json.Unmarshal(out.Bytes(), &orgs) != nil || len(orgs) != 1 || orgs[0].Cert == nil {
			return false
		}
		return orgs[0].Cert.Name == "web1.acme" && orgs[0].Cert.Source == "join" && orgs[0].Cert.State == "valid"
	})
	list = adminapi.OrgRequestsResponse{}
	if err := json.Unmarshal([]byte(tomoe(t, admin, 0, "org", "requests", "--org-key", keyFile, "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Requests) != 1 || list.Requests[0].Node != rogue.Public().String() || list.Requests[0].State != "rejected" {
		t.Fatalf("after approve and reject: %+v", list.Requests)
	}
	testnet.WaitFor(t, 5*time.Second, "web's state file keeps its certificate", func() bool {
		b, err := os.ReadFile(filepath.Join(web.Dir, "orgs.json"))
		return err == nil && strings.Contains(string(b), "tomoe-cert:") && !strings.Contains(string(b), "requests")
	})
	if fi, err := os.Stat(filepath.Join(web.Dir, "orgs.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode: %v %v", fi, err)
	}
}
