package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// TestConsoleNetwork: the console with the real binary in netns. ops holds
// acme's key ([console] org_key) and the write role on web, db and app
// (by its group, acme/ops); a bridge carries everyone. The console lists
// every node online with who may open what, marks db unreachable once it
// stops, revokes app (its live connection to web is cut), and lists and
// approves a new node's enrolment request, after which the new member
// reaches web by its group.
func TestConsoleNetwork(t *testing.T) {
	parallel(t, 55*time.Second)
	testnet.RequireRoot(t)
	lan := testnet.NewLAN(t, "bridge", "ops", "web", "db", "app", "newbie")
	node := func(name string) *kernelNode {
		return &kernelNode{nodeDir: newNodeDir(t, name), host: lan.Hosts[name]}
	}
	br := node("bridge")
	ops, web, db, app, newbie := node("ops"), node("web"), node("db"), node("app"), node("newbie")
	acme := newOrgKey(t, t.TempDir(), "acme")
	keyCopy := ops.dir + "/acme.key" // the console's own copy, 0600
	if b, err := os.ReadFile(acme.file); err != nil || os.WriteFile(keyCopy, b, 0o600) != nil {
		t.Fatal("copy the organisation key", err)
	}
	if st, err := os.ReadFile(acme.file + ".state"); err == nil {
		os.WriteFile(keyCopy+".state", st, 0o600)
	}
	cert := map[*kernelNode]string{
		ops: acme.sign(t, ops.nodeDir, "ops1.acme", "ops"),
		web: acme.sign(t, web.nodeDir, "web1.acme", "web"),
		db:  acme.sign(t, db.nodeDir, "db1.acme", "db"),
		app: acme.sign(t, app.nodeDir, "app1.acme", "app"),
	}
	var shown struct {
		Serial string `json:"serial"`
	}
	jsonOut(t, &shown, "cert", "show", cert[app])

	var allow strings.Builder
	for _, n := range []*kernelNode{ops, web, db, app, newbie} {
		fmt.Fprintf(&allow, "[[bridge.allow]]\npublic_key = %q\n", n.pub())
	}
	br.write(t, "[tun]\nmode = \"userspace\"\n[listen]\nudp = \"0.0.0.0:4610\"\n[bridge]\nenable = true\n"+allow.String()+
		fmt.Sprintf("[[admin.allow]]\nfrom = %q\nrole = \"read\"\n", ops.pub()))
	br.proc = br.host.Start(t, "bridge", tomoeBin, "up", "-c", br.config())
	br.waitReady(t, func() bool { return !br.proc.Exited() })
	join := bridgeBlock(br.nodeDir, br.endpoint(), "")
	admins := "[[admin.allow]]\nfrom = \"group:acme/ops\"\nrole = \"write\"\n"

	ops.body = join + acme.block(cert[ops], "") + fmt.Sprintf("[console]\norg_key = %q\n", keyCopy)
	web.body = join + acme.block(cert[web], "") + admins + ruleBlock("allow", "group:acme/app", "", "tcp", "7")
	db.body = join + acme.block(cert[db], "") + admins + ruleBlock("allow", "group:acme/app", "", "tcp", "7")
	app.body = join + acme.block(cert[app], "") + admins
	newbie.body = join + acme.block("", "")
	for _, n := range []*kernelNode{ops, web, db, app} {
		n.launch(t)
	}
	for _, n := range []*kernelNode{ops, web, db, app} {
		n.ready(t)
		n.waitBridge(t, "registered", "udp", 20*time.Second)
	}
	web.listenTCP(t, 7)
	db.listenTCP(t, 7)

	view := func() (adminapi.ConsoleView, map[string]adminapi.ConsoleNode) {
		var v adminapi.ConsoleView
		ops.cliJSON(t, &v, "console", "--json")
		m := map[string]adminapi.ConsoleNode{}
		for _, n := range v.Nodes {
			m[n.Address] = n
		}
		return v, m
	}
	t.Run("lists every node online", func(t *testing.T) {
		testnet.WaitFor(t, 60*time.Second, "the console sees every node online", func() bool {
			_, m := view()
			for _, n := range []*kernelNode{br, ops, web, db, app} {
				if m[n.addr()].State != "online" {
					return false
				}
			}
			return true
		})
		v, m := view()
		if v.Signs != "acme" || m[web.addr()].Name != "web1.acme" {
			t.Fatalf("view: signs %q, web %+v", v.Signs, m[web.addr()])
		}
		found := false
		for _, c := range v.Matrix {
			if c.From == app.addr() && c.To == web.addr() {
				found = strings.Join(c.Allow, ",") == "tcp 7,tcp 4680" || strings.Join(c.Allow, ",") == "tcp 7"
			}
		}
		if !found {
			t.Fatalf("the matrix does not say app may open tcp 7 on web: %+v", v.Matrix)
		}
		out := mustRun(t, "console", "-c", ops.config())
		if !strings.Contains(out, "web1.acme") || !strings.Contains(out, "who may open what") {
			t.Fatalf("tomoe console:\n%s", out)
		}
	})

	t.Run("a stopped node is unreachable since then", func(t *testing.T) {
		db.stop(t)
		stopped := time.Now()
		testnet.WaitFor(t, 30*time.Second, "db unreachable", func() bool {
			_, m := view()
			return m[db.addr()].State == "unreachable"
		})
		_, m := view()
		since, err := time.Parse(time.RFC3339, m[db.addr()].Since)
		if err != nil || since.Before(stopped.Add(-2*time.Second)) || m[db.addr()].LastSeen == "" {
			t.Fatalf("db: %+v", m[db.addr()])
		}
	})

	t.Run("revoking a member cuts its connections", func(t *testing.T) {
		live := app.reach(t, web.addr(), 7)
		defer live.Close()
		out := ops.cli(t, "console", "revoke", shown.Serial)
		if !strings.Contains(out, "version 1") {
			t.Fatalf("console revoke: %s", out)
		}
		testnet.WaitFor(t, 20*time.Second, "app's live connection to web cut", func() bool {
			return testnet.RoundTrip(live, "app after its revocation", 2*time.Second) != nil
		})
		app.refused(t, web.addr(), 7, "app is revoked")
	})

	t.Run("an enrolment request approved from the console's node", func(t *testing.T) {
		newbie.launch(t)
		newbie.ready(t)
		newbie.waitBridge(t, "registered", "udp", 20*time.Second)
		newbie.cli(t, "org", "join", "--org", acme.pub, "--name", "new1.acme", "--groups", "app")
		// The console's own endpoints (its web page's): the node signs the
		// listing query and the certificate with [console] org_key.
		curl := func(args ...string) string {
			out, err := ops.host.Try(append([]string{"curl", "-sf", "--unix-socket", ops.socket()}, args...)...)
			if err != nil {
				t.Fatalf("curl %v: %v\n%s", args, err, out)
			}
			return out
		}
		testnet.WaitFor(t, 20*time.Second, "the request listed by the console", func() bool {
			return strings.Contains(curl("http://tomoe/v1/console/requests"), newbie.pub().String())
		})
		out := curl("-H", "Content-Type: application/json", "-d", fmt.Sprintf(`{"node":%q}`, newbie.pub()), "http://tomoe/v1/console/approve")
		if !strings.Contains(out, `"serial"`) {
			t.Fatalf("console approve: %s", out)
		}
		testnet.WaitFor(t, 20*time.Second, "newbie holds its certificate", func() bool {
			c := newbie.orgStatus(t, "acme").Cert
			return c != nil && c.Name == "new1.acme" && c.State == "valid"
		})
		testnet.WaitFor(t, 20*time.Second, "newbie reaches web by its group", func() bool {
			c, err := newbie.dialAny(web.addr(), 7, 3*time.Second)
			if err != nil {
				return false
			}
			defer c.Close()
			return testnet.RoundTrip(c, "newbie", 2*time.Second) == nil
		})
	})
}
