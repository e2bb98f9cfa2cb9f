package main

// This file is the benchmark's environment: the two network namespaces and
// their veth link, processes started inside them, and what /proc says about
// CPU time and memory.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The underlay. The names are fixed so that a run killed with SIGKILL is
// cleaned up by the next one.
const (
	nsA       = "tbench-a"
	nsB       = "tbench-b"
	underlayA = "10.88.0.1"
	underlayB = "10.88.0.2"
)

// clkTck is USER_HZ, the unit of /proc CPU times; 100 on every Linux ABI Go
// supports.
const clkTck = 100

// env owns everything the benchmark creates on the system. Cleanup undoes
// it in reverse order and may be called more than once.
type env struct {
	log  *slog.Logger
	work string // temporary directory: binaries, configs, keys, logs

	mu       sync.Mutex // guards cleanups
	cleanups []func()
}

func (e *env) onCleanup(f func()) {
	e.mu.Lock()
	e.cleanups = append(e.cleanups, f)
	e.mu.Unlock()
}

// Cleanup runs the registered cleanups, newest first.
func (e *env) Cleanup() {
	e.mu.Lock()
	fs := e.cleanups
	e.cleanups = nil
	e.mu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
}

// run runs a command and returns its combined output; the error includes
// the output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// inNS runs a command inside namespace ns.
func inNS(ctx context.Context, ns, name string, args ...string) (string, error) {
	return run(ctx, "ip", append([]string{"netns", "exec", ns, name}, args...)...)
}

// nsPrefix starts the name of every namespace the benchmark creates.
const nsPrefix = "tbench-"

// removeNamespaces kills whatever runs in the benchmark's namespaces (all
// named tbench-*) and deletes them (their veth ends and TUN devices go
// with them).
func removeNamespaces() {
	entries, _ := os.ReadDir("/var/run/netns")
	for _, ent := range entries {
		ns := ent.Name()
		if !strings.HasPrefix(ns, nsPrefix) {
			continue
		}
		if out, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				if pid, err := strconv.Atoi(f); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		exec.Command("ip", "netns", "del", ns).Run()
	}
}

// setupUnderlay creates the two namespaces joined by a veth pair.
func (e *env) setupUnderlay(ctx context.Context) error {
	steps := [][]string{
		{"ip", "netns", "add", nsA},
		{"ip", "netns", "add", nsB},
		{"ip", "-n", nsA, "link", "add", "veth0", "mtu", "1500", "type", "veth", "peer", "name", "veth0", "netns", nsB},
		{"ip", "-n", nsA, "link", "set", "lo", "up"},
		{"ip", "-n", nsB, "link", "set", "lo", "up"},
		{"ip", "-n", nsA, "addr", "add", underlayA + "/24", "dev", "veth0"},
		{"ip", "-n", nsB, "addr", "add", underlayB + "/24", "dev", "veth0"},
		{"ip", "-n", nsA, "link", "set", "veth0", "up"},
		{"ip", "-n", nsB, "link", "set", "veth0", "up"},
	}
	for _, s := range steps {
		if _, err := run(ctx, s[0], s[1:]...); err != nil {
			return fmt.Errorf("underlay: %w", err)
		}
	}
	return waitFor(ctx, 10*time.Second, "underlay ping", func() bool {
		_, err := inNS(ctx, nsA, "ping", "-n", "-c", "1", "-W", "1", underlayB)
		return err == nil
	})
}

// waitFor polls cond every 50 ms until it holds, ctx ends or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	return pollFor(ctx, timeout, 50*time.Millisecond, what, cond)
}

// pollFor polls cond every interval until it holds, ctx ends or timeout
// passes.
func pollFor(ctx context.Context, timeout, interval time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not ready after %s", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// proc is a long-running process inside a namespace. `ip netns exec` execs
// the command in place, so Pid is the daemon's own pid.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	stdin   io.WriteCloser // only for procs started with pipes
	stdout  *bufio.Reader  // likewise
	done    chan struct{}
	waitErr error
}

// start starts name args... in ns; stderr (and stdout, unless pipes is
// set) go to a log file in the work directory. With pipes, the caller
// talks to the process over its stdin and stdout.
func (e *env) start(ns, label string, pipes bool, env []string, name string, args ...string) (*proc, error) {
	logPath := filepath.Join(e.work, label+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = lf
	// If the benchmark dies without cleaning up, take the daemon with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &proc{name: label, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	if pipes {
		in, err := cmd.StdinPipe()
		if err != nil {
			lf.Close()
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			lf.Close()
			return nil, err
		}
		p.stdin, p.stdout = in, bufio.NewReader(out)
	} else {
		cmd.Stdout = lf
	}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", label, err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	e.onCleanup(func() { p.stop(5 * time.Second) })
	return p, nil
}

// Pid is the process id.
func (p *proc) Pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after grace. It is idempotent.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		return
	}
	if p.stdin != nil {
		p.stdin.Close()
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// tail returns the end of the process's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// failure describes a process that should be running but is not.
func (p *proc) failure() error {
	if !p.exited() {
		return nil
	}
	return fmt.Errorf("%s exited (%v):\n%s", p.name, p.waitErr, p.tail())
}

// cpuSeconds is utime+stime of a process, all its threads included.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may contain spaces; fields start after its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return float64(ut+st) / clkTck, nil
}

// cpuSum is the summed CPU seconds of pids.
func cpuSum(pids []int) (float64, error) {
	var sum float64
	for _, pid := range pids {
		s, err := cpuSeconds(pid)
		if err != nil {
			return 0, err
		}
		sum += s
	}
	return sum, nil
}

// machineBusySeconds is the CPU time the whole machine spent outside idle
// and iowait (user, nice, system, irq, softirq; steal is not ours), over
// all cores.
func machineBusySeconds() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, errors.New("/proc/stat: unexpected format")
	}
	var busy uint64
	for _, i := range []int{1, 2, 3, 6, 7} { // user nice system irq softirq
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		busy += v
	}
	return float64(busy) / clkTck, nil
}

// rssKB is VmRSS of a process in KiB.
func rssKB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// loadavg is the first three fields of /proc/loadavg.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
