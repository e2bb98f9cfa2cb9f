package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDeb builds the host's .deb twice (two versions) with `go run
// ./packaging`, reads it with dpkg-deb, and then installs, upgrades,
// removes and purges it with the real dpkg in a throwaway root: an
// overlay over this machine's / whose changes live in a tmpfs of a private
// mount namespace, so the host is not touched. It needs root, dpkg,
// unshare and overlayfs (CI has them).
func TestDeb(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: dpkg installs the package into an overlay root")
	}
	for _, tool := range []string{"dpkg", "dpkg-deb", "unshare", "chroot", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (Debian)", tool)
		}
	}
	arch := strings.TrimSpace(output(t, "dpkg", "--print-architecture"))
	v1, v2 := testDebs(t)
	if want := "tomoe_0.1.0~test1_" + arch + ".deb"; filepath.Base(v1) != want {
		t.Fatalf("package %s, want %s", v1, want)
	}

	// The package as dpkg-deb reads it.
	fields := map[string]string{"Package": "tomoe", "Version": "0.1.0~test1", "Architecture": arch, "Pre-Depends": "passwd", "Section": "net"}
	for k, want := range fields {
		if got := strings.TrimSpace(output(t, "dpkg-deb", "-f", v1, k)); got != want {
			t.Errorf("control field %s = %q, want %q", k, got, want)
		}
	}
	if got := strings.TrimSpace(output(t, "dpkg-deb", "-I", v1, "conffiles")); got != "/etc/tomoe/tomoe.toml" {
		t.Errorf("conffiles = %q, want /etc/tomoe/tomoe.toml", got)
	}
	list := map[string]string{} // path -> "mode owner/group"
	for _, line := range strings.Split(strings.TrimSpace(output(t, "dpkg-deb", "-c", v1)), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb -c: %q", line)
		}
		list[strings.TrimSuffix(strings.TrimPrefix(f[len(f)-1], "."), "/")] = f[0] + " " + f[1]
	}
	for path, want := range map[string]string{
		"/usr/bin/tomoe":                        "-rwxr-xr-x root/root",
		"/usr/lib/systemd/system/tomoe.service": "-rw-r--r-- root/root",
		"/etc/tomoe":                            "drwxr-x--- root/tomoe",
		"/etc/tomoe/tomoe.toml":                 "-rw-r----- root/tomoe",
		"/var/lib/tomoe":                        "drwx------ tomoe/tomoe",
	} {
		if got := list[path]; got != want {
			t.Errorf("%s in the package: %q, want %q", path, got, want)
		}
	}

	// The package as dpkg installs it.
	root := newOverlayRoot(t, v1, v2)
	root.ok("dpkg -i /tmp/debs/" + filepath.Base(v1))
	if got := root.ok("getent passwd tomoe | cut -d: -f6,7"); !strings.HasPrefix(got, "/var/lib/tomoe:") || !strings.Contains(got, "nologin") {
		t.Errorf("user tomoe: home and shell %q, want /var/lib/tomoe and nologin", got)
	}
	if got := root.ok("id -gn tomoe"); got != "tomoe" {
		t.Errorf("user tomoe's group: %q", got)
	}
	for path, want := range map[string]string{
		"/usr/bin/tomoe":        "755 root root",
		"/etc/tomoe":            "750 root tomoe",
		"/etc/tomoe/tomoe.toml": "640 root tomoe",
		"/var/lib/tomoe":        "700 tomoe tomoe",
	} {
		if got := root.ok("stat -c '%a %U %G' " + path); got != want {
			t.Errorf("installed %s: %q, want %q", path, got, want)
		}
	}
	if got := root.ok("tomoe version"); got != "tomoe 0.1.0~test1" {
		t.Errorf("tomoe version: %q", got)
	}
	if got := root.ok("dpkg-query -W -f='${Conffiles}' tomoe"); !strings.Contains(got, "/etc/tomoe/tomoe.toml ") {
		t.Errorf("dpkg's conffiles of tomoe: %q", got)
	}
	// The shipped config is valid for the service's user (with the group
	// tomoe that it names for the admin socket). Not for root: tomoe run
	// as root refuses a key directory another user (tomoe) owns.
	root.ok("setpriv --reuid tomoe --regid tomoe --init-groups tomoe config check -c /etc/tomoe/tomoe.toml")
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		if got := root.ok("systemd-analyze verify tomoe.service"); got != "" {
			t.Errorf("systemd-analyze verify tomoe.service: %s", got)
		}
		sec := root.ok("systemd-analyze security --offline=yes /usr/lib/systemd/system/tomoe.service")
		m := regexp.MustCompile(`Overall exposure level for tomoe.service: ([0-9.]+)`).FindStringSubmatch(sec)
		if m == nil {
			t.Fatalf("systemd-analyze security: no exposure level in\n%s", sec)
		}
		score, _ := strconv.ParseFloat(m[1], 64)
		t.Logf("systemd-analyze security: exposure %.1f", score)
		if score > 2.5 {
			t.Errorf("exposure level %.1f, the unit scored 2.2: a setting was lost?\n%s", score, sec)
		}
	} else {
		t.Log("no systemd-analyze: the unit is not verified")
	}

	// An administrator's change to the config survives a reinstall and an
	// upgrade; the key in /var/lib/tomoe survives removal and purge.
	root.ok(`sed -i 's/^level = "info"/level = "debug"/' /etc/tomoe/tomoe.toml`)
	root.ok("tomoe key generate > /var/lib/tomoe/node.key && chown tomoe:tomoe /var/lib/tomoe/node.key && chmod 600 /var/lib/tomoe/node.key")
	root.ok("setpriv --reuid tomoe --regid tomoe --init-groups tomoe config check -c /etc/tomoe/tomoe.toml")
	root.ok("dpkg -i /tmp/debs/" + filepath.Base(v1)) // preinst again: the user exists
	root.ok("dpkg -i /tmp/debs/" + filepath.Base(v2))
	if got := root.ok("tomoe version"); got != "tomoe 0.1.1" {
		t.Errorf("after the upgrade, tomoe version: %q", got)
	}
	if got := root.ok("grep '^level' /etc/tomoe/tomoe.toml"); got != `level = "debug"` {
		t.Errorf("after the upgrade the config says %q: the administrator's change was overwritten", got)
	}
	if got := root.ok("ls /etc/tomoe"); got != "tomoe.toml" {
		t.Errorf("after the upgrade /etc/tomoe holds %q", got)
	}
	if got := root.ok("getent passwd tomoe | wc -l"); got != "1" {
		t.Errorf("%s users tomoe after reinstall and upgrade", got)
	}
	root.ok("dpkg -r tomoe")
	root.ok("test ! -e /usr/bin/tomoe && test ! -e /usr/lib/systemd/system/tomoe.service")
	root.ok("test -f /etc/tomoe/tomoe.toml && test -f /var/lib/tomoe/node.key")
	root.ok("dpkg -P tomoe")
	root.ok("test ! -e /etc/tomoe/tomoe.toml && test -f /var/lib/tomoe/node.key")
}

