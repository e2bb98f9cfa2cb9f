package services

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func startHTTPConnect(t *testing.T, dial Dialer) string {
	t.Helper()
	ln := listenLoopback(t)
	startServe(t, ln, func(ctx context.Context, ln net.Listener) error {
		return ServeHTTPConnect(ctx, ln, dial, testResolve, testLog(t))
	})
	return ln.Addr().String()
}

// rawRequest sends req on a new connection to srv and returns the parsed
// response, its body, and the connection (positioned after the header).
func rawRequest(t *testing.T, srv, req string) (*http.Response, string, net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", srv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: strings.Fields(req)[0]})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	var body string
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
	}
	return resp, body, c, br
}

func TestHTTPConnectEcho(t *testing.T) {
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(echo.Addr().String())
	srv := startHTTPConnect(t, osDial)
	targets := []string{echo.Addr().String(), "echo.test:" + port}
	if ln6, err := net.Listen("tcp", "[::1]:0"); err == nil {
		ln6.Close()
		targets = append(targets, echoServer(t, "tcp", "[::1]:0").Addr().String())
	}
	for _, target := range targets {
		t.Run(target, func(t *testing.T) {
			// "early" rides in the same write as the request header.
			resp, _, c, br := rawRequest(t, srv, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\nearly")
			if resp.StatusCode != http.StatusOK || resp.Status != "200 Connection established" {
				t.Fatalf("status %q", resp.Status)
			}
			got := make([]byte, 5)
			if _, err := io.ReadFull(br, got); err != nil || string(got) != "early" {
				t.Fatalf("early data echo = %q, %v", got, err)
			}
			io.WriteString(c, "more")
			if _, err := io.ReadFull(br, got[:4]); err != nil || string(got[:4]) != "more" {
				t.Fatalf("echo = %q, %v", got[:4], err)
			}
			// Half-close goes through: the echo server closes in turn.
			c.(*net.TCPConn).CloseWrite()
			if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
				t.Fatalf("after CloseWrite: %q, %v; want EOF", rest, err)
			}
		})
	}
}

func TestHTTPConnectErrors(t *testing.T) {
	closed := refusingAddr(t).String()
	srv := startHTTPConnect(t, osDial)

	tests := []struct {
		name, req  string
		status     int
		bodyHas    string
		allowHeadr string
	}{
		{"get", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 405, notConnectBody, "CONNECT"},
		{"post proxy form", "POST http://example.com/ HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n", 405, notConnectBody, "CONNECT"},
		{"unknown host", "CONNECT nowhere.test:443 HTTP/1.1\r\nHost: nowhere.test:443\r\n\r\n", 502, "unknown host", ""},
		{"refused", "CONNECT " + closed + " HTTP/1.1\r\nHost: " + closed + "\r\n\r\n", 502, "connection refused", ""},
		{"no port", "CONNECT echo.test HTTP/1.1\r\nHost: echo.test\r\n\r\n", 400, "bad CONNECT target", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body, _, _ := rawRequest(t, srv, tt.req)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tt.status, body)
			}
			if !strings.Contains(body, tt.bodyHas) || strings.Count(body, "\n") != 1 {
				t.Errorf("body %q, want one line containing %q", body, tt.bodyHas)
			}
			if got := resp.Header.Get("Allow"); got != tt.allowHeadr {
				t.Errorf("Allow: %q, want %q", got, tt.allowHeadr)
			}
		})
	}
}

func TestHTTPConnectTimeout(t *testing.T) {
	srv := startHTTPConnect(t, func(ctx context.Context, network, address string) (net.Conn, error) {
		// Stands in for a peer that never answers; the proxy's own 10 s
		// dial timeout is too long for a test.
		ctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		<-ctx.Done()
		return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
	})
	resp, body, _, _ := rawRequest(t, srv, "CONNECT echo.test:443 HTTP/1.1\r\nHost: echo.test:443\r\n\r\n")
	if resp.StatusCode != http.StatusGatewayTimeout || !strings.Contains(body, "timed out") {
		t.Fatalf("status %d body %q, want 504 timed out", resp.StatusCode, body)
	}
}

// TestHTTPConnectShutdownCutsTunnel checks that cancelling the server's
// context ends a live tunnel.
func TestHTTPConnectShutdownCutsTunnel(t *testing.T) {
	echo := echoServer(t, "tcp", "127.0.0.1:0")
	ln := listenLoopback(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- ServeHTTPConnect(ctx, ln, osDial, nil, testLog(t)) }()
	target := echo.Addr().String()
	resp, _, c, br := rawRequest(t, ln.Addr().String(), "CONNECT "+target+" HTTP/1.1\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	io.WriteString(c, "x")
	if b, err := br.ReadByte(); err != nil || b != 'x' {
		t.Fatalf("echo %q %v", b, err)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("ServeHTTPConnect = %v, want nil", err)
	}
	if _, err := br.ReadByte(); err == nil || isTimeout(err) {
		t.Fatalf("read after shutdown = %v, want EOF or reset", err)
	}
}
