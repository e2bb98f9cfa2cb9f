//go:build linux

package services

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/testnet"
)

// nobody is the uid and gid the cross-user tests run their clients as.
const nobody = 65534

// serveGreeting answers every accepted connection with "served\n" and
// closes it, until ln is closed.
func serveGreeting(t *testing.T, ln net.Listener) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "served\n")
			c.(interface{ CloseWrite() error }).CloseWrite()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			io.Copy(io.Discard, c) // let the client finish, so close sends no RST
			c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
}

func TestListenLocalRefusesNonLoopback(t *testing.T) {
	for _, spec := range []string{"0.0.0.0:1080", "[::]:1080", "192.0.2.1:1080", "10.0.0.1:0", "[fc11::1]:80", "[fe80::1%lo]:80", "localhost:1080", ":1080", "1080", "relative/path.sock", ""} {
		ln, err := ListenLocal(spec, UIDSet{}, nil)
		if err == nil {
			ln.Close()
			t.Errorf("ListenLocal(%q) = nil error, want a refusal", spec)
			continue
		}
		t.Logf("%q: %v", spec, err)
	}
	_, err := ListenLocal("0.0.0.0:1080", UIDSet{}, nil)
	if !strings.Contains(err.Error(), "never be reachable from the network") {
		t.Errorf("error %q does not say why", err)
	}
}

func TestListenLocalTCPServesOwnUser(t *testing.T) {
	for _, spec := range []string{"127.0.0.1:0", "[::1]:0", "[::ffff:127.0.0.1]:0"} {
		t.Run(spec, func(t *testing.T) {
			ln, err := ListenLocal(spec, UIDSet{}, testLog(t))
			if err != nil {
				if strings.Contains(spec, "::1") {
					t.Skipf("no IPv6 loopback: %v", err)
				}
				t.Fatal(err)
			}
			serveGreeting(t, ln)
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if got, err := io.ReadAll(c); err != nil || string(got) != "served\n" {
				t.Fatalf("got %q, %v", got, err)
			}
		})
	}
}

// TestTCPOwner checks the sock_diag lookup directly: the client socket's
// uid while it is open, and a refusal once the client has closed it (its
// socket is then an orphan with no owner to check).
func TestTCPOwner(t *testing.T) {
	cli, srv := tcpPair(t)
	uid, err := tcpOwner(srv)
	if err != nil || uid != uint32(os.Getuid()) {
		t.Fatalf("tcpOwner = %d, %v; want %d", uid, err, os.Getuid())
	}
	cli.Close()
	waitFor(t, 5*time.Second, "the closed client to be refused", func() bool {
		_, err := tcpOwner(srv)
		if err != nil {
			t.Logf("after close: %v", err)
		}
		return err != nil
	})
}

func TestUnixOwner(t *testing.T) {
	_, srv := unixPair(t)
	uid, err := unixOwner(srv)
	if err != nil || uid != uint32(os.Getuid()) {
		t.Fatalf("unixOwner = %d, %v; want %d", uid, err, os.Getuid())
	}
}

func TestListenLocalUnixSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "dir")
	path := filepath.Join(dir, "tomoe.sock")
	ln, err := ListenLocal(path, UIDSet{}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, path: 0o600 | os.ModeSocket} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s mode %v, want %v", p, fi.Mode(), want)
		}
	}
	// A live socket is not replaced.
	if ln2, err := ListenLocal(path, UIDSet{}, nil); err == nil {
		ln2.Close()
		t.Fatal("ListenLocal replaced a socket that is in use")
	} else if !strings.Contains(err.Error(), "in use") {
		t.Errorf("error %q, want in use", err)
	}
	serveGreeting(t, ln)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if got, err := io.ReadAll(c); err != nil || string(got) != "served\n" {
		t.Fatalf("got %q, %v", got, err)
	}
	c.Close()

	// A stale socket (its listener gone, the file left) is replaced.
	stale := filepath.Join(t.TempDir(), "stale.sock")
	sl, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	sl.SetUnlinkOnClose(false)
	sl.Close()
	if _, err := os.Stat(stale); err != nil {
		t.Fatalf("stale socket file: %v", err)
	}
	ln3, err := ListenLocal(stale, UIDSet{}, nil)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln3.Close()
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("socket file left after Close: %v", err)
	}

	// A regular file is never removed.
	regular := filepath.Join(t.TempDir(), "file")
	os.WriteFile(regular, []byte("keep me"), 0o600)
	if ln4, err := ListenLocal(regular, UIDSet{}, nil); err == nil {
		ln4.Close()
		t.Fatal("ListenLocal replaced a regular file")
	} else if !strings.Contains(err.Error(), "regular file") {
		t.Errorf("error %q, want it to name the regular file", err)
	}
	if b, _ := os.ReadFile(regular); string(b) != "keep me" {
		t.Error("regular file changed")
	}
}

