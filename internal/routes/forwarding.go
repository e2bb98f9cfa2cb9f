package routes

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/tomoe-net/tomoe/internal/statefile"
)

// Forwarding sysctls: a node that offers routes forwards between the TUN
// and its LAN. The record names them by their sysctl names.
var forwardSysctls = map[string]string{
	"net.ipv4.ip_forward":          "/proc/sys/net/ipv4/ip_forward",
	"net.ipv6.conf.all.forwarding": "/proc/sys/net/ipv6/conf/all/forwarding",
}

const (
	forward4 = "net.ipv4.ip_forward"
	forward6 = "net.ipv6.conf.all.forwarding"
)

// Forwarding turns the host's IPv4 and IPv6 forwarding on as needed and
// remembers what it changed, so that Restore puts it back. Turning IPv6
// forwarding on makes Linux ignore router advertisements on interfaces
// with accept_ra = 1; a host that configures itself by SLAAC needs
// accept_ra = 2 on its uplink to keep doing so (README says so).
//
// A node killed before Restore would leave forwarding on, and the next
// start would take it for the host's own setting. So, with Record set,
// Enable writes the original values to that file before it changes them,
// Restore removes it, and Recover, at the next start, puts back what a
// record left behind says.
//
// The sysctls belong to the network namespace of the thread that writes
// them; tomoe runs in one namespace, so the record applies to it.
type Forwarding struct {
	// Record is the file that holds the original values while they are
	// changed; "" keeps none.
	Record string

	changed []string // sysctl names switched from 0 to 1, in order
}

// forwardingRecord is the record's content.
type forwardingRecord struct {
	Version int `json:"version"`
	// Original maps each sysctl this node switched on to the value it
	// had before.
	Original map[string]string `json:"original"`
	// Boot and Netns say which boot of the host and which network
	// namespace the values belong to: after a reboot (the sysctls were
	// reset, and another program may have set them since) or in another
	// namespace, the record is stale and nothing is written.
	Boot  string `json:"boot,omitempty"`
	Netns string `json:"netns,omitempty"`
}

// bootAndNetns identify this boot of the host and the calling thread's
// network namespace ("" where unknown).
func bootAndNetns() (boot, netns string) {
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		boot = strings.TrimSpace(string(b))
	}
	netns, _ = os.Readlink("/proc/thread-self/ns/net")
	return boot, netns
}

func (f *Forwarding) file() statefile.File {
	return statefile.File{Path: f.Record, What: "forwarding record",
		Forget: "which forwarding sysctls tomoe switched on (then check net.ipv4.ip_forward and net.ipv6.conf.all.forwarding by hand)"}
}

// Recover puts back the sysctls that a record left by a tomoe that did
// not exit cleanly lists, and removes the record; it returns the sysctls
// it wrote. Call it at start, before Enable.
func (f *Forwarding) Recover() ([]string, error) {
	if f.Record == "" {
		return nil, nil
	}
	var rec forwardingRecord
	found, err := f.file().Load(&rec, &rec.Version)
	if err != nil || !found {
		return nil, err
	}
	// Written as root from a file: only the two sysctls, only 0 or 1.
	for name, v := range rec.Original {
		if _, ok := forwardSysctls[name]; !ok || (v != "0" && v != "1") {
			return nil, f.file().Corrupt(fmt.Errorf("%s = %q is not a forwarding sysctl and 0 or 1", name, v))
		}
	}
	boot, netns := bootAndNetns()
	if (rec.Boot != "" && rec.Boot != boot) || (rec.Netns != "" && rec.Netns != netns) {
		// Another boot or namespace: its values are not ours to restore.
		if err := os.Remove(f.Record); err != nil {
			return nil, fmt.Errorf("forwarding: %w", err)
		}
		return nil, nil
	}
	names := slices.Sorted(maps.Keys(rec.Original))
	for _, name := range names {
		if err := os.WriteFile(forwardSysctls[name], []byte(rec.Original[name]+"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("forwarding: restore %s from %s: %w", name, f.Record, err)
		}
	}
	if err := os.Remove(f.Record); err != nil {
		return names, fmt.Errorf("forwarding: %w", err)
	}
	return names, nil
}

// Enable switches forwarding on for the families asked for. It does not
// switch anything off: forwarding another program turned on stays on.
func (f *Forwarding) Enable(v4, v6 bool) error {
	for _, want := range []struct {
		on   bool
		name string
	}{{v4, forward4}, {v6, forward6}} {
		if !want.on || slices.Contains(f.changed, want.name) {
			continue
		}
		path := forwardSysctls[want.name]
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("forwarding: %w", err)
		}
		if strings.TrimSpace(string(b)) != "0" {
			continue
		}
		// Recorded first: a crash between the two leaves a record of a
		// change not made, which Recover undoes by writing 0 over 0.
		f.changed = append(f.changed, want.name)
		if err := f.save(); err != nil {
			f.changed = f.changed[:len(f.changed)-1]
			return err
		}
		if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
			f.changed = f.changed[:len(f.changed)-1]
			return errors.Join(fmt.Errorf("forwarding: enable %s: %w", want.name, err), f.save())
		}
	}
	return nil
}

// save writes the record of f.changed (nothing without Record), or
// removes it when nothing is changed.
func (f *Forwarding) save() error {
	if f.Record == "" {
		return nil
	}
	if len(f.changed) == 0 {
		if err := os.Remove(f.Record); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("forwarding: %w", err)
		}
		return nil
	}
	rec := forwardingRecord{Version: statefile.Version, Original: map[string]string{}}
	rec.Boot, rec.Netns = bootAndNetns()
	for _, name := range f.changed {
		rec.Original[name] = "0"
	}
	return f.file().Save(rec)
}

// Changed lists the sysctls Enable switched on, by name.
func (f *Forwarding) Changed() []string { return f.changed }

// Restore switches off what Enable switched on and removes the record; if
// a sysctl cannot be written, the record stays for Recover.
func (f *Forwarding) Restore() error {
	if len(f.changed) == 0 {
		return nil
	}
	var errs []string
	for _, name := range f.changed {
		if err := os.WriteFile(forwardSysctls[name], []byte("0\n"), 0o644); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		f.changed = nil
		return fmt.Errorf("forwarding: restore: %s", strings.Join(errs, "; "))
	}
	f.changed = nil
	return f.save()
}
