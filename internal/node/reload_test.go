package node

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// startFile starts tn from a file in its directory (the userspace base
// and extra), so that Reload can read it again.
func (tn *testNode) startFile(t *testing.T, extra string) {
	t.Helper()
	path := tn.writeConfig(t, extra)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t, tn.name, &tn.logs}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	n, err := New(cfg, Options{Logger: log, Version: "test", ConfigPath: path})
	if err != nil {
		t.Fatal(err)
	}
	tn.Node = n
	t.Cleanup(func() { n.Close() })
}

// writeConfig writes the userspace base and extra to tn's config file.
func (tn *testNode) writeConfig(t *testing.T, extra string) string {
	t.Helper()
	return tn.writeRaw(t, "key_file = \"node.key\"\n[tun]\nmode = \"userspace\"\n[listen]\nudp = \"0.0.0.0:0\"\n[admin]\nsocket = \"admin.sock\"\n"+extra)
}

func (tn *testNode) writeRaw(t *testing.T, doc string) string {
	t.Helper()
	path := filepath.Join(tn.dir, tn.name+".toml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	tn.doc = doc
	return path
}

func (tn *testNode) reload(t *testing.T) adminapi.ReloadResult {
	t.Helper()
	res, err := tn.Reload(context.Background())
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	t.Logf("%s reloaded: %s", tn.name, res.Summary())
	return res
}

// TestReloadPeersAndPolicy: a static peer and an allow rule added to the
// file let a refused connection through after a reload; taking the rule
// out again cuts the established connection, as a revoke does; the same
// file again changes nothing.
func TestReloadPeersAndPolicy(t *testing.T) {
	alice, bob := prepare(t, "alice"), prepare(t, "bob")
	alice.startFile(t, "")
	bob.start(t, peerDoc(alice))
	alice.echoServer(t, 7)
	if _, err := bob.dial(alice.Address(), 7, time.Second); err == nil {
		t.Fatal("connected before any rule")
	}

	alice.writeConfig(t, peerDoc(bob)+allowDoc(bob.key.Public().String(), "tcp", "7"))
	res := alice.reload(t)
	if res.Peers != (adminapi.ReloadCount{Added: 1}) || res.Policy != (adminapi.ReloadCount{Added: 1}) || len(res.NeedsRestart) != 0 {
		t.Fatalf("reload: %+v", res)
	}
	var c net.Conn
	testnet.WaitFor(t, 15*time.Second, "bob -> alice:7 after the reload", func() bool {
		var err error
		c, err = bob.dial(alice.Address(), 7, 2*time.Second)
		return err == nil
	})
	defer c.Close()
	if err := testnet.RoundTrip(c, "hello", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if peers, _ := alice.StatusArea().Peers(context.Background()); !slices.ContainsFunc(peers, func(p adminapi.Peer) bool { return p.Static && p.Name == "bob" }) {
		t.Errorf("bob is not a static peer named bob after the reload: %+v", peers)
	}

	if res := alice.reload(t); !res.Unchanged() {
		t.Errorf("the same file again: %+v", res)
	}

	// Only the rule's until changes: it stays, nothing is cut.
	alice.writeConfig(t, peerDoc(bob)+allowDoc(bob.key.Public().String(), "tcp", "7")+"until = \"2999-01-01T00:00:00Z\"\n")
	if res := alice.reload(t); res.Policy != (adminapi.ReloadCount{Added: 1, Removed: 1}) || len(res.PeersCut) != 0 {
		t.Fatalf("reload with a new until: %+v", res)
	}
	if err := testnet.RoundTrip(c, "until", 3*time.Second); err != nil {
		t.Fatalf("the connection stopped when its rule's until changed: %v", err)
	}

	alice.writeConfig(t, peerDoc(bob))
	res = alice.reload(t)
	if res.Policy != (adminapi.ReloadCount{Removed: 1}) || !slices.Equal(res.PeersCut, []string{bob.key.Public().String()}) {
		t.Fatalf("reload without the rule: %+v", res)
	}
	if err := testnet.RoundTrip(c, "after", 2*time.Second); err == nil {
		t.Fatal("the connection still carries data after its rule left the file")
	}
	if _, err := bob.dial(alice.Address(), 7, time.Second); err == nil {
		t.Fatal("bob opens a new connection after its rule left the file")
	}
	if _, ok := alice.logs.find("config reloaded", "policy: +0 -1"); !ok {
		t.Error("no log line of the reload")
	}
}

// TestReloadRefusesInvalidFile: a file that does not parse or validate
// changes nothing, and the error names the file and line; keys that need
// a restart are reported, not applied, and stay reported until then.
func TestReloadRefusesInvalidFile(t *testing.T) {
	alice := prepare(t, "alice")
	alice.startFile(t, allowDoc("*", "tcp", "7"))
	events, stop := alice.Subscribe()
	defer stop()
	for _, bad := range []string{
		allowDoc("*", "tcp", "7") + allowDoc("*", "tcp", "99999"), // a value
		allowDoc("*", "tcp", "7") + "[[peers]]\nname = \"x\"\n",   // a rule between keys
		"[policy\n", // TOML
	} {
		path := alice.writeConfig(t, bad)
		_, err := alice.Reload(context.Background())
		var re *ReloadError
		if !errors.As(err, &re) || !strings.Contains(err.Error(), path+":") {
			t.Fatalf("reload of\n%s\nerr %v, want a ReloadError with %s:LINE", bad, err, path)
		}
		if rules := alice.store.Rules(); len(rules) != 1 || rules[0].Ports.String() != "7" {
			t.Fatalf("an invalid file changed the policy: %v", rules)
		}
		if _, ok := alice.logs.find("config reload refused", path+":"); !ok {
			t.Errorf("no log line with the file and line")
		}
	}
	testnet.WaitFor(t, 5*time.Second, "a config_reloaded event saying refused", func() bool {
		select {
		case ev := <-events:
			return ev.Type == adminapi.EventConfigReloaded && strings.HasPrefix(ev.Detail, "refused: ")
		default:
			return false
		}
	})

	// The key file unreadable (a node that dropped root): a reload does
	// not read it.
	path := alice.writeConfig(t, allowDoc("*", "tcp", "7")+"[log]\nlevel = \"debug\"\n")
	alice.writeRaw(t, strings.Replace(alice.doc, "mode = \"userspace\"", "mode = \"userspace\"\nmtu = 1300", 1))
	os.Chmod(filepath.Join(alice.dir, "node.key"), 0)
	defer os.Chmod(filepath.Join(alice.dir, "node.key"), 0o600)
	res := alice.reload(t)
	if !slices.Equal(res.NeedsRestart, []string{"tun.mtu", "log.level"}) || res.Policy != (adminapi.ReloadCount{}) {
		t.Fatalf("restart-only changes of %s: %+v", path, res)
	}
	if res := alice.reload(t); !slices.Equal(res.NeedsRestart, []string{"tun.mtu", "log.level"}) {
		t.Errorf("a second reload forgets what needs a restart: %+v", res)
	}
}

// TestReloadServicesAndRoutes: an exposed service, a port forward and a
// route accept rule added to the file work after a reload, and go with
// the next.
func TestReloadServicesAndRoutes(t *testing.T) {
	alice, bob := prepare(t, "alice"), prepare(t, "bob")
	alice.startFile(t, "")
	bob.start(t, peerDoc(alice))
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	go testnet.Echo(target)
	fwd := filepath.Join(alice.dir, "fwd.sock")

	alice.writeConfig(t, allowDoc(bob.key.Public().String(), "tcp", "80")+
		"[[expose]]\nport = 80\ntarget = \""+target.Addr().String()+"\"\n"+
		"[[connect]]\nlocal = \""+fwd+"\"\nremote = \"[fc00::1]:22\"\n"+
		"[[routes.accept]]\nfrom = \"*\"\nprefix = \"10.0.0.0/8\"\n")
	res := alice.reload(t)
	if res.Expose != (adminapi.ReloadCount{Added: 1}) || res.Access != (adminapi.ReloadCount{Added: 1}) || res.Routes != (adminapi.ReloadCount{Added: 1}) {
		t.Fatalf("reload: %+v", res)
	}
	testnet.WaitFor(t, 15*time.Second, "bob -> alice:80, the service exposed by the reload", func() bool {
		c, err := bob.dial(alice.Address(), 80, 2*time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		return testnet.RoundTrip(c, "hello", 2*time.Second) == nil
	})
	if c, err := net.Dial("unix", fwd); err != nil {
		t.Errorf("the port forward added by the reload does not listen: %v", err)
	} else {
		c.Close()
	}
	routes, _ := alice.RoutesArea().Routes(context.Background())
	if len(routes.Accept) != 1 || routes.Accept[0].Prefix != "10.0.0.0/8" {
		t.Errorf("accept rules after the reload: %+v", routes.Accept)
	}

	alice.writeConfig(t, allowDoc(bob.key.Public().String(), "tcp", "80"))
	res = alice.reload(t)
	if res.Expose != (adminapi.ReloadCount{Removed: 1}) || res.Access != (adminapi.ReloadCount{Removed: 1}) || res.Routes != (adminapi.ReloadCount{Removed: 1}) {
		t.Fatalf("reload: %+v", res)
	}
	svc, _ := alice.ServicesArea().Services(context.Background())
	if len(svc.Expose)+len(svc.Connect) != 0 {
		t.Errorf("services after the reload that removed them: %+v", svc)
	}
	if _, err := bob.dial(alice.Address(), 80, time.Second); err == nil {
		t.Error("bob -> alice:80 connects after the service left the file")
	}
	if c, err := net.Dial("unix", fwd); err == nil {
		c.Close()
		t.Error("the port forward still listens after it left the file")
	}
	if routes, _ := alice.RoutesArea().Routes(context.Background()); len(routes.Accept) != 0 {
		t.Errorf("accept rules after the reload that removed them: %+v", routes.Accept)
	}
}

// TestReloadWithdrawsBeforePolicy: a reload that adds a rule admitting
// new peers to this node (no `to`) and removes an exposed service takes
// the service away before the new rule applies: the node is never more
// open than under the old file or the new.
func TestReloadWithdrawsBeforePolicy(t *testing.T) {
	alice, bob := prepare(t, "alice"), prepare(t, "bob")
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	go testnet.Echo(target)
	expose := "[[expose]]\nport = 80\ntarget = \"" + target.Addr().String() + "\"\n" +
		"[[expose]]\nport = 81\ntarget = \"" + target.Addr().String() + "\"\n"
	alice.startFile(t, allowDoc(bob.key.Public().String(), "tcp", "80")+expose)
	if svc, _ := alice.ServicesArea().Services(context.Background()); len(svc.Expose) != 2 {
		t.Fatalf("exposed at start: %+v", svc.Expose)
	}

	alice.writeConfig(t, allowDoc(bob.key.Public().String(), "tcp", "80")+allowDoc("*", "tcp", "1-65535")+
		"[[expose]]\nport = 81\ntarget = \""+target.Addr().String()+"\"\n")
	var steps []string
	alice.reloadHook = func(step string) {
		svc, _ := alice.ServicesArea().Services(context.Background())
		var ports []int
		for _, e := range svc.Expose {
			ports = append(ports, int(e.Port))
		}
		steps = append(steps, step)
		if step == "policy" && !slices.Equal(ports, []int{81}) {
			t.Errorf("when the new policy applies, exposed ports are %v, want only 81 (80 left the file)", ports)
		}
	}
	res := alice.reload(t)
	alice.reloadHook = nil
	if res.Expose != (adminapi.ReloadCount{Removed: 1}) || res.Policy != (adminapi.ReloadCount{Added: 1}) || len(res.Errors) != 0 {
		t.Fatalf("reload: %+v", res)
	}
	if !slices.Equal(steps, []string{"withdrawn", "policy"}) {
		t.Errorf("steps %v", steps)
	}
	if svc, _ := alice.ServicesArea().Services(context.Background()); len(svc.Expose) != 1 || svc.Expose[0].Port != 81 {
		t.Errorf("exposed after the reload: %+v", svc.Expose)
	}
}
