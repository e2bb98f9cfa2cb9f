package names

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Resolved registers a DNS server with systemd-resolved for the routing
// domain "~tomoe" on one interface, so that the host's lookups of names
// under .tomoe go to it and no other lookup does. It runs resolvectl,
// which says the same over D-Bus as a library would, and is there
// wherever resolved is.
//
// Only a process in the network namespace of resolved (taken to be that
// of PID 1) may register: resolvectl hands resolved the interface's index,
// which in another namespace names another interface.
type Resolved struct {
	// Link is the interface's name, Addr the DNS server's address.
	Link string
	Addr netip.Addr

	// For tests; zero values are the host's: the directory whose
	// presence says resolved runs, the resolvectl program, and the
	// files naming this process's and resolved's network namespaces.
	RunDir     string
	Resolvectl string
	SelfNetns  string
	HostNetns  string
	// Timeout bounds each resolvectl run (default 5 s).
	Timeout time.Duration
}

// ErrNoResolved says resolved does not run here (or not in this network
// namespace): nothing was changed, and the host's resolver has to be told
// about the server some other way.
var ErrNoResolved = errors.New("systemd-resolved does not run in this network namespace")

func (r *Resolved) defaults() {
	if r.RunDir == "" {
		r.RunDir = "/run/systemd/resolve"
	}
	if r.Resolvectl == "" {
		r.Resolvectl = "resolvectl"
	}
	if r.SelfNetns == "" {
		r.SelfNetns = "/proc/self/ns/net"
	}
	if r.HostNetns == "" {
		r.HostNetns = "/proc/1/ns/net"
	}
	if r.Timeout <= 0 {
		r.Timeout = 5 * time.Second
	}
}

// Available reports whether resolved runs and this process may register
// with it; if not, the error says why (ErrNoResolved wrapped, or what
// could not be checked).
func (r *Resolved) Available() error {
	r.defaults()
	if _, err := os.Stat(r.RunDir); err != nil {
		return fmt.Errorf("%w (no %s)", ErrNoResolved, r.RunDir)
	}
	self, err := os.Readlink(r.SelfNetns)
	if err != nil {
		return fmt.Errorf("systemd-resolved: which network namespace is this: %w", err)
	}
	host, err := os.Readlink(r.HostNetns)
	if err != nil {
		return fmt.Errorf("systemd-resolved: which network namespace is the host's: %w", err)
	}
	if self != host {
		return fmt.Errorf("%w (this node runs in %s, the host in %s)", ErrNoResolved, self, host)
	}
	if _, err := exec.LookPath(r.Resolvectl); err != nil {
		return fmt.Errorf("systemd-resolved runs, but %s is not found: %w", r.Resolvectl, err)
	}
	return nil
}

// Register makes the server the DNS server of Link for "~tomoe" only:
// the link is not a default route for other names.
func (r *Resolved) Register() error {
	if err := r.Available(); err != nil {
		return err
	}
	if err := r.run("dns", r.Link, r.Addr.String()); err != nil {
		return err
	}
	if err := r.run("domain", r.Link, "~"+strings.TrimSuffix(Zone, ".")); err != nil {
		r.run("revert", r.Link)
		return err
	}
	// Best effort, for each of these settings of resolved's that would
	// otherwise come from its global configuration (versions that lack
	// a command keep their defaults, which suit too): the link is no
	// default route for other names (links with only routing domains are
	// not, anyway); the server is local and its answers are as true as
	// the node's view, so neither DNSSEC (.tomoe is no signed zone and
	// would fail validation under DNSSEC=yes) nor DNS over TLS (which it
	// does not speak) applies; and the TUN carries no multicast for LLMNR
	// or mDNS.
	for _, set := range [][]string{{"default-route", "no"}, {"dnssec", "no"}, {"dnsovertls", "no"}, {"llmnr", "no"}, {"mdns", "no"}} {
		r.run(set[0], r.Link, set[1])
	}
	return nil
}

// Revert removes what Register set on Link.
func (r *Resolved) Revert() error {
	if err := r.Available(); err != nil {
		return err
	}
	return r.run("revert", r.Link)
}

func (r *Resolved) run(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), r.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.Resolvectl, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		return fmt.Errorf("resolvectl %s: %w: %s", strings.Join(args, " "), err, msg)
	}
	return nil
}
