package testnet

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// WaitFor polls cond until it holds, failing t if d passes first. Tests
// wait on conditions with deadlines, never on bare sleeps. cond can be
// any predicate (a counter, a route in the kernel, a file), with nothing
// that signals its change: polling it every 10 ms is the wait. Only tests
// import this package.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Echo serves ln until it is closed: every connection gets back what it
// sends.
func Echo(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

// RoundTrip writes line to an Echo connection and waits for it to come back.
func RoundTrip(c net.Conn, line string, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if got != line+"\n" {
		return fmt.Errorf("echo %q, want %q", got, line)
	}
	return nil
}
