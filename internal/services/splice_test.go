package services

import (
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	return connPair(t, listenLoopback(t))
}

// unixPair returns the two ends of a Unix stream connection.
func unixPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("unix", t.TempDir()+"/s")
	if err != nil {
		t.Fatal(err)
	}
	return connPair(t, ln)
}

// connPair connects to ln, accepts, closes ln and returns both ends.
func connPair(t *testing.T, ln net.Listener) (net.Conn, net.Conn) {
	t.Helper()
	defer ln.Close()
	var srv net.Conn
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv, err = ln.Accept()
	}()
	cli, derr := net.Dial(ln.Addr().Network(), ln.Addr().String())
	<-done
	if derr != nil || err != nil {
		t.Fatal(derr, err)
	}
	t.Cleanup(func() {
		cli.Close()
		srv.Close()
	})
	return cli, srv
}

// TestSpliceHalfClose splices two connections and checks that each side's
// EOF reaches the other while the other direction keeps flowing, for every
// combination of kernel (splice(2)) and buffered copies, with and without
// counting.
func TestSpliceHalfClose(t *testing.T) {
	kinds := map[string]func(*testing.T) (net.Conn, net.Conn){"tcp": tcpPair, "unix": unixPair}
	for an, ak := range kinds {
		for bn, bk := range kinds {
			for _, counted := range []bool{false, true} {
				t.Run(an+"-"+bn+map[bool]string{true: "-counted"}[counted], func(t *testing.T) {
					left, a := ak(t)  // left talks to a
					b, right := bk(t) // b talks to right
					var ab, ba atomic.Uint64
					done := make(chan struct{})
					go func() {
						defer close(done)
						if counted {
							splice(a, b, &ab, &ba)
						} else {
							Splice(a, b)
						}
					}()
					big := strings.Repeat("L", 1<<20)
					go func() {
						io.WriteString(left, big)
						left.(halfCloser).CloseWrite()
					}()
					got, err := io.ReadAll(right)
					if err != nil || len(got) != len(big) {
						t.Fatalf("right read %d bytes, %v; want %d then EOF", len(got), err, len(big))
					}
					// right -> left still flows after left's half-close.
					io.WriteString(right, "reply")
					right.(halfCloser).CloseWrite()
					got, err = io.ReadAll(left)
					if err != nil || string(got) != "reply" {
						t.Fatalf("left read %q, %v", got, err)
					}
					select {
					case <-done:
					case <-time.After(5 * time.Second):
						t.Fatal("Splice did not return after both half-closes")
					}
					if counted && (ab.Load() != 1<<20 || ba.Load() != 5) {
						t.Errorf("counted %d and %d bytes, want %d and 5", ab.Load(), ba.Load(), 1<<20)
					}
				})
			}
		}
	}
}

// TestSpliceNoCloseWrite checks that a connection without CloseWrite gets
// both ends closed on EOF, so Splice still returns.
func TestSpliceNoCloseWrite(t *testing.T) {
	p1, a := net.Pipe()
	b, right := tcpPair(t)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		Splice(a, b)
	}()
	// right's EOF cannot be passed to a net.Pipe: Splice closes both.
	right.(halfCloser).CloseWrite()
	p1.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := p1.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("pipe read = %v, want EOF", err)
	}
	wg.Wait()
	p1.Close()
}

// TestSpliceErrorClosesBoth checks that a reset on one side ends both
// directions.
func TestSpliceErrorClosesBoth(t *testing.T) {
	left, a := tcpPair(t)
	b, right := tcpPair(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Splice(a, b)
	}()
	left.(*net.TCPConn).SetLinger(0)
	left.Close() // RST
	right.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(right); isTimeout(err) {
		t.Fatal("right side still open after the left side reset")
	}
	<-done
}
