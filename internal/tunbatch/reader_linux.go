package tunbatch

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// maxFrame is the largest frame a read can return: the virtio-net header
// and a 64 KiB super-packet.
const maxFrame = HeaderLen + 65535

// Reader reads a kernel TUN device (tun.CreateTUN with offloads on, so
// every frame carries a virtio-net header) in full batches: dev.Read
// (wireguard-go's own) takes the first frame, waiting for it, and the
// Reader then reads whatever else is queued on the device's file, without
// waiting, into the rest of bufs. A frame whose packets do not fit what is
// left of bufs is kept and handed out first by the next Read.
//
// Like dev.Read, Read must not be called from two goroutines at once.
type Reader struct {
	dev  tun.Device
	rc   syscall.RawConn
	buf  []byte // scratch for one frame
	pend []byte // a frame read ahead that did not fit, or empty

	extra, dropped atomic.Uint64
}

// NewReader wraps dev, a kernel TUN device that hands up virtio-net
// headers (dev.BatchSize() > 1 says so for wireguard-go's TUN), reading
// ahead on file, dev's file. It returns nil if the device has no headers
// or its file cannot be read without waiting; then dev.Read is all there
// is.
func NewReader(dev tun.Device, file *os.File) *Reader {
	if dev.BatchSize() <= 1 || file == nil {
		return nil
	}
	rc, err := file.SyscallConn()
	if err != nil {
		return nil
	}
	if cerr := rc.Control(func(fd uintptr) { err = checkFile(int(fd)) }); cerr != nil || err != nil {
		return nil
	}
	return &Reader{dev: dev, rc: rc, buf: make([]byte, maxFrame), pend: make([]byte, 0, maxFrame)}
}

// checkFile reports whether fd can be read ahead: non-blocking (a read on
// a blocking descriptor, as tun.CreateTUNFromFile may be given, waits for
// a frame whatever the callback says), a TUN device opened with
// IFF_VNET_HDR, and headers of the size Split parses.
func checkFile(fd int) error {
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	if flags&unix.O_NONBLOCK == 0 {
		return errors.New("blocking file")
	}
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return err
	}
	if ifr.Uint16()&unix.IFF_VNET_HDR == 0 {
		return errors.New("no virtio-net headers")
	}
	if sz, err := unix.IoctlGetInt(fd, unix.TUNGETVNETHDRSZ); err != nil || sz != HeaderLen {
		return fmt.Errorf("virtio-net header of %d bytes (%v)", sz, err)
	}
	return nil
}

// Stats returns the packets read ahead (beyond dev.Read's) and the frames
// read ahead that were dropped as malformed.
func (r *Reader) Stats() (extra, dropped uint64) { return r.extra.Load(), r.dropped.Load() }

// Read fills bufs[i][offset:] with packets and sizes[i] with their
// lengths, returning how many. It waits only for the first frame (and not
// at all when one is pending). Errors are dev.Read's.
func (r *Reader) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	var n int
	if len(r.pend) > 0 {
		k, err := Split(r.pend, bufs, sizes, offset)
		r.pend = r.pend[:0]
		if err != nil {
			// It did not fit an empty batch either: not a frame of this
			// device's MTU and offset.
			r.dropped.Add(1)
		} else {
			n = k
			r.extra.Add(uint64(k))
		}
	}
	if n == 0 {
		k, err := r.dev.Read(bufs, sizes, offset)
		if err != nil || k == 0 {
			return k, err
		}
		n = k
	}
	return r.readAhead(bufs, sizes, offset, n), nil
}

// readAhead reads queued frames into bufs[n:] until the device has none
// left, a frame does not fit (it is kept in pend), or bufs is full.
func (r *Reader) readAhead(bufs [][]byte, sizes []int, offset, n int) int {
	for n < len(bufs) && n < len(sizes) {
		m := r.tryRead()
		if m <= 0 {
			return n
		}
		k, err := Split(r.buf[:m], bufs[n:], sizes[n:], offset)
		switch {
		case errors.Is(err, ErrNoRoom):
			r.buf, r.pend = r.pend[:cap(r.pend)], r.buf[:m]
			return n
		case err != nil:
			r.dropped.Add(1)
		default:
			n += k
			r.extra.Add(uint64(k))
		}
	}
	return n
}

// tryRead reads one frame into r.buf if one is queued, returning its
// length, or 0 if none is (or the file is closed or past its deadline:
// the next dev.Read reports those).
func (r *Reader) tryRead() int {
	var m int
	var rerr error
	err := r.rc.Read(func(fd uintptr) bool {
		m, rerr = unix.Read(int(fd), r.buf)
		return true // never wait
	})
	if err != nil || rerr != nil {
		return 0
	}
	return m
}
