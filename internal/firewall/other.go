//go:build !linux

package firewall

import (
	"errors"
	"net/netip"
	"runtime"
)

// errNoNftables says why there is no firewall here, and what it means.
var errNoNftables = errors.New("the kernel-mode firewall (anti-spoofing of overlay addresses, stealth, masquerade) needs Linux's nftables, not available on " + runtime.GOOS +
	": a host firewall (pf on macOS and FreeBSD, Windows Defender Firewall) must drop packets with overlay addresses (fc00::/8) that arrive on other interfaces")

// Firewall is never installed off Linux: Open fails.
type Firewall struct{}

// Open fails off Linux (see errNoNftables).
func Open(cfg Config) (*Firewall, error) { return nil, errNoNftables }

// Update fails off Linux.
func (f *Firewall) Update(cfg Config) error { return errNoNftables }

// SetPeers fails off Linux.
func (f *Firewall) SetPeers(addrs []netip.Addr) error { return errNoNftables }

// Close has nothing to remove.
func (f *Firewall) Close() error { return nil }
