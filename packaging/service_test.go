package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/testnet"
)

// TestService boots systemd as PID 1 of a container made here (its own
// PID, mount, network, UTS and IPC namespaces; the root an overlay of this
// machine's / whose writes go to a tmpfs), installs the .deb with dpkg and
// runs `systemctl enable --now tomoe`: the node runs under the packaged
// unit with all its sandboxing, as the user tomoe with only its two
// capabilities, serves the admin socket to the group tomoe, and still
// programs forwarding, nftables and a service on port 22 after a restart.
func TestService(t *testing.T) {
	testnet.RequireRoot(t)
	for _, tool := range []string{"dpkg", "unshare", "nsenter", "chroot", "setpriv", "/lib/systemd/systemd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	_, deb := testDebs(t)
	c := bootSystemd(t, deb)
	testnet.WaitFor(t, 90*time.Second, "systemd to finish booting", func() bool {
		out, _ := c.run("systemctl is-system-running")
		return out == "running" || out == "degraded"
	})

	c.ok("systemctl enable --now tomoe")
	c.waitUp(t)
	pid := c.ok("systemctl show -p MainPID --value tomoe")
	status := c.ok("cat /proc/" + pid + "/status")
	uid := c.ok("id -u tomoe")
	for _, line := range []string{
		fmt.Sprintf("Uid:\t%s\t%s\t%s\t%s", uid, uid, uid, uid),
		"CapEff:\t0000000000001400", // CAP_NET_ADMIN, CAP_NET_BIND_SERVICE
		"CapBnd:\t0000000000001400",
		"NoNewPrivs:\t1",
		"Seccomp:\t2",
	} {
		if !strings.Contains(status, line+"\n") {
			t.Errorf("the service's /proc/PID/status lacks %q:\n%s", line, status)
		}
	}
	for path, want := range map[string]string{
		"/run/tomoe":              "750 tomoe tomoe",
		"/run/tomoe/admin.sock":   "660 tomoe tomoe",
		"/var/lib/tomoe":          "700 tomoe tomoe",
		"/var/lib/tomoe/node.key": "600 tomoe tomoe",
	} {
		if got := c.ok("stat -c '%a %U %G' " + path); got != want {
			t.Errorf("%s: %q, want %q", path, got, want)
		}
	}
	// A member of the group tomoe uses the admin socket; another user cannot.
	c.ok("useradd -G tomoe alice && useradd bob")
	if got := c.ok("setpriv --reuid alice --regid alice --init-groups tomoe --socket /run/tomoe/admin.sock status"); !strings.Contains(got, "mode:         kernel") {
		t.Errorf("tomoe status as a member of the group tomoe:\n%s", got)
	}
	if out, rc := c.run("setpriv --reuid bob --regid bob --init-groups tomoe --socket /run/tomoe/admin.sock status"); rc == 0 {
		t.Errorf("bob, not in the group tomoe, reached the admin socket:\n%s", out)
	}
	// The service user checks the config with its own key in place.
	c.ok("setpriv --reuid tomoe --regid tomoe --init-groups tomoe config check -c /etc/tomoe/tomoe.toml")

	// A gateway: forwarding (a sysctl under /proc/sys/net, writable in the
	// sandbox), nftables, uid rules and a privileged port, after a restart.
	c.ok(`sed -i '1i allowed_local_users = ["root"]' /etc/tomoe/tomoe.toml`)
	c.ok(`sed -i 's/^udp = .*/&\nstealth = true/' /etc/tomoe/tomoe.toml`)
	c.ok(`printf '[[routes.offer]]\nprefix = "192.0.2.0/24"\nmasquerade = true\n[[expose]]\nport = 22\ntarget = "127.0.0.1:2222"\n' >> /etc/tomoe/tomoe.toml`)
	c.ok("systemctl restart tomoe")
	c.waitUp(t)
	if got := c.ok("cat /proc/sys/net/ipv4/ip_forward"); got != "1" {
		t.Errorf("ip_forward = %q under the service, want 1", got)
	}
	c.ok("nft list table inet tomoe >/dev/null")
	c.ok("ip rule | grep -q 'uidrange 0-0'")
	if got := c.ok("ss -Hltn"); !strings.Contains(got, "%tomoe0:22") || !strings.Contains(got, "[fc00::53]%tomoe0:53") {
		t.Errorf("the service listens on:\n%s", got)
	}

	// systemctl reload: the service, as user tomoe, reads the file again
	// and applies a new rule live; an invalid file changes nothing and
	// the service runs on.
	pid = c.ok("systemctl show -p MainPID --value tomoe")
	c.ok(`printf '[[policy.allow]]\nfrom = "*"\nproto = "tcp"\nports = "4242"\n' >> /etc/tomoe/tomoe.toml`)
	c.ok("systemctl reload tomoe")
	testnet.WaitFor(t, 10*time.Second, "the reloaded rule in tomoe policy list", func() bool {
		out, _ := c.run("tomoe policy list")
		return strings.Contains(out, "4242")
	})
	c.ok(`echo 'mtu = "big"' >> /etc/tomoe/tomoe.toml`)
	c.ok("systemctl reload tomoe")
	testnet.WaitFor(t, 10*time.Second, "the refused reload in the journal", func() bool {
		out, _ := c.run("journalctl -u tomoe --no-pager -o cat | grep 'config reload refused'")
		return strings.Contains(out, "tomoe.toml:")
	})
	if out, rc := c.run("tomoe reload"); rc != 1 || !strings.Contains(out, "/etc/tomoe/tomoe.toml:") {
		t.Errorf("tomoe reload of an invalid file: exit status %d, want 1 with FILE:LINE:\n%s", rc, out)
	}
	if got := c.ok("systemctl show -p MainPID --value tomoe"); got != pid {
		t.Errorf("after reloads, the service's PID is %s, was %s", got, pid)
	}
	c.ok("sed -i '$d' /etc/tomoe/tomoe.toml") // valid again for the next start

	c.ok("systemctl stop tomoe")
	if got := c.ok("cat /proc/sys/net/ipv4/ip_forward"); got != "0" {
		t.Errorf("after systemctl stop, ip_forward = %q, want 0", got)
	}
	if out, _ := c.run("nft list tables"); strings.Contains(out, "tomoe") {
		t.Errorf("after systemctl stop, nftables still has tomoe's table:\n%s", out)
	}
	sec := c.ok("systemd-analyze security tomoe.service | tail -1")
	t.Logf("systemd-analyze security (online): %s", sec)
}

// container is systemd running as PID 1 in namespaces of its own.
type container struct {
	t   *testing.T
	pid int // systemd's PID as this test sees it
}

// bootContainer makes the overlay root in a tmpfs mounted on $2, installs
// the .deb $1 there with dpkg and execs systemd in it. /dev/net/tun gets mode 0666, as udev gives it.
const bootContainer = `set -e
L=$2
mount -t tmpfs tmpfs "$L"
mkdir "$L/upper" "$L/work" "$L/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$L/upper,workdir=$L/work" "$L/root"
R=$L/root
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
mount --bind /dev "$R/dev"
mount -t tmpfs tmpfs "$R/run"
mount -t tmpfs tmpfs "$R/tmp"
cp "$1" "$R/tmp/tomoe.deb"
chroot "$R" dpkg -i /tmp/tomoe.deb
mknod -m 666 "$R/tmp/tun" c 10 200
mount --bind "$R/tmp/tun" "$R/dev/net/tun"
exec chroot "$R" env container=tomoe-test /lib/systemd/systemd --system --log-target=console --show-status=no
`

func bootSystemd(t *testing.T, deb string) *container {
	t.Helper()
	log := &testnet.SyncBuffer{}
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount", "--net", "--uts", "--ipc", "--propagation", "private",
		"sh", "-c", bootContainer, "sh", deb, t.TempDir())
	cmd.Env = append(os.Environ(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	c := &container{t: t}
	t.Cleanup(func() {
		if c.pid > 0 {
			// Killing the namespace's init ends every process in it.
			if p, err := os.FindProcess(c.pid); err == nil {
				p.Kill()
			}
		}
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("container's console:\n%s", log.String())
		}
	})
	// unshare --fork's only child becomes systemd.
	testnet.WaitFor(t, 60*time.Second, "systemd to start in the container", func() bool {
		select {
		case <-done:
			t.Fatalf("the container ended:\n%s", log.String())
		default:
		}
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "task", strconv.Itoa(cmd.Process.Pid), "children"))
		if err != nil {
			return false
		}
		f := strings.Fields(string(b))
		if len(f) != 1 {
			return false
		}
		exe, _ := os.Readlink("/proc/" + f[0] + "/exe")
		if !strings.HasSuffix(exe, "/systemd") {
			return false
		}
		c.pid, _ = strconv.Atoi(f[0])
		return true
	})
	return c
}

