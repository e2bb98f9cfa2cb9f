package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/testnet"
)

// capNetBindService and capNetAdmin are capability numbers
// (linux/capability.h): the only capabilities a node keeps after giving
// up root.
const (
	capNetBindService = 10
	capNetAdmin       = 12
	keptCaps          = 1<<capNetAdmin | 1<<capNetBindService
)

// testUser creates a system user (and its group) for the test and removes
// it afterwards; it returns the name, uid and gid.
func testUser(t *testing.T, name string) (string, int, int) {
	t.Helper()
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("needs useradd")
	}
	exec.Command("userdel", name).Run() // left by a killed run
	if out, err := exec.Command("useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v\n%s", name, err, out)
		}
	})
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return name, uid, gid
}

// threadCreds checks every thread of pid: all its uids and gids are
// uid and gid, no supplementary groups, the permitted and effective sets
// are exactly keptCaps, the bounding set too, nothing inheritable or
// ambient, and no_new_privs. It returns what is wrong, "" if nothing.
func threadCreds(pid, uid, gid int) string {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if len(tasks) == 0 {
		return fmt.Sprintf("process %d has no threads in /proc", pid)
	}
	var bad []string
	for _, path := range tasks {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // the thread exited
		}
		f := map[string]string{}
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				f[k] = strings.Join(strings.Fields(v), " ")
			}
		}
		hex := func(k string) uint64 {
			v, err := strconv.ParseUint(f[k], 16, 64)
			if err != nil {
				bad = append(bad, fmt.Sprintf("%s: %s %q", path, k, f[k]))
			}
			return v
		}
		ids := func(n int) string { return strings.TrimSpace(strings.Repeat(strconv.Itoa(n)+" ", 4)) }
		for _, c := range []struct {
			ok   bool
			what string
		}{
			{f["Uid"] == ids(uid), "Uid " + f["Uid"]},
			{f["Gid"] == ids(gid), "Gid " + f["Gid"]},
			{f["Groups"] == "", "Groups " + f["Groups"]},
			{hex("CapEff") == keptCaps, "CapEff " + f["CapEff"]},
			{hex("CapPrm") == keptCaps, "CapPrm " + f["CapPrm"]},
			{hex("CapBnd") == keptCaps, "CapBnd " + f["CapBnd"]},
			{hex("CapInh") == 0, "CapInh " + f["CapInh"]},
			{hex("CapAmb") == 0, "CapAmb " + f["CapAmb"]},
			{f["NoNewPrivs"] == "1", "NoNewPrivs " + f["NoNewPrivs"]},
		} {
			if !c.ok {
				bad = append(bad, path+": "+c.what)
			}
		}
	}
	return strings.Join(bad, "\n")
}

// privNode is a kernel-mode node started as root with run.user set: its
// key, state and admin socket in a directory of its own named tomoe (which
// it hands to the user), its config file beside that directory (which it
// must not).
type privNode struct {
	*kernelNode
	cfg string
}

func newPrivNode(t *testing.T, name string, host *testnet.Host) *privNode {
	t.Helper()
	top := newNodeDir(t, name)
	os.Chmod(top.dir, 0o755) // the user must pass through it
	state := filepath.Join(top.dir, "tomoe")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(top.dir, "node.key"), filepath.Join(state, "node.key")); err != nil {
		t.Fatal(err)
	}
	nd := &nodeDir{name: name, dir: state, key: top.key}
	return &privNode{kernelNode: &kernelNode{nodeDir: nd, host: host}, cfg: filepath.Join(top.dir, "tomoe.toml")}
}

func (p *privNode) launch(t *testing.T, runUser, body string) {
	t.Helper()
	p.writeConfig(t, runUser, body)
	p.proc = p.host.Start(t, p.name, tomoeBin, "up", "-c", p.cfg)
}

