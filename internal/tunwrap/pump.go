package tunwrap

import (
	"os"
	"sync"

	"golang.zx2c4.com/wireguard/tun"
)

// pumpedTUN makes a TUN device without a pollable file (Windows' Wintun
// adapter, whose File is nil) interruptible: a goroutine reads it and
// hands the packets over a channel, which Read can leave when Interrupt
// is called. That costs the goroutine and one copy a packet, which
// kernelTUN avoids where the device has a file.
type pumpedTUN struct {
	tun.Device
	pkts   chan []byte   // read from the device, in order
	wake   chan struct{} // Interrupt's signal, at most one pending
	failed chan struct{} // closed when the device's Read failed; err says why
	done   chan struct{} // closed by Close
	err    error         // set before failed is closed
	once   sync.Once
}

// pumpQueue bounds the packets read ahead of Read.
const pumpQueue = 256

func pumped(dev tun.Device) *pumpedTUN {
	p := &pumpedTUN{Device: dev, pkts: make(chan []byte, pumpQueue), wake: make(chan struct{}, 1),
		failed: make(chan struct{}), done: make(chan struct{})}
	go p.pump()
	return p
}

func (p *pumpedTUN) pump() {
	batch := max(p.Device.BatchSize(), 1)
	bufs := make([][]byte, batch)
	for i := range bufs {
		bufs[i] = make([]byte, 1<<16)
	}
	sizes := make([]int, batch)
	for {
		n, err := p.Device.Read(bufs, sizes, 0)
		for i := range n {
			pkt := append([]byte(nil), bufs[i][:sizes[i]]...)
			select {
			case p.pkts <- pkt:
			case <-p.done:
				return
			}
		}
		if err != nil {
			p.err = err
			close(p.failed)
			return
		}
	}
}

func (p *pumpedTUN) Interrupt() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *pumpedTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	put := func(pkt []byte) {
		// A packet too large for the buffer is dropped, as a TUN
		// device would.
		if len(pkt) <= len(bufs[n])-offset {
			sizes[n] = copy(bufs[n][offset:], pkt)
			n++
		}
	}
	select {
	case pkt := <-p.pkts:
		put(pkt)
	case <-p.wake:
		return 0, nil
	case <-p.failed:
		return 0, p.err
	case <-p.done:
		return 0, os.ErrClosed
	}
	for n < len(bufs) {
		select {
		case pkt := <-p.pkts:
			put(pkt)
		default:
			return n, nil
		}
	}
	return n, nil
}

func (p *pumpedTUN) Close() error {
	var err error
	p.once.Do(func() {
		err = p.Device.Close()
		close(p.done)
	})
	return err
}
