// Package demo runs `tomoe demo`: a three-node network in one process, in
// userspace mode over loopback UDP, needing no root. It uses the real node
// (config validation, key files, policy, WireGuard, the userspace stack)
// and checks what a new user should see: an allowed node reaches a service,
// a node the policy does not name is refused, and a forged source address
// never leaves the node that forged it.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node"
	"github.com/tomoe-net/tomoe/internal/packet"
)

// Options tune the demo.
type Options struct {
	// Log receives the nodes' logs; nil discards them.
	Log io.Writer
	// RefuseTimeout is how long mallory waits before she counts as refused.
	RefuseTimeout time.Duration
}

type member struct {
	name string
	key  identity.PrivateKey
	node *node.Node
}

// Run builds the network, runs the checks, prints what happened to w and
// returns an error if any expectation failed.
func Run(ctx context.Context, w io.Writer, opts Options) (err error) {
	if opts.RefuseTimeout == 0 {
		opts.RefuseTimeout = 3 * time.Second
	}
	dir, err := os.MkdirTemp("", "tomoe-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	logOut := opts.Log
	if logOut == nil {
		logOut = io.Discard
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelInfo}))

	alice, bob, mallory := &member{name: "alice"}, &member{name: "bob"}, &member{name: "mallory"}
	for _, m := range []*member{alice, bob, mallory} {
		if m.key, err = identity.GeneratePrivateKey(); err != nil {
			return err
		}
	}
	start := func(m *member, doc string) error {
		mdir := filepath.Join(dir, m.name)
		if err := os.MkdirAll(mdir, 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(mdir, "node.key"), []byte(m.key.Base64()+"\n"), 0o600); err != nil {
			return err
		}
		base := "key_file = \"node.key\"\n[tun]\nmode = \"userspace\"\n[listen]\nudp = \"0.0.0.0:0\"\n[admin]\nsocket = \"admin.sock\"\n"
		cfg, err := config.Parse([]byte(base+doc), m.name+".toml", mdir)
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		m.node, err = node.New(cfg, node.Options{Logger: log.With("node", m.name), Version: "demo"})
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		return nil
	}
	defer func() {
		for _, m := range []*member{mallory, bob, alice} {
			if m.node != nil {
				m.node.Close()
			}
		}
	}()

	// alice allows bob to reach TCP port 80, and nobody else anything.
	if err := start(alice, fmt.Sprintf("[[policy.allow]]\nfrom = %q\nproto = \"tcp\"\nports = \"80\"\n", bob.key.Public())); err != nil {
		return err
	}
	aliceEP := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), alice.node.ListenPort())
	peerAlice := fmt.Sprintf("[[peers]]\npublic_key = %q\nendpoint = %q\nname = \"alice\"\n", alice.key.Public(), aliceEP)
	if err := start(bob, peerAlice); err != nil {
		return err
	}
	if err := start(mallory, peerAlice); err != nil {
		return err
	}

	fmt.Fprintln(w, "tomoe demo: three nodes in userspace mode, talking over loopback UDP (no root needed)")
	fmt.Fprintln(w)
	for _, m := range []struct {
		m    *member
		note string
	}{
		{alice, "serves HTTP on port 80; her policy allows bob, tcp/80, nobody else"},
		{bob, "knows alice's key and endpoint"},
		{mallory, "knows alice's key and endpoint, but alice's policy does not name her"},
	} {
		fmt.Fprintf(w, "  %-8s %-40s udp %-21s %s\n", m.m.name, m.m.node.Address(), fmt.Sprintf("127.0.0.1:%d", m.m.node.ListenPort()), m.note)
	}
	fmt.Fprintln(w)

	// alice's web server listens on her overlay address only.
	ln, err := alice.node.Stack().ListenTCP(netip.AddrPortFrom(alice.node.Address(), 80))
	if err != nil {
		return fmt.Errorf("alice: listen: %w", err)
	}
	const body = "hello from alice, over tomoe"
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		io.WriteString(rw, body)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	url := fmt.Sprintf("http://[%s]:80/", alice.node.Address())

	var failed []string
	check := func(ok bool, format string, args ...any) {
		mark := "ok"
		if !ok {
			mark = "FAIL"
			failed = append(failed, fmt.Sprintf(format, args...))
		}
		fmt.Fprintf(w, "[%s] %s\n", mark, fmt.Sprintf(format, args...))
	}

	// 1. bob, allowed, fetches the page.
	t0 := time.Now()
	got, err := fetch(ctx, bob, url, 10*time.Second)
	check(err == nil && got == body, "bob fetched %s -> %s (%v, handshake included)", url, describe(got, err), time.Since(t0).Round(time.Millisecond))

	// 2. mallory, not allowed, is refused: alice does not even answer her handshake.
	got, err = fetch(ctx, mallory, url, opts.RefuseTimeout)
	st, _ := alice.node.StatusArea().Status(ctx)
	check(err != nil && st.Counters.HandshakeDenied > 0,
		"mallory was refused: %s; alice answered none of her %d handshake attempts", describe(got, err), st.Counters.HandshakeDenied)

	// 3. A packet forged on bob with mallory's source address is dropped
	// before it leaves bob, and never reaches alice.
	spoofBefore := bob.node.Filter().Spoofed()
	rxBefore := alice.node.Wrapper().Stats().InPackets.Load()
	forged := packet.EchoRequest(mallory.node.Address(), alice.node.Address(), 7, 1, []byte("forged"))
	bob.node.Wrapper().Inject(forged)
	// Once WireGuard has taken it from bob's wrapper, the wrapper's filter
	// has decided: dropped (counted spoofed) before WireGuard encrypted
	// anything, so nothing of it can reach alice; or passed, which fails.
	staged, cancel := context.WithTimeout(ctx, 2*time.Second)
	err = bob.node.Wrapper().WaitStaged(staged)
	cancel()
	rxAfter := alice.node.Wrapper().Stats().InPackets.Load()
	check(err == nil && bob.node.Filter().Spoofed() == spoofBefore+1 && rxAfter == rxBefore,
		"a packet forged on bob with mallory's source address was dropped on bob (spoofed: %d) and never reached alice", bob.node.Filter().Spoofed())

	// 4. Default deny works both ways: bob has no rules, so alice cannot
	// open a connection to him even though they share a session.
	_, err = dialFrom(ctx, alice, netip.AddrPortFrom(bob.node.Address(), 22), time.Second)
	check(err != nil, "alice cannot open a connection to bob: bob's policy allows nobody (%s)", describe("", err))

	fmt.Fprintln(w)
	if len(failed) > 0 {
		return fmt.Errorf("demo failed: %s", strings.Join(failed, "; "))
	}
	fmt.Fprintln(w, "demo passed. Next: README's two-machine setup runs the same thing across real machines.")
	return nil
}

func describe(got string, err error) string {
	switch {
	case err == nil:
		return fmt.Sprintf("%q", got)
	case errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "timed out") || strings.Contains(err.Error(), "deadline"):
		return "no answer, timed out"
	}
	return err.Error()
}

func dialFrom(ctx context.Context, m *member, to netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return m.node.DialContext(ctx, "tcp6", to.String())
}

// fetch GETs url through m's userspace stack.
func fetch(ctx context.Context, m *member, url string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{
		DialContext:       m.node.DialContext,
		DisableKeepAlives: true,
	}}
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %s", resp.Status)
	}
	return string(b), nil
}
