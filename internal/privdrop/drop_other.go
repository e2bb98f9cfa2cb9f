//go:build !linux

package privdrop

import "errors"

var errNotLinux = errors.New("privdrop: giving up root is implemented on Linux only; set run.user = \"root\"")

// Plan is a drop prepared before the node starts.
type Plan struct{ Target Target }

// Prepare fails: see errNotLinux.
func Prepare(t Target, dirs, keep []string) (*Plan, error) { return nil, errNotLinux }

// Drop fails: see errNotLinux.
func (p *Plan) Drop(files ...string) error { return errNotLinux }

// KeepNames is empty: nothing is dropped here.
func KeepNames() []string { return nil }

// Current fails: see errNotLinux.
func Current() (Creds, error) { return Creds{}, errNotLinux }

// CapNames is empty here.
func CapNames(mask uint64) []string { return []string{} }
