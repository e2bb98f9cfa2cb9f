package services

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// localSpec is a parsed ListenLocal spec: exactly one field is set.
type localSpec struct {
	path string         // Unix socket
	tcp  netip.AddrPort // loopback TCP
}

// parseListenSpec checks a ListenLocal spec without touching the system.
func parseListenSpec(spec string) (localSpec, error) {
	if strings.HasPrefix(spec, "/") {
		p := filepath.Clean(spec)
		if p == "/" {
			return localSpec{}, fmt.Errorf("listen %q: not a socket path", spec)
		}
		return localSpec{path: p}, nil
	}
	ap, err := netip.ParseAddrPort(spec)
	if err != nil {
		return localSpec{}, fmt.Errorf("listen %q: want a loopback IP:port (127.0.0.1:1080, [::1]:1080) or an absolute Unix socket path", spec)
	}
	a := ap.Addr()
	if a.Zone() != "" {
		return localSpec{}, fmt.Errorf("listen %q: drop the %%zone: use 127.0.0.1 or [::1]", spec)
	}
	a = a.Unmap()
	if !a.IsLoopback() {
		return localSpec{}, fmt.Errorf("listen %q: %s is not a loopback address; local service listeners must never be reachable from the network: use 127.0.0.1 or [::1]", spec, a)
	}
	return localSpec{tcp: netip.AddrPortFrom(a, ap.Port())}, nil
}

// ListenLocal opens a listener for local programs only. spec is a loopback
// "IP:port" ("127.0.0.1:1080", "[::1]:1080"; port 0 picks one) or an
// absolute path for a Unix socket; any other address is refused, since
// these listeners must never be reachable from the network.
//
// A Unix socket's parent directory is created 0700 if missing, a stale
// socket file at path is replaced (a live one, or a file that is not a
// socket, is an error) and the socket is made 0600.
//
// Each accepted connection's owner must be allowed by allow, or it is closed
// before Accept returns and logged at most every 10 s per uid. The owner of
// a loopback TCP client is the uid of the client's socket, found through
// netlink sock_diag as identd would; of a Unix client, SO_PEERCRED (the 0600
// mode is the main guard there; the check is defence in depth and also
// covers the moment between bind and chmod). If the owner cannot be
// determined the connection is refused.
//
// That is Linux. Where the system cannot tell who owns a connection, a
// listener that would need to know is refused here (tcpOwnerFor and
// unixOwnerFor, per system): on macOS and FreeBSD a Unix client's owner
// comes from LOCAL_PEERCRED, but a loopback TCP listener is only for
// allow.Any; on Windows, a Unix socket serves only this user (its file's
// ACL is the check) and a loopback TCP listener only allow.Any.
func ListenLocal(spec string, allow UIDSet, log *slog.Logger) (net.Listener, error) {
	ls, err := parseListenSpec(spec)
	if err != nil {
		return nil, err
	}
	ol := &ownerListener{allow: allow, limit: newRateLimiter(10 * time.Second)}
	if ls.path != "" {
		ln, err := listenUnix(ls.path)
		if err != nil {
			return nil, err
		}
		owner, err := unixOwnerFor(allow, ls.path)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("listen %s: %w", ls.path, err)
		}
		if owner == nil {
			return ln, nil // checked otherwise (unixOwnerFor)
		}
		ol.Listener, ol.owner = ln, owner
		ol.log = orDiscard(log).With("listener", ls.path)
		return ol, nil
	}
	owner, err := tcpOwnerFor(allow)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", spec, err)
	}
	ln, err := net.Listen("tcp", ls.tcp.String())
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", spec, err)
	}
	if owner == nil {
		return ln, nil // every local user is allowed (tcpOwnerFor)
	}
	ol.Listener, ol.owner = ln, owner
	ol.log = orDiscard(log).With("listener", ln.Addr().String())
	return ol, nil
}

// listenUnix listens on a Unix socket at path with mode 0600.
func listenUnix(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("listen %s: create directory: %w", path, err)
		}
	}
	fi, err := os.Lstat(path)
	switch {
	case err == nil && fi.Mode().Type() == fs.ModeSocket:
		c, derr := net.DialTimeout("unix", path, time.Second)
		if derr == nil {
			c.Close()
			return nil, fmt.Errorf("listen %s: the socket is in use by another process", path)
		}
		if !errors.Is(derr, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("listen %s: cannot tell whether the existing socket is stale: %w", path, derr)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("listen %s: remove stale socket: %w", path, err)
		}
	case err == nil:
		return nil, fmt.Errorf("listen %s: a %s that is not a socket is in the way; refusing to remove it", path, fileKind(fi))
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen %s: chmod 0600: %w", path, err)
	}
	return ln, nil
}

func fileKind(fi fs.FileInfo) string {
	switch {
	case fi.Mode().IsRegular():
		return "regular file"
	case fi.IsDir():
		return "directory"
	case fi.Mode()&fs.ModeSymlink != 0:
		return "symlink"
	}
	return "file"
}

// ownerListener admits only connections whose owner allow allows.
type ownerListener struct {
	net.Listener
	allow UIDSet
	owner func(net.Conn) (uint32, error)
	log   *slog.Logger
	limit *rateLimiter
}

// Accept returns the next connection from an allowed user; the others are
// closed without a byte being read or written.
func (l *ownerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid, err := l.owner(c)
		if err != nil {
			c.Close()
			if l.limit.allow("lookup") {
				l.log.Info("refused local connection: cannot tell its owner", "client", c.RemoteAddr().String(), "err", err)
			}
			continue
		}
		if !l.allow.Allows(uid) {
			// Log before closing: whoever sees the reset may look for the line.
			if l.limit.allowUID(uid) {
				l.log.Info("refused local connection: user not allowed", "uid", uid)
			}
			c.Close()
			continue
		}
		return c, nil
	}
}
