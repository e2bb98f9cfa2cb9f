package client

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/transport"
)

// clientTCP is a node's TCP connection to a bridge, used when UDP gets no
// answer: control frames and relay frames, each with a two-byte length.
type clientTCP struct {
	b    *bridgeConn
	conn net.Conn

	wmu  sync.Mutex
	w    *bufio.Writer
	done chan struct{}
	once sync.Once
}

func (b *bridgeConn) dialTCP(addr netip.AddrPort) error {
	dial := b.c.cfg.DialTCP
	if dial == nil {
		d := net.Dialer{Control: transport.MarkControl(b.c.cfg.Mark)}
		dial = d.DialContext
	}
	ctx, cancel := context.WithTimeout(context.Background(), tcpDialTimeout)
	conn, err := dial(ctx, "tcp", addr.String())
	cancel()
	if err != nil {
		return err
	}
	t := &clientTCP{b: b, conn: conn, w: bufio.NewWriterSize(conn, 64<<10), done: make(chan struct{})}
	b.mu.Lock()
	old := b.tcp
	b.tcp = t
	b.mu.Unlock()
	if old != nil {
		old.close()
	}
	b.c.wg.Add(1)
	go t.readLoop()
	return nil
}

func (b *bridgeConn) closeTCP() {
	b.mu.Lock()
	t := b.tcp
	b.tcp = nil
	if b.transport == "tcp" {
		b.transport = ""
	}
	b.mu.Unlock()
	if t != nil {
		// Peers' paths keep pointing at it until the next registration
		// moves them (repointRelays); sends fail meanwhile.
		t.close()
	}
}

func (t *clientTCP) close() {
	t.once.Do(func() {
		close(t.done)
		t.conn.Close()
	})
}

// SendRelay implements transport.Relay.
func (t *clientTCP) SendRelay(frames [][]byte) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	_ = t.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	for _, f := range frames {
		if err := t.writeLocked(f); err != nil {
			return err
		}
	}
	return t.flushLocked()
}

func (t *clientTCP) String() string { return t.conn.RemoteAddr().String() + "/tcp" }

func (t *clientTCP) write(frame []byte) {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	_ = t.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if t.writeLocked(frame) == nil {
		_ = t.flushLocked()
	}
}

func (t *clientTCP) writeLocked(frame []byte) error {
	if len(frame) > wire.MaxFrame {
		return io.ErrShortWrite
	}
	var l [2]byte
	binary.BigEndian.PutUint16(l[:], uint16(len(frame)))
	if _, err := t.w.Write(l[:]); err != nil {
		t.close()
		return err
	}
	if _, err := t.w.Write(frame); err != nil {
		t.close()
		return err
	}
	return nil
}

func (t *clientTCP) flushLocked() error {
	if err := t.w.Flush(); err != nil {
		t.close()
		return err
	}
	return nil
}

// readLoop reads frames from the bridge until the connection ends.
func (t *clientTCP) readLoop() {
	defer t.b.c.wg.Done()
	defer t.close()
	r := bufio.NewReaderSize(t.conn, 64<<10)
	buf := make([]byte, wire.MaxFrame)
	for {
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(l[:]))
		frame := buf[:n]
		if _, err := io.ReadFull(r, frame); err != nil {
			return
		}
		if id, msg, ok := wire.ParseRelay(frame); ok {
			t.b.c.cfg.Bind.Deliver(msg, t, id)
			continue
		}
		t.b.c.handleFrame(frame, netip.AddrPort{}, t.b)
	}
}
