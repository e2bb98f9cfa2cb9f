package testnet

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Host is a namespace with one Ethernet interface (eth0) on a LAN.
type Host struct {
	*Netns
	IPv4 netip.Addr
	IPv6 netip.Addr
}

// LAN is a set of hosts on one Ethernet segment: a Linux bridge in a switch
// namespace, and a veth pair per host. Underlay addresses are 10.77.0.N/24
// and fd77::N/64, N counting from 1 in the order of names.
type LAN struct {
	Switch *Netns
	Hosts  map[string]*Host
}

// NewLAN builds the segment; it is torn down when the test ends.
func NewLAN(t testing.TB, names ...string) *LAN {
	t.Helper()
	lan := &LAN{Switch: NewNetns(t, "sw"), Hosts: map[string]*Host{}}
	lan.Switch.Run("ip", "link", "add", "br0", "type", "bridge")
	lan.Switch.Run("ip", "link", "set", "br0", "up")
	for i, name := range names {
		n := i + 1
		h := &Host{
			Netns: NewNetns(t, name),
			IPv4:  netip.MustParseAddr(fmt.Sprintf("10.77.0.%d", n)),
			IPv6:  netip.MustParseAddr(fmt.Sprintf("fd77::%d", n)),
		}
		port := fmt.Sprintf("p%d", n)
		lan.Switch.Run("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.Name)
		lan.Switch.Run("ip", "link", "set", port, "master", "br0", "up")
		h.Run("ip", "addr", "add", h.IPv4.String()+"/24", "dev", "eth0")
		h.Run("ip", "addr", "add", h.IPv6.String()+"/64", "dev", "eth0", "nodad")
		h.Run("ip", "link", "set", "eth0", "up")
		lan.Hosts[name] = h
	}
	return lan
}

// Proc is a process started in a namespace, its output captured.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	out  *SyncBuffer
	done chan struct{}
	err  error
}

// SyncBuffer is a bytes.Buffer that one goroutine (a process's output, a
// logger) writes while a test reads it.
type SyncBuffer struct {
	mu      sync.Mutex // guards b, written
	b       bytes.Buffer
	written chan struct{} // closed at the next Write; nil: nobody waits
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.written != nil {
		close(s.written)
		s.written = nil
	}
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// next returns what was written so far, and a channel closed at the next
// Write.
func (s *SyncBuffer) next() (string, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.written == nil {
		s.written = make(chan struct{})
	}
	return s.b.String(), s.written
}

// Start runs a program in the namespace; see StartCmd.
func (ns *Netns) Start(t testing.TB, label string, name string, args ...string) *Proc {
	t.Helper()
	return StartCmd(t, label, ns.Command(name, args...))
}

// StartCmd starts cmd with its output captured. When the test ends it is
// stopped (SIGTERM, then SIGKILL after 5 s); if the test failed, its output
// is logged.
func StartCmd(t testing.TB, label string, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{Name: label, cmd: cmd, out: &SyncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", label, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop(syscall.SIGTERM, 5*time.Second)
		if t.Failed() {
			t.Logf("--- output of %s ---\n%s", label, p.Output())
		}
	})
	return p
}

// Stop signals the process and waits up to d for it to exit, then kills
// it. It returns the exit error (nil for a clean exit).
func (p *Proc) Stop(sig syscall.Signal, d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	// ip netns exec replaces itself with the program, so the pid is the program's.
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(d):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %v of %v", p.Name, d, sig)
	}
	return p.err
}

// Signal sends sig to the process (SIGHUP: a node reloads its config).
func (p *Proc) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Output returns everything the process printed so far.
func (p *Proc) Output() string { return p.out.String() }

// Pid is the process's id (that of the program itself when started in a
// namespace: ip netns exec executes it in its own place).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// WaitOutput waits until the output contains s.
func (p *Proc) WaitOutput(t testing.TB, s string, d time.Duration) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		out, written := p.out.next()
		if strings.Contains(out, s) {
			return
		}
		select {
		case <-written:
		case <-p.done:
			// Wait has copied all of the output by now.
			if !strings.Contains(p.Output(), s) {
				t.Fatalf("%s exited (%v) before printing %q; output:\n%s", p.Name, p.err, s, p.Output())
			}
			return
		case <-deadline.C:
			t.Fatalf("%s did not print %q within %v; output:\n%s", p.Name, s, d, p.Output())
		}
	}
}

// Lines returns the output's lines.
func (p *Proc) Lines() []string {
	var out []string
	sc := bufio.NewScanner(io.NopCloser(strings.NewReader(p.Output())))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}
