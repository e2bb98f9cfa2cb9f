package routes

import (
	"fmt"
	"os"
	"strings"
)

// Forwarding sysctls: a node that offers routes forwards between the TUN
// and its LAN.
const (
	forward4 = "/proc/sys/net/ipv4/ip_forward"
	forward6 = "/proc/sys/net/ipv6/conf/all/forwarding"
)

// Forwarding turns the host's IPv4 and IPv6 forwarding on as needed and
// remembers what it changed, so that Restore puts it back. Turning IPv6
// forwarding on makes Linux ignore router advertisements on interfaces
// with accept_ra = 1; a host that configures itself by SLAAC needs
// accept_ra = 2 on its uplink to keep doing so (README says so).
type Forwarding struct {
	changed []string // sysctls this node switched from 0 to 1
}

// Enable switches forwarding on for the families asked for. It does not
// switch anything off: forwarding another program turned on stays on.
func (f *Forwarding) Enable(v4, v6 bool) error {
	for _, want := range []struct {
		on   bool
		path string
	}{{v4, forward4}, {v6, forward6}} {
		if !want.on {
			continue
		}
		b, err := os.ReadFile(want.path)
		if err != nil {
			return fmt.Errorf("forwarding: %w", err)
		}
		if strings.TrimSpace(string(b)) != "0" {
			continue
		}
		if err := os.WriteFile(want.path, []byte("1\n"), 0o644); err != nil {
			return fmt.Errorf("forwarding: enable %s: %w", want.path, err)
		}
		f.changed = append(f.changed, want.path)
	}
	return nil
}

// Changed lists the sysctls Enable switched on.
func (f *Forwarding) Changed() []string { return f.changed }

// Restore switches off what Enable switched on.
func (f *Forwarding) Restore() error {
	var errs []string
	for _, p := range f.changed {
		if err := os.WriteFile(p, []byte("0\n"), 0o644); err != nil {
			errs = append(errs, err.Error())
		}
	}
	f.changed = nil
	if len(errs) > 0 {
		return fmt.Errorf("forwarding: restore: %s", strings.Join(errs, "; "))
	}
	return nil
}