func TestParseUsers(t *testing.T) {
	s, err := ParseUsers([]string{"root", "1000", " 4294967295 "})
	if err != nil {
		t.Fatal(err)
	}
	for _, uid := range []uint32{0, 1000, 4294967295, uint32(os.Getuid())} {
		if !s.Allows(uid) {
			t.Errorf("%v does not allow %d", s, uid)
		}
	}
	if os.Getuid() != 1001 && s.Allows(1001) {
		t.Errorf("%v allows 1001", s)
	}
	if s, _ := ParseUsers([]string{"*"}); !s.Any || !s.Allows(12345) {
		t.Errorf("* = %+v", s)
	}
	if s, _ := ParseUsers(nil); s.Any || !s.Allows(uint32(os.Getuid())) {
		t.Errorf("empty = %+v, want own uid only", s)
	}
	for _, bad := range []string{"no-such-user-tomoe", "", "99999999999", "12ab-no-such-user", "99999999999999999999"} {
		if _, err := ParseUsers([]string{bad}); err == nil {
			t.Errorf("ParseUsers(%q) = nil error", bad)
		} else {
			t.Logf("%q: %v", bad, err)
		}
	}
	if _, err := ParseUsers([]string{"no-such-user-tomoe"}); !strings.Contains(err.Error(), "no local user") {
		t.Errorf("unknown user error %q", err)
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root: the test runs a client as uid 65534 (setuid) to check that another user is refused")
	}
}

// runAsNobody runs cmd as uid/gid 65534 and returns its stdout.
func runAsNobody(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v as nobody: %v", cmd.Args, err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Logf("%v as nobody: exit %v, stdout %q, stderr %q", cmd.Args[0], err, out.String(), errb.String())
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		t.Fatalf("%v as nobody did not finish", cmd.Args)
	}
	return out.String()
}

func TestListenLocalTCPRefusesOtherUser(t *testing.T) {
	requireRoot(t)
	if _, err := os.Stat("/bin/bash"); err != nil {
		t.Skip("needs /bin/bash for its /dev/tcp client")
	}
	for _, tt := range []struct {
		name  string
		allow UIDSet
		serve bool
	}{
		{"own uid only", UIDSet{}, false},
		{"other uids", UIDSet{UIDs: map[uint32]bool{1000: true}}, false},
		{"nobody listed", UIDSet{UIDs: map[uint32]bool{nobody: true}}, true},
		{"any", UIDSet{Any: true}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logs testnet.SyncBuffer
			ln, err := ListenLocal("127.0.0.1:0", tt.allow, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			serveGreeting(t, ln)
			port := ln.Addr().(*net.TCPAddr).Port
			out := runAsNobody(t, exec.Command("/bin/bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d; echo hi >&3; cat <&3", port)))
			if served := out == "served\n"; served != tt.serve {
				t.Fatalf("nobody's client got %q; want served=%v", out, tt.serve)
			}
			if !tt.serve {
				if l := logs.String(); !strings.Contains(l, "uid=65534") || !strings.Contains(l, "listener=127.0.0.1:") {
					t.Errorf("refusal not logged with uid and listener: %q", l)
				}
			}
			// The node's own user is always served.
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if got, err := io.ReadAll(c); string(got) != "served\n" {
				t.Fatalf("own uid got %q, %v", got, err)
			}
		})
	}
}

// TestListenLocalUnixRefusesOtherUser loosens the socket's mode to 0666 so
// that only the SO_PEERCRED check stands between another user and the
// service.
func TestListenLocalUnixRefusesOtherUser(t *testing.T) {
	requireRoot(t)
	// A copy of the test binary that nobody can run, in a directory nobody
	// can enter, is the client.
	dir, err := os.MkdirTemp("", "tomoe-services-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "client")
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		allow UIDSet
		serve bool
	}{
		{"own uid only", UIDSet{}, false},
		{"any", UIDSet{Any: true}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "s.sock")
			var logs testnet.SyncBuffer
			ln, err := ListenLocal(path, tt.allow, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			serveGreeting(t, ln)
			if err := os.Chmod(path, 0o666); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin)
			cmd.Env = append(os.Environ(), helperEnv+"="+path)
			out := runAsNobody(t, cmd)
			if served := out == "served\n"; served != tt.serve {
				t.Fatalf("nobody's client got %q; want served=%v", out, tt.serve)
			}
			if !tt.serve && !strings.Contains(logs.String(), "uid=65534") {
				t.Errorf("refusal not logged with the uid: %q", logs.String())
			}
			ln.Close()
		})
	}
}
