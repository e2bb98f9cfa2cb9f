package config

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// The types of this file are the values of config keys that are text in
// the file. Each parses itself (encoding.TextUnmarshaler): the TOML decoder
// hands it the string and reports its error with the key and the line, so
// a value is parsed once, when the file is read, and every rule about one
// value alone lives in its type. An error says what was wrong and how to
// fix it; Parse prefixes the file, line and key.
//
// The empty string means unset for the keys that may be unset (Validate
// reports a required key that is missing); for a key with a default it is
// refused, as it always was, but for expose.proto, where it is "tcp".
//
// A type whose kind is an integer (Mode, ServiceProto, LogLevel,
// LogFormat) would take a TOML integer without UnmarshalText: decode
// refuses anything but a string for these keys before decoding.

// Mode is tun.mode: how the overlay interface is provided.
type Mode uint8

// TUN modes. The zero Mode is unset.
const (
	// ModeKernel is a TUN device; it needs CAP_NET_ADMIN.
	ModeKernel Mode = iota + 1
	// ModeUserspace is gVisor netstack in the process; no privileges.
	ModeUserspace
)

func (m Mode) String() string {
	switch m {
	case ModeKernel:
		return "kernel"
	case ModeUserspace:
		return "userspace"
	}
	return ""
}

// UnmarshalText parses "kernel" or "userspace".
func (m *Mode) UnmarshalText(b []byte) error {
	switch s := string(b); s {
	case "kernel":
		*m = ModeKernel
	case "userspace":
		*m = ModeUserspace
	default:
		return fmt.Errorf("%q: use \"kernel\" (a TUN device, needs root or CAP_NET_ADMIN) or \"userspace\" (no privileges)", s)
	}
	return nil
}

// MarshalText gives the mode's name.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// ListenAddr is listen.udp: a UDP port on every IPv4 and IPv6 address.
type ListenAddr struct {
	// Port is the UDP port; 0 picks a free one.
	Port uint16
	host string // as written: "0.0.0.0", "::" or ""
}

func (l ListenAddr) String() string { return net.JoinHostPort(l.host, strconv.Itoa(int(l.Port))) }

// UnmarshalText parses "0.0.0.0:PORT" or "[::]:PORT" (or ":PORT").
func (l *ListenAddr) UnmarshalText(b []byte) error {
	s := string(b)
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q: want \"0.0.0.0:PORT\" or \"[::]:PORT\" (%v)", s, err)
	}
	switch host {
	case "", "0.0.0.0", "::":
	default:
		return fmt.Errorf("%q: binding to one address is not supported yet; use \"0.0.0.0:%s\" or \"[::]:%s\", which listen on every IPv4 and IPv6 address", s, port, port)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("%q: port %q is not a number in 0..65535", s, port)
	}
	*l = ListenAddr{Port: uint16(n), host: host}
	return nil
}

// MarshalText gives the address as String does.
func (l ListenAddr) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// Endpoint is a peer's or a bridge's underlay "host:port": an IP address
// or a DNS name, and a port. The zero Endpoint is unset.
type Endpoint struct {
	Addr netip.Addr // the host, when it is an IP address
	Name string     // the host, when it is a DNS name
	Port uint16     // 1..65535
}

// IsValid reports whether e is set.
func (e Endpoint) IsValid() bool { return e.Port != 0 }

// Host is the IP address or the name.
func (e Endpoint) Host() string {
	if e.Addr.IsValid() {
		return e.Addr.String()
	}
	return e.Name
}

// String gives "host:port" (IPv6 in brackets); "" when unset.
func (e Endpoint) String() string {
	if !e.IsValid() {
		return ""
	}
	return net.JoinHostPort(e.Host(), strconv.Itoa(int(e.Port)))
}

// ParseEndpoint parses "host:port": host is an IP literal (IPv6 in
// brackets) or a DNS name; an address must be a unicast underlay address,
// not a node address.
func ParseEndpoint(s string) (Endpoint, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return Endpoint{}, fmt.Errorf("%q: want \"host:port\", IPv6 in brackets (\"[2001:db8::1]:4610\"): %v", s, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return Endpoint{}, fmt.Errorf("%q: port %q is not in 1..65535", s, p)
	}
	if h == "" {
		return Endpoint{}, fmt.Errorf("%q: the host is missing", s)
	}
	e := Endpoint{Port: uint16(n)}
	if a, err := netip.ParseAddr(h); err == nil {
		if a.IsUnspecified() || a.IsMulticast() {
			return Endpoint{}, fmt.Errorf("%q: %s cannot be a peer's address", s, a)
		}
		if identity.IsNodeAddress(a) {
			return Endpoint{}, fmt.Errorf("%q: an endpoint is the peer's underlay address, not its overlay address", s)
		}
		e.Addr = a
	} else if strings.ContainsAny(h, " /\\") || strings.HasPrefix(h, "-") {
		return Endpoint{}, fmt.Errorf("%q: %q is neither an IP address nor a host name", s, h)
	} else {
		e.Name = h
	}
	return e, nil
}

