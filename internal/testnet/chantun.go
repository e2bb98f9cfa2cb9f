package testnet

import (
	"os"
	"sync"

	"golang.zx2c4.com/wireguard/tun"
)

// ChanTUN is an in-memory TUN device for a node (node.Options.TUN): the
// test plays the host's stack. Packets the stack sends go into FromStack;
// packets the node delivers come out of ToStack (dropped when the test
// does not keep up, as a full TUN queue drops). It has the Interrupt that
// tunwrap.Device asks for.
type ChanTUN struct {
	FromStack chan []byte
	ToStack   chan []byte
	mtu       int
	interrupt chan struct{}
	events    chan tun.Event // closed by Close: wireguard-go ranges over it
	closed    chan struct{}
	once      sync.Once
}

// NewChanTUN returns a device with the given MTU.
func NewChanTUN(mtu int) *ChanTUN {
	return &ChanTUN{FromStack: make(chan []byte, 256), ToStack: make(chan []byte, 256), mtu: mtu,
		interrupt: make(chan struct{}, 1), events: make(chan tun.Event), closed: make(chan struct{})}
}

func (d *ChanTUN) File() *os.File           { return nil }
func (d *ChanTUN) MTU() (int, error)        { return d.mtu, nil }
func (d *ChanTUN) Name() (string, error)    { return "chantun", nil }
func (d *ChanTUN) Events() <-chan tun.Event { return d.events }
func (d *ChanTUN) BatchSize() int           { return 16 }
func (d *ChanTUN) Close() error {
	d.once.Do(func() {
		close(d.closed)
		close(d.events)
	})
	return nil
}

// Interrupt makes a blocked Read return (0, nil).
func (d *ChanTUN) Interrupt() {
	select {
	case d.interrupt <- struct{}{}:
	default:
	}
}

func (d *ChanTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case p := <-d.FromStack:
		sizes[0] = copy(bufs[0][offset:], p)
		return 1, nil
	case <-d.interrupt:
		return 0, nil
	case <-d.closed:
		return 0, os.ErrClosed
	}
}

func (d *ChanTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		select {
		case d.ToStack <- append([]byte(nil), b[offset:]...):
		default:
		}
	}
	return len(bufs), nil
}
