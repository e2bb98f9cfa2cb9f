//go:build !linux

package l2

import (
	"errors"
	"net/netip"
	"runtime"
)

// Manager holds the segments this node set up (Linux only).
type Manager struct{}

// Start fails: virtual Ethernet is built on Linux only.
func Start(cfg Config) (*Manager, error) {
	return nil, errors.New("l2: virtual Ethernet is built on Linux only, not on " + runtime.GOOS)
}

// Close does nothing.
func (m *Manager) Close() error { return nil }

// Status fails: there are no segments.
func (m *Manager) Status(up func(netip.Addr) bool) ([]Status, error) {
	return nil, errors.New("l2: virtual Ethernet is built on Linux only")
}

// Update fails: virtual Ethernet is built on Linux only.
func (m *Manager) Update(segs []Segment) error {
	return errors.New("l2: virtual Ethernet is built on Linux only")
}
