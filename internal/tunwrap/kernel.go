package tunwrap

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/tomoe-net/tomoe/internal/tunbatch"
)

// kernelTUN makes a kernel TUN device interruptible through the read
// deadline of its file, which wireguard-go opens non-blocking so that Go's
// poller serves it. Interrupt arms a flag and sets a deadline in the past;
// Read returns (0, nil) when it finds the flag armed or the deadline hit,
// clearing the deadline. A Read that blocks always does so after it found
// the flag clear, and every Interrupt sets the deadline after arming the
// flag, so no Interrupt is lost.
//
// On Linux it reads in full batches (tunbatch): after the device's own
// Read, whatever else is queued, without waiting.
type kernelTUN struct {
	tun.Device
	file  *os.File
	batch *tunbatch.Reader // nil: the device's Read alone
	armed atomic.Bool
}

// Kernel adapts a kernel TUN device (tun.CreateTUN) to Device. A device
// without a file (Windows' Wintun) is read by a goroutine (pumpedTUN).
func Kernel(dev tun.Device) (Device, error) {
	f := dev.File()
	if f == nil {
		return pumped(dev), nil
	}
	// Probe: a file the poller does not serve cannot take deadlines.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("kernel tun: read deadlines unsupported: %w", err)
	}
	return &kernelTUN{Device: dev, file: f, batch: tunbatch.NewReader(dev, f)}, nil
}

// ReadAhead implements ReadAheader: tunbatch's counters, or false where
// the device is read one frame at a time.
func (k *kernelTUN) ReadAhead() (extra, malformed uint64, ok bool) {
	if k.batch == nil {
		return 0, 0, false
	}
	extra, malformed = k.batch.Stats()
	return extra, malformed, true
}

// pastDeadline is any time in the past.
var pastDeadline = time.Unix(1, 0)

func (k *kernelTUN) Interrupt() {
	k.armed.Store(true)
	k.file.SetReadDeadline(pastDeadline)
}

func (k *kernelTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if k.armed.Swap(false) {
		k.file.SetReadDeadline(time.Time{})
		return 0, nil
	}
	var n int
	var err error
	if k.batch != nil {
		n, err = k.batch.Read(bufs, sizes, offset)
	} else {
		n, err = k.Device.Read(bufs, sizes, offset)
	}
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		k.file.SetReadDeadline(time.Time{})
		return 0, nil
	}
	return n, err
}
