// Package config owns tomoe's configuration file: the typed structure, its
// defaults, loading (strict: unknown keys are errors) and validation, which
// runs before anything on the system is touched and names the key and the
// fix in every error.
//
// The key names are a contract (README "Configuration reference"); add keys,
// never rename them.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// Defaults that are not paths.
const (
	DefaultMode    = ModeKernel
	DefaultTUNName = "tomoe0"
	// DefaultMTU fits a 1500-byte underlay over IPv6 (40 IPv6 + 8 UDP + 32
	// WireGuard = 80 bytes) with 20 bytes to spare for the bridge relay
	// header that a relayed path adds; it is also fine over IPv4.
	DefaultMTU       = 1400
	MinMTU           = 1280 // IPv6 minimum link MTU
	MaxMTU           = 9000
	DefaultListenUDP = "0.0.0.0:4610"
	DefaultPort      = 4610
)

// TUN modes.
const (
	ModeKernel    = "kernel"
	ModeUserspace = "userspace"
)

// Config is the whole configuration file.
type Config struct {
	// KeyFile holds the node's private key; created 0600 if missing, refused
	// if group or others can read it.
	KeyFile string `toml:"key_file"`
	TUN     TUN    `toml:"tun"`
	Listen  Listen `toml:"listen"`
	Admin   Admin  `toml:"admin"`
	// Peers are static peers: key and endpoint known, no bridge involved.
	Peers  []Peer `toml:"peers"`
	Policy Policy `toml:"policy"`
	Log    Log    `toml:"log"`
	// Bridge makes this node a bridge for others.
	Bridge Bridge `toml:"bridge"`
	// Bridges are the bridges this node joins.
	Bridges []BridgeRef `toml:"bridges"`
	// Routes are the tunnelled IPv4/IPv6 prefixes offered and accepted.
	Routes Routes `toml:"routes"`
	// Expose lists local services reachable on the overlay.
	Expose []Expose `toml:"expose"`
	// Connect lists local port forwards into the overlay.
	Connect []Connect `toml:"connect"`
	// Proxy configures SOCKS5 and HTTP CONNECT proxies into the overlay.
	Proxy Proxy `toml:"proxy"`
	// AllowedLocalUsers, if set, are the only local users whose programs
	// reach the overlay (kernel mode; uid policy routing).
	AllowedLocalUsers []string `toml:"allowed_local_users"`

	// dir is the directory of the file the config came from; relative paths
	// in the file are relative to it.
	dir string
}

// TUN configures the overlay interface.
type TUN struct {
	// Mode is "kernel" (a TUN device; needs CAP_NET_ADMIN) or "userspace"
	// (gVisor netstack in the process; no privileges).
	Mode string `toml:"mode"`
	Name string `toml:"name"`
	MTU  int    `toml:"mtu"`
	// IPv4 is an optional IPv4 address of this node on the overlay, for
	// IPv4 programs; it is offered to peers as a /32. "auto" derives it
	// from the node's key inside IPv4Prefix (identity.IPv4Address).
	IPv4 string `toml:"ipv4"`
	// IPv4Prefix is where IPv4 addresses are derived from keys: this
	// node's own with IPv4 = "auto", and the one a "*" accept rule takes
	// from each peer as a /32.
	IPv4Prefix string `toml:"ipv4_prefix"`
}

// Listen configures the underlay socket.
type Listen struct {
	// UDP is "0.0.0.0:PORT" or "[::]:PORT": both listen on every IPv4 and
	// IPv6 address. Port 0 picks a free port.
	UDP string `toml:"udp"`
	// Stealth drops everything unsolicited that reaches this host on its
	// physical interfaces, except tomoe's own port (kernel mode, nftables).
	Stealth bool `toml:"stealth"`
}

// Admin configures the local admin API.
type Admin struct {
	// Socket is the Unix socket path of the admin API (mode 0600, or 0660 to Group).
	Socket string `toml:"socket"`
	// Group, if set, may also use the admin API (socket mode 0660).
	Group string `toml:"group"`
	// Metrics, if set, is a TCP address serving only /metrics for
	// Prometheus, without authentication. It must be a loopback address
	// unless MetricsPublic is true: the metrics name every peer's address
	// and how much it sent.
	Metrics string `toml:"metrics"`
	// MetricsPublic allows Metrics on an address other hosts can reach.
	MetricsPublic bool `toml:"metrics_public"`
}