// run runs a shell command inside the container, as root, and returns its
// output (stdout and stderr, trimmed) and exit status.
func (c *container) run(command string) (string, int) {
	cmd := exec.Command("nsenter", "-t", strconv.Itoa(c.pid), "-m", "-p", "-n", "-u", "-i", "-r", "-w",
		"/bin/sh", "-c", command)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"}
	out, err := cmd.CombinedOutput()
	rc := 0
	if err != nil {
		rc = -1
		if exit, ok := err.(*exec.ExitError); ok {
			rc = exit.ExitCode()
		}
	}
	return strings.TrimSpace(string(out)), rc
}

func (c *container) ok(command string) string {
	c.t.Helper()
	out, rc := c.run(command)
	if rc != 0 {
		journal, _ := c.run("journalctl -u tomoe --no-pager -n 30 -o cat")
		c.t.Fatalf("in the container, %s: exit status %d\n%s\njournal of tomoe:\n%s", command, rc, out, journal)
	}
	return out
}

// waitUp waits for the service to be active with its admin socket.
func (c *container) waitUp(t *testing.T) {
	t.Helper()
	testnet.WaitFor(t, 30*time.Second, "tomoe.service to be up", func() bool {
		if out, _ := c.run("systemctl is-failed tomoe"); out == "failed" {
			journal, _ := c.run("journalctl -u tomoe --no-pager -n 30 -o cat")
			t.Fatalf("tomoe.service failed:\n%s", journal)
		}
		_, rc := c.run("systemctl is-active -q tomoe && test -S /run/tomoe/admin.sock")
		return rc == 0
	})
}