// UnmarshalText parses as ParseEndpoint does; "" is unset.
func (e *Endpoint) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*e = Endpoint{}
		return nil
	}
	v, err := ParseEndpoint(string(b))
	if err != nil {
		return err
	}
	*e = v
	return nil
}

// MarshalText gives the endpoint as String does.
func (e Endpoint) MarshalText() ([]byte, error) { return []byte(e.String()), nil }

// AddrPort is an "IP:PORT" a TCP listener binds (admin.metrics,
// bridge.tcp). The zero AddrPort is unset. keyHints adds each key's example.
type AddrPort struct{ netip.AddrPort }

// String gives "IP:PORT"; "" when unset.
func (a AddrPort) String() string {
	if !a.IsValid() {
		return ""
	}
	return a.AddrPort.String()
}

// UnmarshalText parses "IP:PORT"; "" is unset.
func (a *AddrPort) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*a = AddrPort{}
		return nil
	}
	ap, err := netip.ParseAddrPort(string(b))
	if err != nil {
		return fmt.Errorf("%q: want IP:PORT", b)
	}
	*a = AddrPort{ap}
	return nil
}

// Target is expose.target: the "IP:PORT" an exposed service listens on.
// The zero Target is unset.
type Target struct{ netip.AddrPort }

// String gives "IP:PORT"; "" when unset.
func (t Target) String() string {
	if !t.IsValid() {
		return ""
	}
	return t.AddrPort.String()
}

// UnmarshalText parses "IP:PORT" with a port and a specified address; ""
// is unset.
func (t *Target) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*t = Target{}
		return nil
	}
	ap, err := netip.ParseAddrPort(string(b))
	if err != nil || ap.Port() == 0 || ap.Addr().IsUnspecified() {
		return fmt.Errorf("%q: want the service's IP:PORT, e.g. \"127.0.0.1:8080\" (an address, not a host name)", b)
	}
	*t = Target{ap}
	return nil
}

// IPv4Prefix is tun.ipv4_prefix: an IPv4 prefix addresses are derived in
// (ParseIPv4Prefix).
type IPv4Prefix struct{ netip.Prefix }

// UnmarshalText parses as ParseIPv4Prefix does.
func (p *IPv4Prefix) UnmarshalText(b []byte) error {
	v, err := ParseIPv4Prefix(string(b))
	if err != nil {
		return fmt.Errorf("%v; the default %s is shared address space (RFC 6598) that LANs rarely use", err, identity.DefaultIPv4Prefix)
	}
	*p = IPv4Prefix{v}
	return nil
}

// IPv4Auto is the tun.ipv4 value that derives the address from the key.
const IPv4Auto = "auto"

// OwnIPv4 is tun.ipv4: this node's IPv4 address on the overlay, "auto"
// (derived from its key: Config.IPv4), or unset.
type OwnIPv4 struct {
	Auto bool
	Addr netip.Addr // when not Auto: the address, or invalid (unset)
}

// IsSet reports whether the node has an IPv4 address.
func (o OwnIPv4) IsSet() bool { return o.Auto || o.Addr.IsValid() }

// String gives "auto", the address, or "" when unset.
func (o OwnIPv4) String() string {
	switch {
	case o.Auto:
		return IPv4Auto
	case o.Addr.IsValid():
		return o.Addr.String()
	}
	return ""
}

// UnmarshalText parses "auto" or one unicast IPv4 address; "" is unset.
func (o *OwnIPv4) UnmarshalText(b []byte) error {
	s := string(b)
	switch s {
	case "":
		*o = OwnIPv4{}
		return nil
	case IPv4Auto:
		*o = OwnIPv4{Auto: true}
		return nil
	}
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil || !a.Is4():
		return fmt.Errorf("%q: want \"auto\" (derived from the key in tun.ipv4_prefix) or one IPv4 address without a prefix length, e.g. \"10.99.0.2\" (offered to peers as a /32)", s)
	case a.IsLoopback() || a.IsMulticast() || a.IsUnspecified() || a.IsLinkLocalUnicast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("%s is not a unicast address a node can use", a)
	}
	*o = OwnIPv4{Addr: a}
	return nil
}

// MarshalText gives the value as String does.
func (o OwnIPv4) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// RoutePrefix is a prefix that may be tunnelled (ParseRoutePrefix). The
// zero RoutePrefix is unset.
type RoutePrefix struct{ netip.Prefix }

// UnmarshalText parses as ParseRoutePrefix does; "" is unset.
func (p *RoutePrefix) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*p = RoutePrefix{}
		return nil
	}
	v, err := ParseRoutePrefix(string(b))
	if err != nil {
		return err
	}
	*p = RoutePrefix{v}
	return nil
}

// ServiceProto is expose.proto: the transport of an exposed service.
type ServiceProto uint8

// Transports of an exposed service; TCP is the default.
const (
	ServiceTCP ServiceProto = iota
	ServiceUDP
)

func (p ServiceProto) String() string {
	if p == ServiceUDP {
		return "udp"
	}
	return "tcp"
}