var debs struct {
	once   sync.Once
	dir    string
	v1, v2 string
	err    error
}

// testDebs builds the host's .deb in two versions, 0.1.0~test1 and 0.1.1,
// once for all the tests of the package.
func testDebs(t *testing.T) (v1, v2 string) {
	t.Helper()
	debs.once.Do(func() {
		if debs.dir, debs.err = os.MkdirTemp("", "tomoe-debs-"); debs.err != nil {
			return
		}
		if debs.v1, debs.err = buildDeb(debs.dir, "0.1.0~test1"); debs.err != nil {
			return
		}
		debs.v2, debs.err = buildDeb(debs.dir, "0.1.1")
	})
	if debs.err != nil {
		t.Fatal(debs.err)
	}
	return debs.v1, debs.v2
}

func TestMain(m *testing.M) {
	code := m.Run()
	if debs.dir != "" {
		os.RemoveAll(debs.dir)
	}
	os.Exit(code)
}

// buildDeb runs `go run ./packaging` for the host's .deb of version v
// into dir and returns its path.
func buildDeb(dir, v string) (string, error) {
	start := time.Now()
	cmd := exec.Command("go", "run", ".", "-arch", "host", "-format", "deb", "-version", v, "-out", dir)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go run ./packaging: %v\n%s", err, stderr.String())
	}
	fmt.Fprintf(os.Stderr, "packaging test: built %s in %v\n", strings.TrimSpace(string(out)), time.Since(start).Round(time.Millisecond))
	return strings.TrimSpace(string(out)), nil
}

func output(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// overlayRoot is a shell chrooted into an overlay of / (writes go to a
// tmpfs) in a private mount namespace: commands run there as root and
// change nothing on the host. It ends with the test.
type overlayRoot struct {
	t   *testing.T
	in  io.WriteCloser
	out *bufio.Reader
	n   int
}

// setupOverlay makes the overlay in a tmpfs mounted on $1, copies the
// packages (the other arguments) into its /tmp/debs and starts a shell in it that reads commands from stdin.
const setupOverlay = `set -e
L=$1
shift
mount -t tmpfs tmpfs "$L"
mkdir "$L/upper" "$L/work" "$L/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$L/upper,workdir=$L/work" "$L/root"
mount --bind /proc "$L/root/proc"
mount --bind /dev "$L/root/dev"
mount -t tmpfs tmpfs "$L/root/tmp"
mount -t tmpfs tmpfs "$L/root/run"
mkdir "$L/root/tmp/debs"
cp "$@" "$L/root/tmp/debs/"
exec chroot "$L/root" /bin/sh -s
`

func newOverlayRoot(t *testing.T, debs ...string) *overlayRoot {
	t.Helper()
	cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", setupOverlay, "sh", t.TempDir()}, debs...)...)
	cmd.Env = append(os.Environ(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	t.Cleanup(func() {
		in.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		pr.Close()
	})
	return &overlayRoot{t: t, in: in, out: bufio.NewReader(pr)}
}

// run runs a shell command in the root (stdin from /dev/null, stderr into
// the output) and returns its output, trimmed, and exit status. The marker
// that ends the output comes on a line of its own, after a newline for
// output that lacks one.
func (r *overlayRoot) run(command string) (string, int) {
	r.t.Helper()
	r.n++
	marker := fmt.Sprintf("__tomoe_test_end_%d__", r.n)
	if _, err := fmt.Fprintf(r.in, "{ %s\n} </dev/null 2>&1; rc=$?; echo; echo \"%s $rc\"\n", command, marker); err != nil {
		r.t.Fatalf("overlay root: %v", err)
	}
	var out strings.Builder
	for {
		line, err := r.out.ReadString('\n')
		if rest, ok := strings.CutPrefix(line, marker+" "); ok {
			rc, _ := strconv.Atoi(strings.TrimSpace(rest))
			return strings.TrimSpace(out.String()), rc
		}
		out.WriteString(line)
		if err != nil {
			r.t.Fatalf("overlay root ended while running %q: %v\n%s", command, err, out.String())
		}
	}
}

// ok runs command and fails the test unless it exits 0.
func (r *overlayRoot) ok(command string) string {
	r.t.Helper()
	out, rc := r.run(command)
	if rc != 0 {
		r.t.Fatalf("%s: exit status %d\n%s", command, rc, out)
	}
	return out
}
