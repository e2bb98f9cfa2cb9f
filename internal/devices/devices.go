// Package devices owns the plain WireGuard devices a node hosts (phones,
// tablets, wg-quick): their records (a name and a public key, never the
// private key) kept in a state file, and the wg-quick configuration a new
// device is given. A hosted device's address is derived from its key like
// every node's; its home node forwards between it and the overlay, and
// other nodes accept its address from the home only when their config
// lists it (config peers[].devices).
//
// The package imports no other internal package but identity and
// statefile: what a device means to the WireGuard device, the filter and
// the routes is the node's business.
package devices

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/statefile"
)

// Max is how many devices one node hosts at most (each is a static peer
// and an AllowedIPs entry on every node that lists it).
const Max = 256

// maxName bounds a device's name.
const maxName = 64

// Device is one hosted device.
type Device struct {
	Name      string             `json:"name"`
	PublicKey identity.PublicKey `json:"public_key"`
	Added     time.Time          `json:"added"`
}

// Address is the device's node address.
func (d Device) Address() netip.Addr { return d.PublicKey.Address() }

type state struct {
	Version int      `json:"version"`
	Devices []Device `json:"devices"`
}

// Errors callers tell apart (the admin API maps them to 400, 404, 409).
var (
	ErrBadName  = errors.New("bad device name")
	ErrNotFound = errors.New("no such device")
	ErrExists   = errors.New("device exists")
	ErrFull     = errors.New("too many devices")
)

// Store is a node's hosted devices, persisted in its file (mode 0600).
// It is safe for concurrent use.
type Store struct {
	file statefile.File
	mu   sync.Mutex // guards st and the file
	st   state
}

// Open reads the file (no devices if there is none).
func Open(path string) (*Store, error) {
	s := &Store{
		file: statefile.File{Path: path, What: "device list", Forget: "the devices added with tomoe device add (they lose their home)"},
		st:   state{Version: statefile.Version},
	}
	if _, err := s.file.Load(&s.st, &s.st.Version); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	keys := map[identity.PublicKey]bool{}
	for _, d := range s.st.Devices {
		if err := CheckName(d.Name); err != nil || d.PublicKey.IsZero() || seen[d.Name] || keys[d.PublicKey] {
			return nil, s.file.Corrupt(fmt.Errorf("device %q", d.Name))
		}
		seen[d.Name], keys[d.PublicKey] = true, true
	}
	if len(s.st.Devices) > Max {
		return nil, s.file.Corrupt(fmt.Errorf("%d devices, at most %d", len(s.st.Devices), Max))
	}
	return s, nil
}

// Path is the file's path.
func (s *Store) Path() string { return s.file.Path }

// CheckName accepts 1 to 64 letters, digits, '-', '_' and '.', starting
// with a letter or digit: a name that is safe in a file name, a log line
// and a DNS label.
func CheckName(name string) error {
	if name == "" || len(name) > maxName {
		return fmt.Errorf("%w %q: 1 to %d characters", ErrBadName, name, maxName)
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || (i > 0 && (r == '-' || r == '_' || r == '.'))
		if !ok {
			return fmt.Errorf("%w %q: use letters, digits, '-', '_' and '.', starting with a letter or digit", ErrBadName, name)
		}
	}
	return nil
}

// List returns the devices in the order they were added.
func (s *Store) List() []Device {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.st.Devices)
}

// Add records a device and saves the file. The name and the key must be
// new.
func (s *Store) Add(d Device) error {
	if err := CheckName(d.Name); err != nil {
		return err
	}
	if d.PublicKey.IsZero() {
		return errors.New("device without a public key")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.st.Devices {
		if strings.EqualFold(o.Name, d.Name) {
			return fmt.Errorf("%w: %q is taken (tomoe device remove %s first)", ErrExists, o.Name, o.Name)
		}
		if o.PublicKey == d.PublicKey {
			return fmt.Errorf("%w: that key is device %q", ErrExists, o.Name)
		}
	}
	if len(s.st.Devices) >= Max {
		return fmt.Errorf("%w: this node hosts %d devices already, the most it may", ErrFull, Max)
	}
	next := append(slices.Clone(s.st.Devices), d)
	if err := s.file.Save(state{Version: statefile.Version, Devices: next}); err != nil {
		return err
	}
	s.st.Devices = next
	return nil
}

// Remove forgets the device named nameOrKey (its name, public key or node
// address), saves the file and returns it.
func (s *Store) Remove(nameOrKey string) (Device, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.findLocked(nameOrKey)
	if i < 0 {
		return Device{}, fmt.Errorf("%w %q (tomoe device list)", ErrNotFound, nameOrKey)
	}
	d := s.st.Devices[i]
	next := slices.Delete(slices.Clone(s.st.Devices), i, i+1)
	if err := s.file.Save(state{Version: statefile.Version, Devices: next}); err != nil {
		return Device{}, err
	}
	s.st.Devices = next
	return d, nil
}

func (s *Store) findLocked(q string) int {
	q = strings.TrimSpace(q)
	var key identity.PublicKey
	isKey := key.UnmarshalText([]byte(q)) == nil
	addr, err := netip.ParseAddr(q)
	isAddr := err == nil
	return slices.IndexFunc(s.st.Devices, func(d Device) bool {
		return strings.EqualFold(d.Name, q) || (isKey && d.PublicKey == key) || (isAddr && d.Address() == addr)
	})
}
