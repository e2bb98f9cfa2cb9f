//go:build !linux

package tunbatch

import (
	"os"

	"golang.zx2c4.com/wireguard/tun"
)

// Reader reads ahead only on Linux; elsewhere NewReader returns nil.
type Reader struct{}

// NewReader returns nil: only Linux TUN devices hand up virtio-net headers.
func NewReader(tun.Device, *os.File) *Reader { return nil }

// Read is never called on a nil Reader.
func (*Reader) Read([][]byte, []int, int) (int, error) { return 0, os.ErrInvalid }

// Stats returns zeros.
func (*Reader) Stats() (extra, dropped uint64) { return 0, 0 }