// Peer is a static peer.
type Peer struct {
	PublicKey string `toml:"public_key"`
	// Endpoint is "host:port"; host is an IP address or a DNS name.
	Endpoint string `toml:"endpoint"`
	// PersistentKeepalive in seconds (0: off), for peers behind NAT.
	PersistentKeepalive int `toml:"persistent_keepalive"`
	// Name is a local label shown in `tomoe peers`.
	Name string `toml:"name"`
}

// Policy holds inbound allow rules; all other inbound traffic is dropped.
type Policy struct {
	Allow []Rule `toml:"allow"`
	// StateFile keeps rules added and revoked through the admin API.
	StateFile string `toml:"state_file"`
}

// Rule is one allow rule as written in the file.
type Rule struct {
	From  string `toml:"from"`
	Proto string `toml:"proto"`
	Ports string `toml:"ports"`
}

// Bridge configures the bridge role: nodes register with this node, look
// each other up through it, and have their ciphertext relayed by it.
type Bridge struct {
	Enable bool `toml:"enable"`
	// TCP is the TCP listener for nodes whose UDP is blocked ("" = none).
	TCP string `toml:"tcp"`
	// Allow lists keys that may register; tokens enrol more.
	Allow []BridgeAllow `toml:"allow"`
	// StateFile keeps join tokens (hashed), enrolled and revoked keys.
	StateFile string `toml:"state_file"`
	// RelayMbit limits what each node may send through the relay, in
	// Mbit/s; 0 = no limit.
	RelayMbit int `toml:"relay_mbit"`
}

// BridgeAllow is a key allowed to register with this bridge.
type BridgeAllow struct {
	PublicKey string `toml:"public_key"`
}

// BridgeRef is a bridge this node joins.
type BridgeRef struct {
	// Endpoint is "host:port" (UDP, and TCP on the same port when UDP is blocked).
	Endpoint  string `toml:"endpoint"`
	PublicKey string `toml:"public_key"`
	// Token is a join credential from `tomoe bridge token create`, needed
	// only until the bridge has enrolled this node's key.
	Token string `toml:"token"`
}

// Log configures logging to stderr.
type Log struct {
	Level  string `toml:"level"`  // debug, info, warn, error
	Format string `toml:"format"` // text, json
}

// Default returns the configuration used when a key is absent.
func Default() Config {
	return Config{
		KeyFile: DefaultKeyFile(),
		TUN:     TUN{Mode: DefaultMode, Name: DefaultTUNName, MTU: DefaultMTU, IPv4Prefix: identity.DefaultIPv4Prefix.String()},
		Listen:  Listen{UDP: DefaultListenUDP},
		Admin:   Admin{Socket: DefaultSocket()},
		Log:     Log{Level: "info", Format: "text"},
	}
}

// DefaultKeyFile is /var/lib/tomoe/node.key for root, else under the
// user's state directory.
func DefaultKeyFile() string {
	if os.Geteuid() == 0 {
		return "/var/lib/tomoe/node.key"
	}
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(dir, "tomoe", "node.key")
}

// DefaultSocket is /run/tomoe/admin.sock for root, else under the user's
// runtime directory. The CLI uses the same default.
func DefaultSocket() string {
	if os.Geteuid() == 0 {
		return "/run/tomoe/admin.sock"
	}
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "tomoe", "admin.sock")
	}
	return filepath.Join(os.TempDir(), "tomoe-"+strconv.Itoa(os.Getuid()), "admin.sock")
}

// Load reads, decodes and validates the file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(b, path, filepath.Dir(abs))
}

// Parse decodes and validates a configuration. name is used in messages;
// relative paths are resolved against dir.
func Parse(b []byte, name, dir string) (*Config, error) {
	c := Default()
	c.dir = dir
	dec := toml.NewDecoder(bytes.NewReader(b)).DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, decodeError(name, err)
	}
	c.resolvePaths()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &c, nil
}

func (c *Config) resolvePaths() {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) && c.dir != "" {
			*p = filepath.Join(c.dir, *p)
		}
	}
	abs(&c.KeyFile)
	abs(&c.Admin.Socket)
	abs(&c.Policy.StateFile)
	abs(&c.Bridge.StateFile)
}

