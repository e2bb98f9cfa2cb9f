//go:build linux

package routes

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// lockName is the abstract Unix socket that the kernel-mode tomoe of a
// network namespace holds. Abstract socket names belong to the network
// namespace, so nodes in different namespaces of one host (as tests run
// them) do not see each other's, and the kernel releases the name when
// the process dies, however it dies: no stale lock to clean up after a
// crash, unlike a lock file.
//
// Like any port, the name can be taken first by another local user; the
// error then names that process. (A local user can as well take tomoe's
// UDP port first.)
const lockName = "@tomoe-kernel"

// NetnsLock is held by the one kernel-mode tomoe of a network namespace.
// Everything this package and the firewall change (table Table, the ip
// rules in FirstRulePriority..LastRulePriority, the nftables table inet
// tomoe, the forwarding sysctls) exists once per namespace, and a tomoe
// starting up replaces what a crashed one left: a second tomoe in the
// same namespace would wipe the first's.
type NetnsLock struct {
	ln   *net.UnixListener
	done chan struct{} // closed when serve returns
}

// LockNetns takes the lock of the calling thread's network namespace, or
// says which process holds it. Take it before changing anything in the
// namespace; Close releases it.
func LockNetns() (*NetnsLock, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: lockName, Net: "unix"})
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("another tomoe runs in kernel mode in this network namespace (%s): it owns routing table %d, the ip rules %d-%d and the nftables table inet tomoe, which a second one would wipe. Stop it first, run this node in another network namespace (ip netns exec), or set tun.mode = \"userspace\"",
			lockHolder(), Table, FirstRulePriority, LastRulePriority)
	}
	if err != nil {
		return nil, fmt.Errorf("kernel-mode lock (abstract socket %s): %w", lockName, err)
	}
	l := &NetnsLock{ln: ln, done: make(chan struct{})}
	go l.serve()
	return l, nil
}

// serve accepts and closes connections: a process that found the lock
// taken connects only to learn the holder's pid (SO_PEERCRED), which the
// kernel gives it at connect time.
func (l *NetnsLock) serve() {
	defer close(l.done)
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// Close releases the lock. It is safe to call more than once.
func (l *NetnsLock) Close() error {
	err := l.ln.Close()
	<-l.done
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// lockHolder describes the process holding the lock, as far as it can
// tell: "pid 1234, uid 0, tomoe".
func lockHolder() string {
	c, err := net.DialTimeout("unix", lockName, time.Second)
	if err != nil {
		return "its pid is unknown: " + err.Error()
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return "its pid is unknown: " + err.Error()
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		cerr = err
	}
	if cerr != nil {
		return "its pid is unknown: " + cerr.Error()
	}
	s := fmt.Sprintf("pid %d, uid %d", cred.Pid, cred.Uid)
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cred.Pid)); err == nil {
		s += ", " + strings.TrimSpace(string(comm))
	}
	return s
}