// writeConfig writes the config file: root's, readable by the run user's
// group (0640), as a reload after the drop needs.
func (p *privNode) writeConfig(t *testing.T, runUser, body string) {
	t.Helper()
	doc := fmt.Sprintf("key_file = %q\n[run]\nuser = %q\n[admin]\nsocket = %q\n[tun]\nmode = \"kernel\"\nname = \"tomoe0\"\n[listen]\nudp = \"0.0.0.0:4610\"\nstealth = true\n%s",
		filepath.Join(p.dir, "node.key"), runUser, p.socket(), body)
	if err := os.WriteFile(p.cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if u, err := user.Lookup(runUser); err == nil {
		gid, _ := strconv.Atoi(u.Gid)
		os.Chown(p.cfg, 0, gid)
		os.Chmod(p.cfg, 0o640)
	}
}

// TestPrivilegeDrop: two kernel-mode nodes started as root with [run] user
// set give up root once they are up: every thread of each runs as that
// user with only CAP_NET_ADMIN and CAP_NET_BIND_SERVICE (bounding set
// too), nothing inheritable or ambient, no_new_privs. The overlay still
// passes ping6 both ways, and the changes made after the drop still take
// effect: a policy revocation cuts a peer off and an allow lets it back,
// a service exposed live on port 80 (below 1024) is reached, a route
// offered live gets its nftables masquerade, a SIGHUP reload applies a
// new rule, and the state files are written; at SIGTERM the node removes its TUN device, nftables table,
// and admin socket as that user.
func TestPrivilegeDrop(t *testing.T) {
	parallel(t, 25*time.Second)
	testnet.RequireRoot(t)
	name, uid, gid := testUser(t, "tomoe-e2e-drop")
	lan := testnet.NewLAN(t, "pda", "pdb")
	a := newPrivNode(t, "pda", lan.Hosts["pda"])
	b := newPrivNode(t, "pdb", lan.Hosts["pdb"])
	aBody := peerBlock(b.nodeDir, b.endpoint()) + allowBlock(b.addr(), "icmp", "")
	a.launch(t, name, aBody)
	b.launch(t, name, peerBlock(a.nodeDir, a.endpoint())+allowBlock(a.addr(), "icmp", ""))
	for _, n := range []*privNode{a, b} {
		n.ready(t)
		n.proc.WaitOutput(t, "gave up root", 10*time.Second)
	}
	started := time.Now()

	t.Run("every thread runs as the user with only the kept capabilities", func(t *testing.T) {
		if threadCreds(os.Getpid(), uid, gid) == "" {
			t.Fatal("the check passes this test's own process, which runs as root")
		}
		for _, n := range []*privNode{a, b} {
			if bad := threadCreds(n.proc.Pid(), uid, gid); bad != "" {
				t.Errorf("%s:\n%s", n.name, bad)
			}
			// And the node says so in its status.
			r := n.status(t).RunsAs
			if r == nil || r.UID != uid || r.User != name || r.GID != gid || strings.Join(r.Caps, ",") != "cap_net_bind_service,cap_net_admin" || !r.NoNewPrivs {
				t.Errorf("%s: status runs_as = %+v", n.name, r)
			}
		}
	})

	ping := func(from, to *privNode) error {
		out, err := from.host.Try("ping", "-6", "-c", "1", "-W", "2", to.addr())
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	t.Run("ping6 both ways", func(t *testing.T) {
		for _, pair := range [][2]*privNode{{a, b}, {b, a}} {
			var err error
			testnet.WaitFor(t, 20*time.Second, pair[0].name+" pings "+pair[1].name, func() bool { err = ping(pair[0], pair[1]); return err == nil })
		}
	})

	t.Run("a revocation and an allow after the drop take effect", func(t *testing.T) {
		a.cli(t, "policy", "revoke", b.addr())
		if err := ping(b, a); err == nil {
			t.Fatal("b still pings a after a revoked it")
		}
		a.cli(t, "policy", "allow", b.addr(), "--proto", "icmp")
		testnet.WaitFor(t, 20*time.Second, "b to ping a again", func() bool { return ping(b, a) == nil })
	})

	t.Run("a service exposed after the drop on port 80", func(t *testing.T) {
		// The service listens on b's loopback; b exposes it on its
		// overlay address, port 80: a bind below 1024 as the user.
		var ln net.Listener
		var err error
		b.host.Do(func() { ln, err = net.Listen("tcp4", "127.0.0.1:8080") })
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go testnet.Echo(ln)
		b.cli(t, "expose", "add", "80", "127.0.0.1:8080")
		b.cli(t, "policy", "allow", a.addr(), "--proto", "tcp", "--ports", "80")
		var c net.Conn
		testnet.WaitFor(t, 20*time.Second, "a to reach b's port 80", func() bool {
			c, err = a.dialTCP(b.addr(), 80, 2*time.Second)
			return err == nil
		})
		defer c.Close()
		if err := testnet.RoundTrip(c, "through a service exposed by a node without root", 5*time.Second); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a route offered after the drop gets its nftables masquerade", func(t *testing.T) {
		b.cli(t, "routes", "offer", "192.0.2.0/24", "--masquerade")
		testnet.WaitFor(t, 10*time.Second, "the masquerade rule", func() bool {
			out, _ := b.host.Try("nft", "list", "ruleset")
			return strings.Contains(out, "192.0.2.0/24 masquerade")
		})
		if fw, _ := b.host.Try("cat", "/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(fw) != "1" {
			t.Errorf("ip_forward = %q after a route was offered", fw)
		}
	})

	t.Run("a reload after the drop", func(t *testing.T) {
		// SIGHUP: the node, no longer root, reads its config again (root's,
		// group-readable) and applies a new rule.
		a.listenTCP(t, 7)
		if c, err := b.dialTCP(a.addr(), 7, 2*time.Second); err == nil {
			c.Close()
			t.Fatal("b reached a's port 7 before any rule allowed it")
		}
		a.writeConfig(t, name, aBody+allowBlock(b.addr(), "tcp", "7"))
		if err := a.proc.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		var c net.Conn
		var err error
		testnet.WaitFor(t, 20*time.Second, "b to reach a's port 7 after the reload", func() bool {
			c, err = b.dialTCP(a.addr(), 7, 2*time.Second)
			return err == nil
		})
		defer c.Close()
		if err := testnet.RoundTrip(c, "a rule reloaded by a node without root", 5*time.Second); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("state files written by the user after the drop", func(t *testing.T) {
		for _, n := range []*privNode{a, b} {
			for _, f := range []string{"policy.json", "node.key"} {
				fi, err := os.Stat(filepath.Join(n.dir, f))
				if err != nil {
					t.Fatalf("%s: %v", n.name, err)
				}
				if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid {
					t.Errorf("%s: %s owned by uid %d, want %d", n.name, f, st.Uid, uid)
				}
				if f == "policy.json" && fi.ModTime().Before(started.Add(-time.Second)) {
					t.Errorf("%s: policy.json not written since the drop", n.name)
				}
				if f == "node.key" && fi.Mode().Perm() != 0o600 {
					t.Errorf("%s: node.key has mode %04o", n.name, fi.Mode().Perm())
				}
			}
		}
		if _, err := os.Stat(filepath.Join(b.dir, "services.json")); err != nil {
			t.Errorf("b's live service and route were not kept: %v", err)
		}
	})

	t.Run("SIGTERM cleans up as the user", func(t *testing.T) {
		b.stop(t)
		if out, _ := b.host.Try("ip", "link", "show", "tomoe0"); !strings.Contains(out, "does not exist") {
			t.Errorf("tomoe0 still there:\n%s", out)
		}
		if out, _ := b.host.Try("nft", "list", "tables"); strings.Contains(out, "tomoe") {
			t.Errorf("nftables table still there:\n%s", out)
		}
		if fw, _ := b.host.Try("cat", "/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(fw) != "0" {
			t.Errorf("ip_forward = %q after stop, want 0 again", fw)
		}
		if _, err := os.Lstat(b.socket()); err == nil {
			t.Errorf("admin socket %s left behind", b.socket())
		}
	})
}