// BridgeStateFile is where a bridge keeps tokens and enrolments:
// bridge.state_file, or bridge.json beside the key file.
func (c *Config) BridgeStateFile() string {
	if c.Bridge.StateFile != "" {
		return c.Bridge.StateFile
	}
	return filepath.Join(filepath.Dir(c.KeyFile), "bridge.json")
}

// StateFile is where the policy changes made through the API persist:
// policy.state_file, or policy.json beside the key file.
func (c *Config) StateFile() string {
	if c.Policy.StateFile != "" {
		return c.Policy.StateFile
	}
	return filepath.Join(filepath.Dir(c.KeyFile), "policy.json")
}

// knownKeys lists the keys of each table, for "did you mean" hints.
var knownKeys = map[string][]string{
	"":        {"key_file", "tun", "listen", "admin", "peers", "policy", "log", "bridge", "bridges", "routes", "expose", "connect", "proxy", "allowed_local_users"},
	"routes":  {"offer", "accept"},
	"offer":   {"prefix", "masquerade"},
	"accept":  {"from", "prefix"},
	"expose":  {"port", "proto", "target"},
	"connect": {"local", "remote"},
	"proxy":   {"socks5", "http", "users"},
	"bridge":  {"enable", "tcp", "allow", "state_file", "relay_mbit"},
	"bridges": {"endpoint", "public_key", "token"},
	"tun":     {"mode", "name", "mtu", "ipv4", "ipv4_prefix"},
	"listen":  {"udp", "stealth"},
	"admin":   {"socket", "group", "metrics", "metrics_public"},
	"peers":   {"public_key", "endpoint", "persistent_keepalive", "name"},
	"policy":  {"allow", "state_file"},
	"allow":   {"from", "proto", "ports"},
	"log":     {"level", "format"},
}

func decodeError(name string, err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		var msgs []string
		for _, e := range strict.Errors {
			row, _ := e.Position()
			key := e.Key()
			table := ""
			if len(key) > 1 {
				table = key[len(key)-2]
			}
			hint := ""
			if known, ok := knownKeys[table]; ok {
				hint = "; known keys here: " + strings.Join(known, ", ")
			}
			msgs = append(msgs, fmt.Sprintf("%s:%d: unknown key %q%s", name, row, strings.Join(key, "."), hint))
		}
		return errors.New(strings.Join(msgs, "\n"))
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		key := strings.Join(de.Key(), ".")
		if key != "" {
			key = " (key " + key + ")"
		}
		return fmt.Errorf("%s:%d:%d: %s%s", name, row, col, strings.TrimPrefix(de.Error(), "toml: "), key)
	}
	return fmt.Errorf("%s: %w", name, err)
}

// ValidationError lists every problem found, one per line.
type ValidationError []string

func (v ValidationError) Error() string { return strings.Join(v, "\n") }

