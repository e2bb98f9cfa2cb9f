package services

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func FuzzSOCKS5Greeting(f *testing.F) {
	f.Add([]byte{5, 1, 0})
	f.Add([]byte{5, 2, 0, 2})
	f.Add([]byte{5, 0})
	f.Add([]byte{5, 255})
	f.Add([]byte{4, 1, 0, 80})
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &countingReader{r: bytes.NewReader(data)}
		methods, err := parseGreeting(r)
		if r.n > maxGreetingLen {
			t.Fatalf("read %d bytes, limit %d", r.n, maxGreetingLen)
		}
		if err != nil {
			return
		}
		if r.n != 2+len(methods) || data[0] != 5 || int(data[1]) != len(methods) {
			t.Fatalf("greeting %x parsed as %x after %d bytes", data, methods, r.n)
		}
	})
}

func FuzzSOCKS5Request(f *testing.F) {
	f.Add([]byte{5, 1, 0, 1, 127, 0, 0, 1, 0, 80})
	f.Add([]byte{5, 1, 0, 4, 0xfc, 0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x1f, 0x90})
	f.Add(domainRequest(socksConnect, "echo.test", 443))
	f.Add(domainRequest(socksConnect, "[fc11::1]", 443))
	f.Add(domainRequest(socksBind, "a", 1))
	f.Add([]byte{5, 1, 0, 3, 0, 0, 80})
	f.Add([]byte{5, 1, 0, 2, 1, 2, 3, 4, 0, 80})
	f.Add([]byte{5, 1, 0, 3, 255})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &countingReader{r: bytes.NewReader(data)}
		req, err := parseRequest(r)
		if r.n > maxRequestLen {
			t.Fatalf("read %d bytes, limit %d", r.n, maxRequestLen)
		}
		var se *socksError
		if err != nil {
			if errors.As(err, &se) && se.send && se.reply == SOCKSSucceeded {
				t.Fatalf("parse error %v would be answered with success", err)
			}
			return
		}
		if req.addr.IsValid() == (req.host != "") {
			t.Fatalf("request %+v: want exactly one of addr and host", req)
		}
		// A parsed request re-encodes to the bytes it was read from.
		var enc []byte
		if req.addr.IsValid() {
			enc = addrRequest(req.cmd, netipAddrPort(req))
		} else {
			enc = domainRequest(req.cmd, req.host, req.port)
		}
		enc[2] = data[2] // RSV is not kept
		if !bytes.Equal(enc, data[:r.n]) {
			t.Fatalf("request %x parsed as %+v, which encodes as %x", data[:r.n], req, enc)
		}
	})
}
