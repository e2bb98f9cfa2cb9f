package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/cli"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// capBits are the capabilities the unit may name, by number
// (linux/capability.h).
var capBits = map[string]uint{"CAP_NET_ADMIN": 12, "CAP_NET_BIND_SERVICE": 10, "CAP_NET_RAW": 13}

// TestUnitCapabilities runs `tomoe up` in kernel mode as a user that is
// not root with exactly the capabilities tomoe.service gives it
// (AmbientCapabilities, CapabilityBoundingSet), in a network namespace,
// with a config that uses every privileged path: the TUN device, the DNS
// server on port 53, a service exposed on port 22, uid policy routing
// (ip rules), nftables (stealth), a route offered with masquerade (the
// forwarding sysctl). It comes up and cleans up; without any one of the
// unit's capabilities it does not come up. systemd itself is not run
// here (no systemd as PID 1): setpriv sets what the unit's settings set.
func TestUnitCapabilities(t *testing.T) {
	testnet.RequireRoot(t)
	for _, tool := range []string{"setpriv", "unshare", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	unit, err := os.ReadFile("files/tomoe.service")
	if err != nil {
		t.Fatal(err)
	}
	caps := unitList(t, unit, "AmbientCapabilities")
	if bounding := unitList(t, unit, "CapabilityBoundingSet"); strings.Join(bounding, " ") != strings.Join(caps, " ") {
		t.Fatalf("CapabilityBoundingSet %v differs from AmbientCapabilities %v", bounding, caps)
	}
	var want uint64
	for _, c := range caps {
		bit, ok := capBits[c]
		if !ok {
			t.Fatalf("the unit names %s: add it to capBits and to this test's reasons", c)
		}
		want |= 1 << bit
	}

	// A directory the unprivileged user can reach (t.TempDir is 0700).
	dir, err := os.MkdirTemp("", "tomoe-caps-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "tomoe")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/tomoe").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// Links the binary's code into this test binary, so that Go's test
	// cache reruns this test when that code changes (see e2e's TestMain).
	if code := cli.Main([]string{"version"}, strings.NewReader(""), io.Discard, io.Discard); code != 0 {
		t.Fatalf("tomoe version, in process: exit %d", code)
	}
	const uid = 46100 // no such user needed: tomoe checks ownership by number

	t.Run("unit's set", func(t *testing.T) {
		ns := testnet.NewNetns(t, "caps")
		n := startAs(t, ns, dir, bin, uid, caps)
		testnet.WaitFor(t, 20*time.Second, "the node's admin socket", func() bool {
			if n.exited() {
				t.Fatalf("tomoe up exited: %s", n.log())
			}
			_, err := os.Stat(n.socket)
			return err == nil
		})
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range []string{
			fmt.Sprintf("Uid:\t%d\t%d\t%d\t%d", uid, uid, uid, uid),
			fmt.Sprintf("CapEff:\t%016x", want),
			fmt.Sprintf("CapBnd:\t%016x", want),
			fmt.Sprintf("CapAmb:\t%016x", want),
		} {
			if !bytes.Contains(status, []byte(line+"\n")) {
				t.Errorf("/proc/PID/status lacks %q:\n%s", line, status)
			}
		}
		// What needed the privileges is in place.
		if out := ns.Run("ip", "-6", "addr", "show", "dev", "tomoe0"); !strings.Contains(out, "fc00::53/128") {
			t.Errorf("tomoe0's addresses:\n%s", out)
		}
		listening := ns.Run("ss", "-Hltun")
		for _, l := range []string{"[fc00::53]%tomoe0:53", "]%tomoe0:22"} {
			if !strings.Contains(listening, l) {
				t.Errorf("nothing listens on %s:\n%s", l, listening)
			}
		}
		if out := ns.Run("ip", "rule"); !strings.Contains(out, "uidrange 0-0") {
			t.Errorf("no uid rule:\n%s", out)
		}
		if out := ns.Run("cat", "/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(out) != "1" {
			t.Errorf("ip_forward = %q, want 1 (a route is offered)", out)
		}
		if out := ns.Run("nft", "list", "tables"); !strings.Contains(out, "table inet tomoe") {
			t.Errorf("no nftables table:\n%s", out)
		}
		// And is undone on SIGTERM (systemctl stop).
		n.cmd.Process.Signal(syscall.SIGTERM)
		testnet.WaitFor(t, 10*time.Second, "tomoe up to exit", n.exited)
		if err := n.err; err != nil {
			t.Errorf("tomoe up: %v\n%s", err, n.log())
		}
		if out := ns.Run("cat", "/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(out) != "0" {
			t.Errorf("after stop ip_forward = %q, want 0 again", out)
		}
		if out := ns.Run("nft", "list", "tables"); strings.Contains(out, "tomoe") {
			t.Errorf("after stop the nftables table is still there:\n%s", out)
		}
	})

	for _, drop := range caps {
		t.Run("without "+drop, func(t *testing.T) {
			var fewer []string
			for _, c := range caps {
				if c != drop {
					fewer = append(fewer, c)
				}
			}
			ns := testnet.NewNetns(t, "nocap")
			n := startAs(t, ns, dir, bin, uid, fewer)
			testnet.WaitFor(t, 20*time.Second, "tomoe up to give up", func() bool {
				if _, err := os.Stat(n.socket); err == nil {
					t.Fatalf("tomoe up came up without %s: the unit would not need it\n%s", drop, n.log())
				}
				return n.exited()
			})
			if log := n.log(); n.err == nil || !(strings.Contains(log, "permission denied") || strings.Contains(log, "operation not permitted")) {
				t.Errorf("without %s: %v, want a permission error\n%s", drop, n.err, n.log())
			}
		})
	}
}

// unitList returns the space-separated values of key in the unit.
func unitList(t *testing.T, unit []byte, key string) []string {
	t.Helper()
	for _, line := range strings.Split(string(unit), "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			return strings.Fields(v)
		}
	}
	t.Fatalf("tomoe.service has no %s", key)
	return nil
}