// Validate checks every key and reports all problems at once.
func (c *Config) Validate() error {
	var errs ValidationError
	bad := func(key, format string, args ...any) {
		errs = append(errs, key+": "+fmt.Sprintf(format, args...))
	}
	if c.KeyFile == "" {
		bad("key_file", "must not be empty; e.g. key_file = \"/var/lib/tomoe/node.key\"")
	}
	switch c.TUN.Mode {
	case ModeKernel, ModeUserspace:
	default:
		bad("tun.mode", "%q: use \"kernel\" (a TUN device, needs root or CAP_NET_ADMIN) or \"userspace\" (no privileges)", c.TUN.Mode)
	}
	if c.TUN.Mode == ModeKernel {
		if err := validInterfaceName(c.TUN.Name); err != nil {
			bad("tun.name", "%v", err)
		}
	}
	if c.TUN.MTU < MinMTU || c.TUN.MTU > MaxMTU {
		bad("tun.mtu", "%d is outside %d..%d (IPv6 needs at least %d; the default %d suits a 1500-byte underlay)", c.TUN.MTU, MinMTU, MaxMTU, MinMTU, DefaultMTU)
	}
	if _, err := c.ListenPort(); err != nil {
		bad("listen.udp", "%v", err)
	}
	if c.Admin.Socket == "" {
		bad("admin.socket", "must not be empty; e.g. socket = \"/run/tomoe/admin.sock\"")
	} else if len(c.Admin.Socket) > 107 {
		bad("admin.socket", "path is %d bytes; Unix socket paths are limited to 107: choose a shorter one", len(c.Admin.Socket))
	}
	if c.Admin.Group != "" {
		if _, err := user.LookupGroup(c.Admin.Group); err != nil {
			bad("admin.group", "group %q does not exist: create it (groupadd %s) or remove the key", c.Admin.Group, c.Admin.Group)
		}
	}
	c.validateMetrics(bad)
	seen := map[identity.PublicKey]int{}
	for i, p := range c.Peers {
		key := fmt.Sprintf("peers[%d]", i)
		k, err := identity.ParsePublicKey(p.PublicKey)
		if err != nil {
			bad(key+".public_key", "%v; the peer prints its key with `tomoe status` (or: tomoe key public < its key file)", err)
		} else if j, dup := seen[k]; dup {
			bad(key+".public_key", "same key as peers[%d]: list each peer once", j)
		} else {
			seen[k] = i
		}
		if p.Endpoint == "" {
			bad(key+".endpoint", "missing: a static peer needs \"host:port\", e.g. \"192.0.2.7:4610\"")
		} else if _, _, err := SplitEndpoint(p.Endpoint); err != nil {
			bad(key+".endpoint", "%v", err)
		}
		if p.PersistentKeepalive < 0 || p.PersistentKeepalive > 65535 {
			bad(key+".persistent_keepalive", "%d: seconds between 0 (off) and 65535; 25 suits most NATs", p.PersistentKeepalive)
		}
	}
	for i, r := range c.Policy.Allow {
		if _, err := policy.ParseRule(r.From, r.Proto, r.Ports); err != nil {
			bad(fmt.Sprintf("policy.allow[%d]", i), "%v", err)
		}
	}
	c.validateBridges(bad)
	c.validateServices(bad)
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		bad("log.level", "%q: use debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "%q: use text or json", c.Log.Format)
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func (c *Config) validateMetrics(bad func(key, format string, args ...any)) {
	a := c.Admin
	if a.Metrics == "" {
		if a.MetricsPublic {
			bad("admin.metrics_public", "set, but admin.metrics is empty: set metrics = \"IP:PORT\" too, or remove metrics_public")
		}
		return
	}
	ap, err := netip.ParseAddrPort(a.Metrics)
	if err != nil {
		bad("admin.metrics", "%q: want IP:PORT, e.g. \"127.0.0.1:9610\" (the metrics carry peer addresses: keep them on loopback)", a.Metrics)
		return
	}
	if !ap.Addr().Unmap().IsLoopback() && !a.MetricsPublic {
		bad("admin.metrics", "%q is not a loopback address, and anyone who reaches it reads every peer's address and traffic without a password: use \"127.0.0.1:%d\" (a local Prometheus or an SSH tunnel), or set metrics_public = true if other hosts are meant to scrape it", a.Metrics, ap.Port())
	}
}

func (c *Config) validateBridges(bad func(key, format string, args ...any)) {
	b := c.Bridge
	if !b.Enable && (b.TCP != "" || len(b.Allow) > 0 || b.RelayMbit != 0) {
		bad("bridge.enable", "bridge settings are present but enable is false: set enable = true to run a bridge, or remove [bridge]")
	}
	if b.TCP != "" {
		if _, err := netip.ParseAddrPort(b.TCP); err != nil {
			bad("bridge.tcp", "%q: want IP:PORT, e.g. \"0.0.0.0:4610\" (the same port as listen.udp is fine)", b.TCP)
		}
	}
	for i, a := range b.Allow {
		if _, err := identity.ParsePublicKey(a.PublicKey); err != nil {
			bad(fmt.Sprintf("bridge.allow[%d].public_key", i), "%v; the node prints its key with `tomoe status`", err)
		}
	}
	if b.RelayMbit < 0 {
		bad("bridge.relay_mbit", "%d: a limit in Mbit/s per node, or 0 for none", b.RelayMbit)
	}
	if b.Enable && len(c.Bridges) > 0 {
		bad("bridges", "a bridge cannot itself join other bridges yet (federation is not built): remove [[bridges]] or [bridge]")
	}
	seen := map[identity.PublicKey]int{}
	for i, r := range c.Bridges {
		key := fmt.Sprintf("bridges[%d]", i)
		k, err := identity.ParsePublicKey(r.PublicKey)
		if err != nil {
			bad(key+".public_key", "%v; the bridge prints its key with `tomoe status`", err)
		} else if j, dup := seen[k]; dup {
			bad(key+".public_key", "same key as bridges[%d]: list each bridge once", j)
		} else {
			seen[k] = i
		}
		if r.Endpoint == "" {
			bad(key+".endpoint", "missing: the bridge's \"host:port\", e.g. \"203.0.113.1:4610\"")
		} else if _, _, err := SplitEndpoint(r.Endpoint); err != nil {
			bad(key+".endpoint", "%v", err)
		}
		if len(r.Token) > 128 {
			bad(key+".token", "%d characters: a token from `tomoe bridge token create` is shorter; check the copy", len(r.Token))
		}
	}
}

// BridgeKeys returns the keys of bridge.allow (valid after Validate).
func (c *Config) BridgeKeys() []identity.PublicKey {
	var out []identity.PublicKey
	for _, a := range c.Bridge.Allow {
		k, _ := identity.ParsePublicKey(a.PublicKey)
		out = append(out, k)
	}
	return out
}

// Key returns the bridge's key (valid after Validate).
func (r BridgeRef) Key() identity.PublicKey {
	k, _ := identity.ParsePublicKey(r.PublicKey)
	return k
}

func validInterfaceName(n string) error {
	if n == "" || len(n) > 15 {
		return fmt.Errorf("%q: an interface name has 1 to 15 characters", n)
	}
	if n == "." || n == ".." || strings.ContainsAny(n, "/: \t\n%") {
		return fmt.Errorf("%q: an interface name cannot contain '/', ':', '%%' or spaces", n)
	}
	return nil
}

// ListenPort returns the UDP port of listen.udp (0: any free port).
func (c *Config) ListenPort() (uint16, error) {
	host, port, err := net.SplitHostPort(c.Listen.UDP)
	if err != nil {
		return 0, fmt.Errorf("%q: want \"0.0.0.0:PORT\" or \"[::]:PORT\" (%v)", c.Listen.UDP, err)
	}
	switch host {
	case "", "0.0.0.0", "::":
	default:
		return 0, fmt.Errorf("%q: binding to one address is not supported yet; use \"0.0.0.0:%s\" or \"[::]:%s\", which listen on every IPv4 and IPv6 address", c.Listen.UDP, port, port)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("%q: port %q is not a number in 0..65535", c.Listen.UDP, port)
	}
	return uint16(n), nil
}

// SplitEndpoint checks "host:port" and returns its parts. host is an IP
// literal (IPv6 in brackets) or a DNS name.
func SplitEndpoint(s string) (host string, port uint16, err error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%q: want \"host:port\", IPv6 in brackets (\"[2001:db8::1]:4610\"): %v", s, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("%q: port %q is not in 1..65535", s, p)
	}
	if h == "" {
		return "", 0, fmt.Errorf("%q: the host is missing", s)
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if a.IsUnspecified() || a.IsMulticast() {
			return "", 0, fmt.Errorf("%q: %s cannot be a peer's address", s, a)
		}
		if identity.IsNodeAddress(a) {
			return "", 0, fmt.Errorf("%q: an endpoint is the peer's underlay address, not its overlay address", s)
		}
	} else if strings.ContainsAny(h, " /\\") || strings.HasPrefix(h, "-") {
		return "", 0, fmt.Errorf("%q: %q is neither an IP address nor a host name", s, h)
	}
	return h, uint16(n), nil
}

// PolicyRules returns the parsed allow rules (Validate has checked them).
func (c *Config) PolicyRules() []policy.Rule {
	out := make([]policy.Rule, 0, len(c.Policy.Allow))
	for _, r := range c.Policy.Allow {
		if pr, err := policy.ParseRule(r.From, r.Proto, r.Ports); err == nil {
			out = append(out, pr)
		}
	}
	return out
}

// PeerKey returns the parsed public key of peers[i] (Validate has checked it).
func (p Peer) Key() identity.PublicKey {
	k, _ := identity.ParsePublicKey(p.PublicKey)
	return k
}

// Keepalive returns the persistent keepalive interval.
func (p Peer) Keepalive() time.Duration {
	return time.Duration(p.PersistentKeepalive) * time.Second
}
