//go:build linux

package privdrop

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/cap"
)

// Keep are the capabilities the node keeps, each for what it does after
// the drop (README "Privilege separation" says the same):
//   - CAP_NET_ADMIN: every change to the host's network while the node
//     runs: routes and addresses over netlink (peers, routes offered and
//     accepted), ip rules, nftables (stealth, masquerade, the rules that
//     cut a revoked peer's flows), conntrack entries, SO_MARK on its
//     sockets, the forwarding sysctls under /proc/sys/net (which the
//     namespace's CAP_NET_ADMIN may write), and removing it all at exit.
//   - CAP_NET_BIND_SERVICE: listeners opened after the drop on ports
//     below 1024, the services exposed while the node runs (`tomoe expose
//     add 80 ...`, a config reload).
//
// Not kept: CAP_NET_RAW, which SO_BINDTODEVICE (the exposed services'
// and the DNS server's sockets) needs only on kernels before 5.7;
// CAP_SETUID, CAP_SETGID, CAP_SETPCAP, CAP_DAC_OVERRIDE, CAP_CHOWN and
// the rest: nothing after the drop needs them.
var Keep = []cap.Value{cap.NET_ADMIN, cap.NET_BIND_SERVICE}

// KeepMask is Keep as a bit mask (bit n = capability n), as /proc shows
// capability sets.
func KeepMask() uint64 {
	var m uint64
	for _, v := range Keep {
		m |= 1 << uint(v)
	}
	return m
}

// KeepNames are Keep's names ("cap_net_admin", ...).
func KeepNames() []string {
	names := make([]string, len(Keep))
	for i, v := range Keep {
		names[i] = v.String()
	}
	return names
}

// Drop hands the run user its directories and files (see Prepare; files
// are more the node made outside them, as the admin socket), then makes
// every thread of the process run as the user with only Keep. It fails,
// and the caller must stop the node, if any step or the check of every
// thread afterwards fails.
func (p *Plan) Drop(files ...string) error {
	t := p.Target
	if os.Geteuid() != 0 {
		return errors.New("privdrop: not running as root: nothing to drop")
	}
	if t.UID == 0 {
		return fmt.Errorf("privdrop: user %s has uid 0", t.Name)
	}
	if err := p.handOver(files); err != nil {
		return err
	}
	keep := map[cap.Value]bool{}
	for _, v := range Keep {
		keep[v] = true
	}
	// The bounding set first: dropping from it needs CAP_SETPCAP, which
	// goes with root below. What is not in it already (a container's, a
	// unit's CapabilityBoundingSet=) needs no drop.
	var bound []cap.Value
	for v := cap.Value(0); v < cap.MaxBits(); v++ {
		if in, err := cap.GetBound(v); !keep[v] && (in || err != nil) {
			bound = append(bound, v)
		}
	}
	if err := cap.DropBound(bound...); err != nil {
		return fmt.Errorf("privdrop: reduce the bounding set: %w", err)
	}
	if err := cap.ResetAmbient(); err != nil {
		return fmt.Errorf("privdrop: clear the ambient set: %w", err)
	}
	// The group and no supplementary groups, then the uid (real,
	// effective, saved and filesystem), keeping the permitted set across
	// it, then the sets: Keep, and nothing more.
	if err := cap.SetGroups(t.GID); err != nil {
		return fmt.Errorf("privdrop: set group %d: %w", t.GID, err)
	}
	if err := cap.SetUID(t.UID); err != nil {
		return fmt.Errorf("privdrop: set uid %d: %w", t.UID, err)
	}
	set := cap.NewSet()
	if err := set.SetFlag(cap.Permitted, true, Keep...); err != nil {
		return fmt.Errorf("privdrop: %w", err)
	}
	if err := set.SetFlag(cap.Effective, true, Keep...); err != nil {
		return fmt.Errorf("privdrop: %w", err)
	}
	if err := set.SetProc(); err != nil {
		return fmt.Errorf("privdrop: set capabilities %s: %w", set, err)
	}
	if _, err := cap.Prctlw(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("privdrop: set no_new_privs: %w", err)
	}
	return p.check()
}

// check reads every thread's credentials and fails unless each is what
// Drop set.
func (p *Plan) check() error {
	tasks, err := filepath.Glob("/proc/self/task/*/status")
	if err != nil || len(tasks) == 0 {
		return fmt.Errorf("privdrop: list this process's threads: %v", err)
	}
	t, want := p.Target, KeepMask()
	for _, path := range tasks {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // the thread exited
		}
		c, err := parseStatus(b)
		if err != nil {
			return fmt.Errorf("privdrop: %s: %w", path, err)
		}
		ok := c.UID == [4]int{t.UID, t.UID, t.UID, t.UID} && c.GID == [4]int{t.GID, t.GID, t.GID, t.GID} &&
			len(c.Groups) == 0 && c.Eff == want && c.Prm == want && c.Inh == 0 && c.Amb == 0 && c.Bnd == want && c.NoNewPrivs
		if !ok {
			return fmt.Errorf("privdrop: thread %s kept other credentials than asked: %+v", filepath.Base(filepath.Dir(path)), c)
		}
	}
	return nil
}

// Current returns the calling thread's credentials; after Drop every
// thread has the same.
func Current() (Creds, error) {
	b, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		return Creds{}, err
	}
	return parseStatus(b)
}

// parseStatus reads the credential lines of /proc/PID/status.
func parseStatus(b []byte) (Creds, error) {
	var c Creds
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(val)
		var err error
		switch key {
		case "Uid":
			err = ids(f, &c.UID)
		case "Gid":
			err = ids(f, &c.GID)
		case "Groups":
			for _, s := range f {
				g, perr := strconv.Atoi(s)
				if perr != nil {
					err = perr
				}
				c.Groups = append(c.Groups, g)
			}
		case "CapInh":
			c.Inh, err = capHex(f)
		case "CapPrm":
			c.Prm, err = capHex(f)
		case "CapEff":
			c.Eff, err = capHex(f)
		case "CapBnd":
			c.Bnd, err = capHex(f)
		case "CapAmb":
			c.Amb, err = capHex(f)
		case "NoNewPrivs":
			c.NoNewPrivs = len(f) == 1 && f[0] == "1"
		default:
			continue
		}
		if err != nil {
			return Creds{}, fmt.Errorf("%s: %w", key, err)
		}
		seen++
	}
	if seen < 9 {
		return Creds{}, errors.New("credential lines missing")
	}
	return c, nil
}

func ids(f []string, dst *[4]int) error {
	if len(f) != 4 {
		return fmt.Errorf("%d ids, want 4", len(f))
	}
	for i, s := range f {
		n, err := strconv.Atoi(s)
		if err != nil {
			return err
		}
		dst[i] = n
	}
	return nil
}

func capHex(f []string) (uint64, error) {
	if len(f) != 1 {
		return 0, errors.New("want one hex number")
	}
	return strconv.ParseUint(f[0], 16, 64)
}

// CapNames are the names of the capabilities in mask (bit n =
// capability n), e.g. "cap_net_admin"; never nil.
func CapNames(mask uint64) []string {
	names := []string{}
	for v := cap.Value(0); v < 64; v++ {
		if mask&(1<<uint(v)) != 0 {
			names = append(names, v.String())
		}
	}
	return names
}