type capNode struct {
	cmd    *exec.Cmd
	socket string
	out    *testnet.SyncBuffer
	done   chan struct{}
	err    error
}

func (n *capNode) exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

func (n *capNode) log() string { return n.out.String() }

// startAs starts `tomoe up` in ns as uid with only caps (inheritable,
// ambient, bounding; no new privileges), as the unit's User= and
// AmbientCapabilities= do. Each run has its own state under dir.
func startAs(t *testing.T, ns *testnet.Netns, dir, bin string, uid int, caps []string) *capNode {
	t.Helper()
	run, err := os.MkdirTemp(dir, "run-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(run, uid, uid); err != nil {
		t.Fatal(err)
	}
	os.Chmod(run, 0o700)
	cfg := filepath.Join(dir, filepath.Base(run)+".toml")
	n := &capNode{socket: filepath.Join(run, "admin.sock"), out: &testnet.SyncBuffer{}, done: make(chan struct{})}
	err = os.WriteFile(cfg, []byte(`key_file = "`+run+`/node.key"
allowed_local_users = ["root"]
[tun]
mode = "kernel"
[listen]
udp = "0.0.0.0:4610"
stealth = true
[admin]
socket = "`+n.socket+`"
[[routes.offer]]
prefix = "192.0.2.0/24"
masquerade = true
[[expose]]
port = 22
target = "127.0.0.1:2222"
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	set := "-all"
	for _, c := range caps {
		set += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	// udev makes /dev/net/tun 0666 on a normal system (the capability,
	// not the file mode, guards creating an interface); where it is not
	// (some containers), a 0666 node for the same device is bound over
	// it in a private mount namespace.
	script := `set -e
if [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
	d=$(mktemp -d)
	mount -t tmpfs tmpfs "$d"
	mknod -m 666 "$d/tun" c 10 200
	mount --bind "$d/tun" /dev/net/tun
fi
exec "$@"
`
	args := []string{"--mount", "--propagation", "private", "sh", "-c", script, "sh",
		"ip", "netns", "exec", ns.Name,
		"setpriv", "--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(uid), "--clear-groups",
		"--inh-caps=" + set, "--ambient-caps=" + set, "--bounding-set=" + set, "--no-new-privs",
		bin, "up", "-c", cfg}
	n.cmd = exec.Command("unshare", args...)
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.err = n.cmd.Wait(); close(n.done) }()
	t.Cleanup(func() {
		if !n.exited() {
			n.cmd.Process.Kill()
			<-n.done
		}
	})
	return n
}