// UnmarshalText parses "tcp" or "udp" ("" is tcp).
func (p *ServiceProto) UnmarshalText(b []byte) error {
	switch s := string(b); s {
	case "", "tcp":
		*p = ServiceTCP
	case "udp":
		*p = ServiceUDP
	default:
		return fmt.Errorf("%q: use \"tcp\" or \"udp\"", s)
	}
	return nil
}

// MarshalText gives the transport's name.
func (p ServiceProto) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// LocalAddr is where a local listener into the overlay listens
// (connect.local, proxy.socks5, proxy.http): a loopback IP:PORT or an
// absolute Unix socket path. The zero LocalAddr is unset.
type LocalAddr struct {
	Path string         // a Unix socket path, or ""
	Addr netip.AddrPort // else a loopback address and port
}

// IsSet reports whether l names a listener.
func (l LocalAddr) IsSet() bool { return l.Path != "" || l.Addr.IsValid() }

// String gives the path or the address; "" when unset.
func (l LocalAddr) String() string {
	if l.Path != "" {
		return l.Path
	}
	if l.Addr.IsValid() {
		return l.Addr.String()
	}
	return ""
}

// UnmarshalText parses a loopback "IP:PORT" or an absolute, clean path of
// at most 107 bytes; "" is unset.
func (l *LocalAddr) UnmarshalText(b []byte) error {
	s := string(b)
	switch {
	case s == "":
		*l = LocalAddr{}
		return nil
	case strings.HasPrefix(s, "/"):
		if len(s) > 107 {
			return fmt.Errorf("%q: Unix socket paths are limited to 107 bytes", s)
		}
		if filepath.Clean(s) != s {
			return fmt.Errorf("%q: write the path in clean form (%q)", s, filepath.Clean(s))
		}
		*l = LocalAddr{Path: s}
		return nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return fmt.Errorf("%q: want a loopback \"127.0.0.1:PORT\" or \"[::1]:PORT\", or an absolute Unix socket path", s)
	}
	if !ap.Addr().IsLoopback() {
		return fmt.Errorf("%q: only loopback addresses are allowed (a proxy into the overlay must not be reachable from the network); use 127.0.0.1 or a Unix socket path", s)
	}
	if ap.Port() == 0 {
		return fmt.Errorf("%q: give a port (1..65535)", s)
	}
	*l = LocalAddr{Addr: ap}
	return nil
}

// MarshalText gives the listener as String does.
func (l LocalAddr) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// Remote is connect.remote: an overlay destination "host:port", host an
// IP literal (IPv6 in brackets) or a peer's name. The zero Remote is unset.
type Remote struct {
	Host string
	Port uint16 // 1..65535
}

// IsValid reports whether r is set.
func (r Remote) IsValid() bool { return r.Port != 0 }

// String gives "host:port"; "" when unset.
func (r Remote) String() string {
	if !r.IsValid() {
		return ""
	}
	return net.JoinHostPort(r.Host, strconv.Itoa(int(r.Port)))
}

// ParseRemote parses an overlay destination "host:port".
func ParseRemote(s string) (Remote, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return Remote{}, fmt.Errorf("%q: want \"[address]:port\" or \"name:port\": %v", s, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return Remote{}, fmt.Errorf("%q: port %q is not in 1..65535", s, p)
	}
	if h == "" || strings.ContainsAny(h, " /\\") {
		return Remote{}, fmt.Errorf("%q: %q is neither an address nor a name", s, h)
	}
	return Remote{Host: h, Port: uint16(n)}, nil
}

// UnmarshalText parses as ParseRemote does; "" is unset.
func (r *Remote) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*r = Remote{}
		return nil
	}
	v, err := ParseRemote(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// MarshalText gives the destination as String does.
func (r Remote) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// LogLevel is log.level: debug, info, warn or error.
type LogLevel slog.Level

// Level implements slog.Leveler.
func (l LogLevel) Level() slog.Level { return slog.Level(l) }

func (l LogLevel) String() string { return strings.ToLower(slog.Level(l).String()) }

// UnmarshalText parses debug, info, warn or error.
func (l *LogLevel) UnmarshalText(b []byte) error {
	switch s := string(b); s {
	case "debug":
		*l = LogLevel(slog.LevelDebug)
	case "info":
		*l = LogLevel(slog.LevelInfo)
	case "warn":
		*l = LogLevel(slog.LevelWarn)
	case "error":
		*l = LogLevel(slog.LevelError)
	default:
		return fmt.Errorf("%q: use debug, info, warn or error", s)
	}
	return nil
}

// MarshalText gives the level's name.
func (l LogLevel) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// LogFormat is log.format.
type LogFormat uint8

// Log formats; text is the default.
const (
	LogText LogFormat = iota
	LogJSON
)

func (f LogFormat) String() string {
	if f == LogJSON {
		return "json"
	}
	return "text"
}

// UnmarshalText parses text or json.
func (f *LogFormat) UnmarshalText(b []byte) error {
	switch s := string(b); s {
	case "text":
		*f = LogText
	case "json":
		*f = LogJSON
	default:
		return fmt.Errorf("%q: use text or json", s)
	}
	return nil
}

// MarshalText gives the format's name.
func (f LogFormat) MarshalText() ([]byte, error) { return []byte(f.String()), nil }
