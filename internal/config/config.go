// Package config owns tomoe's configuration file: the typed structure, its
// defaults, loading (strict: unknown keys are errors) and validation, which
// runs before anything on the system is touched and names the key and the
// fix in every error.
//
// Values are parsed once, when the file is decoded: each key that is text
// in the file has a type that parses itself (types.go), so the decoder
// reports a bad value with its line and key, and the fields hold parsed
// values that need no checks where they are used. Validate keeps the rules
// that involve several keys, the file's paths or the host (groups, users).
//
// The key names are a contract (README "Configuration reference"); add keys,
// never rename them.
package config

import (
	"cmp"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tomoe-net/tomoe/internal/fileperm"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// Defaults that are not paths.
const (
	DefaultMode    = ModeKernel // on Linux, macOS and Windows; userspace elsewhere (platform.go)
	DefaultTUNName = "tomoe0"   // "utun" on macOS (platform.go)
	// DefaultMTU fits a 1500-byte underlay over IPv6 (40 IPv6 + 8 UDP + 32
	// WireGuard = 80 bytes) with 20 bytes to spare for the bridge relay
	// header that a relayed path adds; it is also fine over IPv4.
	DefaultMTU       = 1400
	MinMTU           = 1280 // IPv6 minimum link MTU
	MaxMTU           = 9000
	DefaultListenUDP = "0.0.0.0:4610"
	DefaultPort      = 4610
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
	// Console lets this node's console act for an organisation.
	Console Console `toml:"console"`
	// AllowedLocalUsers, if set, are the only local users whose programs
	// reach the overlay (kernel mode; uid policy routing).
	AllowedLocalUsers []string `toml:"allowed_local_users"`
	// Orgs are the organisations this node trusts and belongs to.
	Orgs []Org `toml:"orgs"`
	// L2 are the virtual Ethernet segments this node takes part in
	// (kernel mode, Linux).
	L2 []L2Segment `toml:"l2"`

	// KeyPassphraseFile, if set, holds on its first line the passphrase
	// of a key_file encrypted with `tomoe key encrypt` (age); it must be
	// readable by its owner only, like the key file. With it set, a
	// missing key_file is an error, not a new plain key.
	KeyPassphraseFile string `toml:"key_passphrase_file"`

	// Run says whom `tomoe up`, started as root, runs as (run.go).
	Run Run `toml:"run"`

	// dir is the directory of the file the config came from; relative paths
	// in the file are relative to it.
	dir string
	// reload: Validate leaves out the files only a start reads (LoadReload).
	reload bool
}

// TUN configures the overlay interface.
type TUN struct {
	// Mode is "kernel" (a TUN device; needs CAP_NET_ADMIN) or "userspace"
	// (gVisor netstack in the process; no privileges).
	Mode Mode   `toml:"mode"`
	Name string `toml:"name"`
	MTU  int    `toml:"mtu"`
	// IPv4 is an optional IPv4 address of this node on the overlay, for
	// IPv4 programs; it is offered to peers as a /32. "auto" derives it
	// from the node's key inside IPv4Prefix (identity.IPv4Address).
	IPv4 OwnIPv4 `toml:"ipv4"`
	// IPv4Prefix is where IPv4 addresses are derived from keys: this
	// node's own with IPv4 = "auto", and the one a "*" accept rule takes
	// from each peer as a /32.
	IPv4Prefix IPv4Prefix `toml:"ipv4_prefix"`
	// DNS (kernel mode; default true) answers DNS for the overlay's names
	// under .tomoe on fc00::53 port 53 of the interface, registered with
	// systemd-resolved for ~tomoe where it runs. false: no DNS server,
	// and resolved is left alone.
	DNS bool `toml:"dns"`
}

// Listen configures the underlay socket.
type Listen struct {
	// UDP is "0.0.0.0:PORT" or "[::]:PORT": both listen on every IPv4 and
	// IPv6 address. Port 0 picks a free port.
	UDP ListenAddr `toml:"udp"`
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
	Metrics AddrPort `toml:"metrics"`
	// MetricsPublic allows Metrics on an address other hosts can reach.
	MetricsPublic bool `toml:"metrics_public"`
	// Allow names the identities that may use the admin API over the
	// overlay (node address, TCP port 4680), each with a role.
	Allow []AdminAllow `toml:"allow"`
	// Web, if set, is the loopback "IP:PORT" of the web UI (off when
	// unset); `tomoe ui` prints a login URL for it.
	Web AddrPort `toml:"web"`
}

// Peer is a static peer.
type Peer struct {
	PublicKey identity.PublicKey `toml:"public_key"`
	// Endpoint is "host:port"; host is an IP address or a DNS name.
	Endpoint Endpoint `toml:"endpoint"`
	// PersistentKeepalive in seconds (0: off), for peers behind NAT.
	PersistentKeepalive int `toml:"persistent_keepalive"`
	// Name is a local label shown in `tomoe peers`.
	Name string `toml:"name"`
	// Devices are the public keys of plain WireGuard devices (phones,
	// wg-quick) this peer hosts (`tomoe device add` on it): packets from
	// their key-derived addresses are accepted from this peer, and only
	// from it, and packets to them are sent through it. A contract with
	// the peer: it vouches for the devices' traffic.
	Devices []identity.PublicKey `toml:"devices"`
}

// MaxDevicesPerPeer bounds peers[].devices: a home node hosts at most this
// many devices (its own bound too), each an AllowedIPs entry here.
const MaxDevicesPerPeer = 256

// Policy holds inbound allow and deny rules; all other inbound traffic is
// dropped. A deny rule beats every allow rule (config, API or organisation).
type Policy struct {
	Allow []Rule `toml:"allow"`
	Deny  []Rule `toml:"deny"`
	// StateFile keeps rules added and revoked through the admin API.
	StateFile string `toml:"state_file"`
}

// Rule is one allow or deny rule as written in the file.
type Rule struct {
	From  policy.Identity `toml:"from"`
	Proto policy.Proto    `toml:"proto"`
	Ports policy.Ports    `toml:"ports"`
	// To is where the traffic goes: "" (this node and every route it
	// offers), "self", an IP prefix, or destination nodes (group:, org:,
	// name:, key, node address).
	To policy.Dest `toml:"to"`
	// Until is an RFC 3339 time after which the rule no longer applies
	// ("" never). A rule already expired is accepted and never applies.
	Until string `toml:"until"`
}

// Bridge configures the bridge role: nodes register with this node, look
// each other up through it, and have their ciphertext relayed by it.
type Bridge struct {
	Enable bool `toml:"enable"`
	// TCP is the TCP listener for nodes whose UDP is blocked (unset: none).
	TCP AddrPort `toml:"tcp"`
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
	PublicKey identity.PublicKey `toml:"public_key"`
}

// BridgeRef is a bridge this node joins.
type BridgeRef struct {
	// Endpoint is "host:port" (UDP, and TCP on the same port when UDP is blocked).
	Endpoint  Endpoint           `toml:"endpoint"`
	PublicKey identity.PublicKey `toml:"public_key"`
	// Token is a join credential from `tomoe bridge token create`, needed
	// only until the bridge has enrolled this node's key.
	Token string `toml:"token"`
}

// Log configures logging to stderr.
type Log struct {
	Level  LogLevel  `toml:"level"`
	Format LogFormat `toml:"format"`
}

// Default returns the configuration used when a key is absent.
func Default() Config {
	return Config{
		KeyFile: DefaultKeyFile(),
		TUN:     TUN{Mode: defaultMode(runtime.GOOS), Name: defaultTUNName(runtime.GOOS), MTU: DefaultMTU, IPv4Prefix: IPv4Prefix{identity.DefaultIPv4Prefix}, DNS: defaultDNS(runtime.GOOS)},
		Listen:  Listen{UDP: ListenAddr{Port: DefaultPort, host: "0.0.0.0"}},
		Admin:   Admin{Socket: DefaultSocket()},
		Log:     Log{Level: LogLevel(slog.LevelInfo), Format: LogText},
	}
}

// startedAsRoot: the process started as root. The defaults follow the
// user the process started as, not the one it runs as now: `tomoe up`
// started as root gives root up (run.user), and a config read again
// after that must still mean the same files.
var startedAsRoot = os.Geteuid() == 0

// DefaultKeyFile is /var/lib/tomoe/node.key for root, else under the
// user's state directory.
func DefaultKeyFile() string {
	if startedAsRoot {
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
	if startedAsRoot {
		return "/run/tomoe/admin.sock"
	}
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "tomoe", "admin.sock")
	}
	if os.Getuid() < 0 {
		// Windows: no uids, and the temporary directory is the user's own.
		return filepath.Join(os.TempDir(), "tomoe", "admin.sock")
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

// LoadReload reads, decodes and validates the file at path for a live
// reload of a running node: as Load, but without the checks of the files
// only a start reads (key_passphrase_file, console.org_key, the orgs'
// certificates). A node that dropped root may no longer read them, and a
// reload does not read them again: changing them needs a restart (Diff
// says so).
func LoadReload(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parse(b, path, filepath.Dir(abs), true)
}

// Parse decodes and validates a configuration. name is used in messages;
// relative paths are resolved against dir. The error, a *ValidationError,
// lists every problem found, each with its key and, where the file has
// it, its line.
func Parse(b []byte, name, dir string) (*Config, error) {
	return parse(b, name, dir, false)
}

// ParseReload is Parse for a live reload (see LoadReload).
func ParseReload(b []byte, name, dir string) (*Config, error) {
	return parse(b, name, dir, true)
}

func parse(b []byte, name, dir string, reload bool) (*Config, error) {
	c := Default()
	c.dir = dir
	c.reload = reload
	idx := indexDocument(b)
	problems, fatal := decode(b, idx, &c)
	errs := &ValidationError{File: name, Problems: problems}
	if !fatal {
		c.resolvePaths()
		if err := c.Validate(); err != nil {
			for _, p := range err.(*ValidationError).Problems {
				if !errs.has(p.Key) {
					p.Line = idx.locate(p.Key)
					errs.Problems = append(errs.Problems, p)
				}
			}
		}
	}
	if len(errs.Problems) > 0 {
		// In the file's order; problems without a line last.
		slices.SortStableFunc(errs.Problems, func(a, b Problem) int {
			return cmp.Compare(cmp.Or(a.Line, math.MaxInt), cmp.Or(b.Line, math.MaxInt))
		})
		return nil, errs
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
	abs(&c.KeyPassphraseFile)
	abs(&c.Admin.Socket)
	abs(&c.Console.OrgKey)
	abs(&c.Policy.StateFile)
	abs(&c.Bridge.StateFile)
	c.orgPaths()
}

// OrgStateFile is where the organisation documents a node received are
// kept: orgs.json beside the key file.
func (c *Config) OrgStateFile() string {
	return filepath.Join(filepath.Dir(c.KeyFile), "orgs.json")
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
	"":              {"key_file", "key_passphrase_file", "tun", "listen", "admin", "peers", "policy", "log", "bridge", "bridges", "routes", "expose", "connect", "proxy", "allowed_local_users", "orgs", "run", "l2"},
	"l2":            {"name", "interface", "members", "hub", "attach", "mac_limit", "broadcast_limit"},
	"orgs":          {"name", "public_key", "cert", "crl_max_age", "accept_policy"},
	"routes":        {"offer", "accept"},
	"routes.offer":  {"prefix", "masquerade"},
	"routes.accept": {"from", "prefix"},
	"expose":        {"port", "proto", "target"},
	"connect":       {"local", "remote"},
	"proxy":         {"socks5", "http", "users"},
	"console":       {"org_key"},
	"bridge":        {"enable", "tcp", "allow", "state_file", "relay_mbit"},
	"bridge.allow":  {"public_key"},
	"bridges":       {"endpoint", "public_key", "token"},
	"tun":           {"mode", "name", "mtu", "ipv4", "ipv4_prefix", "dns"},
	"listen":        {"udp", "stealth"},
	"admin":         {"socket", "group", "metrics", "metrics_public", "allow"},
	"admin.allow":   {"from", "role"},
	"peers":         {"public_key", "endpoint", "persistent_keepalive", "name", "devices"},
	"policy":        {"allow", "deny", "state_file"},
	"policy.allow":  {"from", "proto", "ports", "to", "until"},
	"policy.deny":   {"from", "proto", "ports", "to", "until"},
	"log":           {"level", "format"},
	"run":           {"user"},
}

// problems collects what Validate finds.
type problems struct{ list []Problem }

func (p *problems) bad(key, format string, args ...any) {
	p.list = append(p.list, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// Validate checks the rules that involve several keys, the paths or the
// host, and reports all problems at once (a *ValidationError). Each value
// was checked on its own when it was decoded.
func (c *Config) Validate() error {
	var errs problems
	bad := errs.bad
	if c.KeyFile == "" {
		bad("key_file", "must not be empty; e.g. key_file = \"/var/lib/tomoe/node.key\"")
	}
	if c.KeyPassphraseFile != "" && !c.reload {
		if err := fileperm.CheckFor(c.RunUID(), c.KeyPassphraseFile, "key passphrase file", fileperm.Secret); err != nil {
			bad("key_passphrase_file", "%v", err)
		}
	}
	if c.Console.OrgKey != "" && !c.reload {
		if err := fileperm.CheckFor(c.RunUID(), c.Console.OrgKey, "organisation key file", fileperm.Secret); err != nil {
			bad("console.org_key", "%v", err)
		}
	}
	if c.TUN.Mode == ModeKernel {
		if err := validInterfaceName(c.TUN.Name); err != nil {
			bad("tun.name", "%v", err)
		}
	}
	if c.TUN.MTU < MinMTU || c.TUN.MTU > MaxMTU {
		bad("tun.mtu", "%d is outside %d..%d (IPv6 needs at least %d; the default %d suits a 1500-byte underlay)", c.TUN.MTU, MinMTU, MaxMTU, MinMTU, DefaultMTU)
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
	if c.Admin.Web.IsValid() && !c.Admin.Web.Addr().Unmap().IsLoopback() {
		bad("admin.web", "%q is not a loopback address: the web UI serves only this host (use \"127.0.0.1:%d\", and an SSH tunnel from elsewhere)", c.Admin.Web, c.Admin.Web.Port())
	}
	seen := map[identity.PublicKey]int{}
	for i, p := range c.Peers {
		key := fmt.Sprintf("peers[%d]", i)
		if p.PublicKey.IsZero() {
			bad(key+".public_key", "missing: a key is standard base64 of 32 bytes%s", keyHints["peers.public_key"])
		} else if j, dup := seen[p.PublicKey]; dup {
			bad(key+".public_key", "same key as peers[%d]: list each peer once", j)
		} else {
			seen[p.PublicKey] = i
		}
		if !p.Endpoint.IsValid() {
			bad(key+".endpoint", "missing: a static peer needs \"host:port\", e.g. \"192.0.2.7:4610\"")
		}
		if p.PersistentKeepalive < 0 || p.PersistentKeepalive > 65535 {
			bad(key+".persistent_keepalive", "%d: seconds between 0 (off) and 65535; 25 suits most NATs", p.PersistentKeepalive)
		}
	}
	c.validateDevices(bad)
	for _, t := range []struct {
		name  string
		rules []Rule
	}{{"allow", c.Policy.Allow}, {"deny", c.Policy.Deny}} {
		for i, r := range t.rules {
			key := fmt.Sprintf("policy.%s[%d]", t.name, i)
			if r.From.IsZero() {
				bad(key+".from", "missing: give a node address (fc..), a public key (base64), \"*\", group:ORG/GROUP, org:ORG or name:GLOB")
				continue
			}
			if _, err := policy.ParseUntil(r.Until); err != nil {
				bad(key+".until", "%v", err)
			}
			if err := r.rule(false).Check(); err != nil {
				bad(key+".ports", "%v", err)
			}
		}
	}
	c.validateBridges(bad)
	c.validateServices(bad)
	c.validateOrgs(bad)
	c.validateAdminAllow(bad)
	c.validateRun(bad)
	c.validatePlatform(runtime.GOOS, bad)
	c.validateL2(bad)
	if len(errs.list) > 0 {
		return &ValidationError{Problems: errs.list}
	}
	return nil
}

func (c *Config) validateMetrics(bad func(key, format string, args ...any)) {
	a := c.Admin
	if !a.Metrics.IsValid() {
		if a.MetricsPublic {
			bad("admin.metrics_public", "set, but admin.metrics is empty: set metrics = \"IP:PORT\" too, or remove metrics_public")
		}
		return
	}
	if !a.Metrics.Addr().Unmap().IsLoopback() && !a.MetricsPublic {
		bad("admin.metrics", "%q is not a loopback address, and anyone who reaches it reads every peer's address and traffic without a password: use \"127.0.0.1:%d\" (a local Prometheus or an SSH tunnel), or set metrics_public = true if other hosts are meant to scrape it", a.Metrics, a.Metrics.Port())
	}
}

func (c *Config) validateBridges(bad func(key, format string, args ...any)) {
	b := c.Bridge
	if !b.Enable && (b.TCP.IsValid() || len(b.Allow) > 0 || b.RelayMbit != 0) {
		bad("bridge.enable", "bridge settings are present but enable is false: set enable = true to run a bridge, or remove [bridge]")
	}
	for i, a := range b.Allow {
		if a.PublicKey.IsZero() {
			bad(fmt.Sprintf("bridge.allow[%d].public_key", i), "missing: a key is standard base64 of 32 bytes%s", keyHints["bridge.allow.public_key"])
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
		if r.PublicKey.IsZero() {
			bad(key+".public_key", "missing: a key is standard base64 of 32 bytes%s", keyHints["bridges.public_key"])
		} else if j, dup := seen[r.PublicKey]; dup {
			bad(key+".public_key", "same key as bridges[%d]: list each bridge once", j)
		} else {
			seen[r.PublicKey] = i
		}
		if !r.Endpoint.IsValid() {
			bad(key+".endpoint", "missing: the bridge's \"host:port\", e.g. \"203.0.113.1:4610\"")
		}
		if len(r.Token) > 128 {
			bad(key+".token", "%d characters: a token from `tomoe bridge token create` is shorter; check the copy", len(r.Token))
		}
	}
}

// BridgeKeys returns the keys of bridge.allow.
func (c *Config) BridgeKeys() []identity.PublicKey {
	out := make([]identity.PublicKey, 0, len(c.Bridge.Allow))
	for _, a := range c.Bridge.Allow {
		out = append(out, a.PublicKey)
	}
	return out
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

// rule gives r as the policy holds it; an invalid until (refused by
// Validate) is read as none.
func (r Rule) rule(deny bool) policy.Rule {
	until, _ := policy.ParseUntil(r.Until)
	return policy.Rule{From: r.From, Proto: r.Proto, Ports: r.Ports, Deny: deny, To: r.To, Until: until}
}

// PolicyRules returns the file's allow rules, then its deny rules, as the
// policy holds them.
func (c *Config) PolicyRules() []policy.Rule {
	out := make([]policy.Rule, 0, len(c.Policy.Allow)+len(c.Policy.Deny))
	for _, r := range c.Policy.Allow {
		out = append(out, r.rule(false))
	}
	for _, r := range c.Policy.Deny {
		out = append(out, r.rule(true))
	}
	return out
}

// Keepalive returns the persistent keepalive interval.
func (p Peer) Keepalive() time.Duration {
	return time.Duration(p.PersistentKeepalive) * time.Second
}

// validateDevices checks peers[].devices: each device has one home, is not
// a peer itself (a direct session and a hosting would fight over its
// address in WireGuard's AllowedIPs), and a home lists at most
// MaxDevicesPerPeer. That a device is not this node itself is checked
// where the key is known (node.New).
func (c *Config) validateDevices(bad func(key, format string, args ...any)) {
	peerAt := map[identity.PublicKey]int{}
	for i, p := range c.Peers {
		if !p.PublicKey.IsZero() {
			if _, ok := peerAt[p.PublicKey]; !ok {
				peerAt[p.PublicKey] = i
			}
		}
	}
	type at struct{ peer, idx int }
	home := map[identity.PublicKey]at{}
	for i, p := range c.Peers {
		if len(p.Devices) > MaxDevicesPerPeer {
			bad(fmt.Sprintf("peers[%d].devices", i), "%d devices: a home node hosts at most %d", len(p.Devices), MaxDevicesPerPeer)
			continue
		}
		for j, d := range p.Devices {
			key := fmt.Sprintf("peers[%d].devices[%d]", i, j)
			switch prev, dup := home[d]; {
			case d.IsZero():
				bad(key, "missing: a device's public key, standard base64 of 32 bytes (tomoe device list on its home node)")
			case d == p.PublicKey:
				bad(key, "that is the peer's own key: list only the devices it hosts")
			case dup && prev.peer == i:
				bad(key, "same device as peers[%d].devices[%d]: list each device once", prev.peer, prev.idx)
			case dup:
				bad(key, "already hosted by peers[%d] (devices[%d]): a device has one home node", prev.peer, prev.idx)
			default:
				if k, isPeer := peerAt[d]; isPeer {
					bad(key, "that key is peers[%d] itself: a key is either a direct peer or a device hosted by one, not both", k)
				}
				home[d] = at{i, j}
			}
		}
	}
}
