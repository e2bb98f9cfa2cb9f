// Package node is tomoe's composition root: it builds a running node from
// a validated config (key, policy, TUN device or userspace stack, TUN
// wrapper, Bind, WireGuard engine, admin API) and owns the lifecycle of all
// of it. Subsystems do not know each other; the node wires them and makes
// the decisions that need more than one of them (which peers to put in the
// device, what a revocation cuts).
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/bridge"
	"github.com/tomoe-net/tomoe/internal/bridge/client"
	"github.com/tomoe-net/tomoe/internal/clock"
	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/devices"
	"github.com/tomoe-net/tomoe/internal/engine"
	"github.com/tomoe-net/tomoe/internal/firewall"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/keyenc"
	"github.com/tomoe-net/tomoe/internal/l2"
	"github.com/tomoe-net/tomoe/internal/netstack"
	"github.com/tomoe-net/tomoe/internal/node/changes"
	"github.com/tomoe-net/tomoe/internal/node/console"
	"github.com/tomoe-net/tomoe/internal/node/l2held"
	"github.com/tomoe-net/tomoe/internal/node/localsvc"
	"github.com/tomoe-net/tomoe/internal/node/orgs"
	"github.com/tomoe-net/tomoe/internal/node/peers"
	"github.com/tomoe-net/tomoe/internal/node/routing"
	"github.com/tomoe-net/tomoe/internal/offers"
	"github.com/tomoe-net/tomoe/internal/policy"
	"github.com/tomoe-net/tomoe/internal/routes"
	"github.com/tomoe-net/tomoe/internal/transport"
	"github.com/tomoe-net/tomoe/internal/tunwrap"
	"github.com/tomoe-net/tomoe/internal/webui"
)

// Event is an admin API event.
type Event = adminapi.Event

// Event types, re-exported for brevity.
const (
	EventPeerAdded       = adminapi.EventPeerAdded
	EventPeerRemoved     = adminapi.EventPeerRemoved
	EventPeerUp          = adminapi.EventPeerUp
	EventPeerDown        = adminapi.EventPeerDown
	EventHandshake       = adminapi.EventHandshake
	EventPolicyAllow     = adminapi.EventPolicyAllow
	EventPolicyRevoke    = adminapi.EventPolicyRevoke
	EventPolicyExpired   = adminapi.EventPolicyExpired
	EventDenied          = adminapi.EventDenied
	EventAdmissionDenied = adminapi.EventAdmissionDenied
)

var errClosing = routing.ErrClosing

// Options are what an embedding program (tests, the demo) may set beyond
// the config.
type Options struct {
	Logger *slog.Logger
	// Version is reported by the status API.
	Version string
	// ConntrackMax bounds the connection table (0: policy.DefaultConntrackMax).
	// Tests shrink it so that filling it takes few packets.
	ConntrackMax int
	// Transport, if not nil, is the node's underlay instead of the host's
	// own sockets: tests and simulations give an in-memory network.
	Transport *Transport
	// StackBatchSize, if not 0, is the userspace stack's batch size
	// (netstack.Config.BatchSize): wireguard-go holds one 64 KiB buffer
	// per slot for reading the stack, 8 MiB a node at the default 128.
	// Simulations of thousands of nodes in one process shrink it.
	StackBatchSize int
	// TUN, if not nil, is the device a kernel-mode node uses instead of
	// creating one; the node then changes nothing of the host (addresses,
	// routes, firewall, forwarding, the namespace lock): for tests that
	// read and write the device themselves (testnet.ChanTUN).
	TUN tunwrap.Device
	// Clock is where the node's behaviour-deciding timers take their time
	// from: eviction of idle peers, admission's rates, the route offers'
	// refresh, requests and expiry, and its bridges' registrations,
	// lookups, probes and expiry; nil: real time. Tests pass a
	// clock.Manual and advance it; it should start at the real time,
	// since the device's handshake times are real (WireGuard keeps its
	// own timers, as do sockets' deadlines).
	Clock clock.Clock
	// KeyPrompt, if not nil, asks for the passphrase of an encrypted
	// key_file when the config names no key_passphrase_file (tomoe up on
	// a terminal); see keyenc.LoadOrCreate for the other sources.
	KeyPrompt keyenc.Prompt
	// ConfigPath is the file cfg was loaded from: Reload (SIGHUP, POST
	// /v1/reload) reads it again. "": the node cannot reload.
	ConfigPath string
	// CredentialsDir is systemd's $CREDENTIALS_DIRECTORY, where a unit's
	// LoadCredentialEncrypted=tomoe-key:FILE puts the decrypted key of a
	// key_file that is a systemd credential; "": none.
	CredentialsDir string
}

// Transport is what a node sends and receives its underlay traffic with.
// Every field is optional; nil keeps the host's own.
type Transport struct {
	// UDP carries WireGuard and the bridge protocol: the node's Bind
	// wraps it (conn.NewStdNetBind otherwise).
	UDP conn.Bind
	// DialTCP connects to a bridge over TCP, ListenTCP listens for nodes
	// on a bridge (the bridge protocol's TCP fallback).
	DialTCP   func(ctx context.Context, network, addr string) (net.Conn, error)
	ListenTCP func(network, addr string) (net.Listener, error)
	// LocalAddrs are the host's addresses a node tells its bridges about,
	// for peers on its own LAN.
	LocalAddrs func() []netip.Addr
	// InterfaceAddrs are the host's addresses with their networks, in
	// net.InterfaceAddrs's form: the bridge client's prober never probes
	// their broadcast addresses.
	InterfaceAddrs func() ([]net.Addr, error)
}

// Node is a running tomoe node.
type Node struct {
	cfg     *config.Config
	opts    Options
	log     *slog.Logger
	version string
	key     identity.PrivateKey
	pub     identity.PublicKey // key's: computing it costs an X25519
	ipv4    netip.Addr         // tun.ipv4, derived from key with "auto"; invalid if unset
	started time.Time
	clock   clock.Clock // Options.Clock, or real time

	// netnsLock (kernel mode) is held from New to the end of Close: one
	// kernel-mode node per network namespace.
	netnsLock *routes.NetnsLock

	store    *policy.Store
	filter   *policy.Filter
	stack    *netstack.Stack    // userspace mode only
	osRoutes *routes.Interface  // kernel mode only; set once configured, under the peer table's lock (Admit runs already); safe for concurrent use
	hostMu   sync.Mutex         // guards firewall and forward; taken after every other lock
	firewall *firewall.Firewall // kernel mode only
	l2       *l2.Manager        // kernel mode, [[l2]] segments; guarded by hostMu
	l2plan   atomic.Pointer[l2Plan]
	// l2Started: the host is set up, and the segments follow the
	// directory (l2Sync); guarded by reloadMu.
	l2Started bool
	l2Sync    chan struct{}
	// l2mem remembers who held each tunnel across restarts (opened by
	// the first plan); guarded by reloadMu.
	l2mem *l2held.Memory
	// dir is the directory of verified memberships (MembersChanged).
	dir     atomic.Pointer[policy.Directory]
	bridges []string          // the segments' bridges, for the firewall; guarded by hostMu
	forward routes.Forwarding // kernel mode only
	wrapper *tunwrap.Wrapper
	bind    *transport.Bind
	replay  *transport.ReplayStore // saved by pollLoop and Close
	engine  *engine.Engine
	events  *adminapi.EventBus
	api     *adminapi.Server
	ui      *webui.Server // nil unless [admin] web is set
	// overlayAdmin serves the admin API inside the overlay ([[admin.allow]]).
	overlayAdmin *overlayAdmin
	consoleOnce  sync.Once
	consoleView  *console.Console
	metrics      *http.Server
	server       *bridge.Server // when this node is a bridge
	client       *client.Client // when this node joins bridges
	// staticKeys are the config's static peers' keys: set before the
	// bridge client starts, replaced by a reload (wants reads it
	// without a lock).
	staticKeys atomic.Pointer[map[identity.PublicKey]bool]
	// adminAllow is [[admin.allow]] now (the config's, replaced by a
	// reload).
	adminAllow atomic.Pointer[[]config.AdminAllow]

	// reloadMu serialises reloads and guards live: the config whose live
	// sections (peers, policy, routes, services, admin.allow) are applied.
	reloadMu sync.Mutex
	live     *config.Config
	// reloadHook, set by tests only, is called between a reload's steps.
	reloadHook func(step string)
	// devices are the plain WireGuard devices this node hosts (devices.go).
	devices *devices.Store

	metricsOnce sync.Once
	registry    *prometheus.Registry

	// peers is the peer table, with its own lock, which is all that
	// admission, activation and eviction take (functions that need it end
	// in Locked). routes is the route-offer protocol and the route plan;
	// its lock comes before the peer table's (routes.Lock takes both).
	peers   *peers.Table
	routes  *routing.Router
	changes *changes.Store // the admin API's persisted changes to routes and services
	orgs    *orgs.Engine   // organisations: certificates, revocation lists, organisation policy
	// wildRefusedLog limits the log lines about refused wildcard peers;
	// guarded by the peer table's lock.
	wildRefusedLog time.Time

	closing atomic.Bool // set with routes.Lock held

	rehandshake chan netip.AddrPort // sources of unknown sessions (unknownSession)

	svc *localsvc.Set // exposed services and local access listeners
	dns dnsState      // the DNS server for .tomoe (kernel mode)

	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// New starts a node. On error everything already set up is torn down.
func New(cfg *config.Config, opts Options) (n *Node, err error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	loaded, err := keyenc.LoadOrCreate(cfg.KeyFile, keyenc.Sources{
		PassphraseFile: cfg.KeyPassphraseFile,
		CredentialsDir: opts.CredentialsDir,
		Prompt:         opts.KeyPrompt,
	})
	if err != nil {
		return nil, err
	}
	key := loaded.Key
	pub := key.Public()
	switch {
	case loaded.Created:
		log.Info("created a new node key", "key_file", cfg.KeyFile, "public_key", pub)
	case loaded.Format != keyenc.Plain:
		log.Info("decrypted the node key in memory", "key_file", cfg.KeyFile, "format", loaded.Format.String(), "from", loaded.From, "public_key", pub)
	case cfg.KeyPassphraseFile != "":
		log.Warn("key_passphrase_file is set, but key_file is not encrypted: encrypt it with tomoe key encrypt", "key_file", cfg.KeyFile)
	}
	n = &Node{
		cfg: cfg, log: log, version: opts.Version, key: key, pub: pub, ipv4: cfg.IPv4(pub), started: time.Now(), clock: clock.Or(opts.Clock),
		events: adminapi.NewEventBus(),
		peers:  peers.New(peers.Limits{MaxWildcard: maxWildcardPeers, MaxWildcardPerSource: maxWildcardPerSource}),
		done:   make(chan struct{}),

		rehandshake: make(chan netip.AddrPort, 64),
		l2Sync:      make(chan struct{}, 1),
	}
	defer func() {
		if err != nil {
			n.Close()
			n = nil
		}
	}()

	n.live = cfg
	n.setStaticKeys(cfg.Peers)
	allow := cfg.Admin.Allow
	n.adminAllow.Store(&allow)
	if opts.TUN != nil && cfg.TUN.Mode != config.ModeKernel {
		return nil, errors.New("node options: a TUN device is for a kernel-mode node (tun.mode = \"kernel\")")
	}
	n.opts = opts
	if n.configuresHost() {
		// Before anything in the namespace changes, so that a second
		// node leaves the first's routes, rules and firewall alone.
		if n.netnsLock, err = routes.LockNetns(); err != nil {
			return n, err
		}
	}
	store, warnings, err := policy.OpenStore(cfg.StateFile(), cfg.PolicyRules())
	if err != nil {
		return n, err
	}
	for _, w := range warnings {
		log.Warn(w)
	}
	n.store = store
	store.SetAdminRules(cfg.AdminRules(adminapi.AdminPort))
	if n.changes, err = changes.Open(changes.File(cfg), log); err != nil {
		return n, err
	}
	l2cfg, err := n.changes.L2(cfg.L2)
	if err != nil {
		return n, err
	}
	store.SetL2Rules(planL2(l2cfg, cfg.TUN.MTU, pub.Address(), nil, nil, nil).rules)
	if n.routes, err = n.newRouter(); err != nil {
		return n, err
	}
	if n.configuresHost() {
		if err := n.recoverForwarding(); err != nil {
			return n, err
		}
	}
	n.filter = policy.NewFilter(n.routes.LocalPolicy(), store.Matcher(), policy.NewConntrack(opts.ConntrackMax), n.onDeny)
	// Every matcher the store compiles from now on reaches the filter, in
	// order, under the store's lock (a change racing another never
	// installs the older rule set last).
	store.Publish(n.filter.SetMatcher)
	// After the filter (the engine installs the directory it loaded).
	if n.orgs, err = n.newOrgs(); err != nil {
		return n, err
	}

	dev, err := n.openTUN(pub)
	if err != nil {
		return n, err
	}
	n.wrapper = tunwrap.New(dev, tunwrap.Config{Filter: n.filter, Local: pub.Address(), Resolve: n.resolve,
		ControlPort: offers.ControlPort, Control: n.onControl})
	if t := opts.Transport; t != nil && t.UDP != nil {
		n.bind = transport.NewBindOn(t.UDP, log.With("component", "bind"))
	} else {
		n.bind = transport.NewBind(log.With("component", "bind"))
	}
	if n.replay, err = transport.OpenReplayStore(replayFile(cfg), transport.DefaultReplayKeys); err != nil {
		n.wrapper.Close()
		n.wrapper = nil
		return n, err
	}
	n.bind.SetReplayStore(n.replay)
	n.bind.SetAdmitter(n)
	n.bind.SetUnknownSessionHandler(n.unknownSession)
	port := cfg.Listen.UDP.Port
	n.engine, err = engine.New(key, n.wrapper, n.bind, port, log)
	if err != nil {
		n.wrapper.Close()
		n.wrapper = nil
		return n, fmt.Errorf("listen.udp %s: %w", cfg.Listen.UDP, err)
	}
	if n.configuresHost() {
		if err := n.configureInterface(pub); err != nil {
			return n, err
		}
	}
	if err := n.addStatic(cfg.Peers); err != nil {
		return n, err
	}
	if n.configuresHost() {
		n.reloadMu.Lock()
		if segs, err := n.changes.L2(n.live.L2); err == nil {
			n.greetForL2(segs)
		}
		n.reloadMu.Unlock()
	}
	if err := n.openDevices(); err != nil {
		return n, err
	}
	n.peers.Lock()
	n.routesChangedLocked()
	n.peers.Unlock()
	if err := n.startBridging(); err != nil {
		return n, err
	}
	if n.svc, err = n.startServices(); err != nil {
		return n, err
	}

	if cfg.Admin.Web.IsValid() {
		ln, err := webui.Listen(cfg.Admin.Web.AddrPort)
		if err != nil {
			return n, fmt.Errorf("admin.web: %w", err)
		}
		n.ui = webui.New(ln, log.With("component", "webui"))
	}
	if cfg.Admin.Socket != "" {
		ln, err := adminapi.Listen(cfg.Admin.Socket, cfg.Admin.Group)
		if err != nil {
			return n, fmt.Errorf("admin.socket: %w", err)
		}
		n.api = adminapi.Serve(ln, log.With("component", "admin"), n.apiAreas()...)
	}
	if n.ui != nil {
		// The UI calls the same API in-process: it only renders it.
		n.ui.Serve(adminapi.Handler(log.With("component", "admin"), n.apiAreas()...))
		log.Info("web UI up: run `tomoe ui` for a login URL", "url", n.ui.URL())
	}
	if err := n.serveOverlayAdmin(); err != nil {
		return n, err
	}
	if cfg.Admin.Metrics.IsValid() {
		if err := n.serveMetrics(cfg.Admin.Metrics.String()); err != nil {
			return n, fmt.Errorf("admin.metrics: %w", err)
		}
	}
	n.wg.Add(6)
	go func() {
		defer n.wg.Done()
		n.orgs.Run()
	}()
	go n.syncL2Loop()
	go n.evictLoop()
	go n.pollLoop()
	go n.rehandshakeLoop()
	go func() {
		defer n.wg.Done()
		n.routes.Run()
	}()
	log.Info("node up", "public_key", pub, "address", pub.Address(), "site_prefix", pub.SitePrefix(),
		"mode", cfg.TUN.Mode, "listen_port", n.engine.ListenPort(), "peers", len(cfg.Peers), "rules", len(store.Rules()))
	return n, nil
}

// configuresHost reports whether this node sets up the host: a kernel-mode
// node on a TUN device of its own (not one given in Options).
func (n *Node) configuresHost() bool {
	return n.cfg.TUN.Mode == config.ModeKernel && n.opts.TUN == nil
}

// openTUN creates the kernel TUN device or the userspace stack.
func (n *Node) openTUN(pub identity.PublicKey) (tunwrap.Device, error) {
	cfg := n.cfg
	if cfg.TUN.Mode == config.ModeUserspace {
		addrs := []netip.Addr{pub.Address()}
		if v4 := n.ipv4; v4.IsValid() {
			addrs = append(addrs, v4)
		}
		st, err := netstack.New(netstack.Config{Addresses: addrs, MTU: cfg.TUN.MTU, Logger: n.log.With("component", "netstack"), BatchSize: n.opts.StackBatchSize})
		if err != nil {
			return nil, fmt.Errorf("userspace stack: %w", err)
		}
		n.stack = st
		return st, nil
	}
	if n.opts.TUN != nil {
		return n.opts.TUN, nil
	}
	dev, err := tun.CreateTUN(cfg.TUN.Name, cfg.TUN.MTU)
	if err != nil {
		return nil, fmt.Errorf("tun.name %s: create TUN device: %w (%s; tun.mode = \"userspace\" needs none of that)", cfg.TUN.Name, err, tunNeeds)
	}
	k, err := tunwrap.Kernel(dev)
	if err != nil {
		dev.Close()
		return nil, err
	}
	return k, nil
}

// Stack returns the userspace stack (nil in kernel mode), for programs in
// this process that use the overlay.
func (n *Node) Stack() *netstack.Stack { return n.stack }

// DialContext connects through the overlay from this node's userspace
// stack. It finds the destination's peer first, so an address that no
// known peer owns fails at once (the userspace TCP stack would otherwise
// retry its SYN until the context ends: it treats ICMP errors as soft).
func (n *Node) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if n.stack == nil {
		return nil, errors.New("dial: this node runs in kernel mode; use the system's sockets")
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("dial %s: want [address]:port with a literal address: %w", address, err)
	}
	if err := n.ensurePeer(ctx, ap.Addr()); err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: net.TCPAddrFromAddrPort(ap), Err: err}
	}
	return n.stack.DialContext(ctx, network, address)
}

// PublicKey returns the node's public key.
func (n *Node) PublicKey() identity.PublicKey { return n.pub }

// Address returns the node address.
func (n *Node) Address() netip.Addr { return n.pub.Address() }

// ListenPort returns the UDP port the node listens on.
func (n *Node) ListenPort() uint16 { return n.engine.ListenPort() }

// Filter returns the packet filter (counters for tests and the demo).
func (n *Node) Filter() *policy.Filter { return n.filter }

// Wrapper returns the TUN wrapper (its counters, and injection for tests).
func (n *Node) Wrapper() *tunwrap.Wrapper { return n.wrapper }

// Done is closed when the node has begun shutting down.
func (n *Node) Done() <-chan struct{} { return n.done }

// Close shuts the node down: admin API, peers, device, routes, sockets. It
// is safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var withdrawn map[identity.PublicKey]uint64
		if n.routes != nil {
			n.routes.Lock()
			if n.wrapper != nil && n.engine != nil {
				withdrawn = n.routes.WithdrawAllLocked(n.bind.Sent)
			}
			n.closing.Store(true)
			n.routes.Unlock()
		}
		n.closing.Store(true)
		if len(withdrawn) > 0 {
			n.flushWithdrawals(withdrawn)
		}
		close(n.done)
		var errs []error
		if n.ui != nil {
			n.ui.Close() // before the API it calls
		}
		if n.api != nil {
			n.api.Close()
		}
		n.reloadMu.Lock() // a reload may start it
		oa := n.overlayAdmin
		n.reloadMu.Unlock()
		oa.close()
		if n.metrics != nil {
			n.metrics.Close()
		}
		n.wg.Wait()
		if n.svc != nil {
			n.svc.Close()
		}
		n.stopBridging()
		n.stopDNS()
		if err := n.stopL2(); err != nil {
			errs = append(errs, err)
		}
		// Routes and address first, while the interface still exists.
		if n.osRoutes != nil {
			if err := n.osRoutes.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if n.firewall != nil {
			if err := n.firewall.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if err := n.forward.Restore(); err != nil {
			errs = append(errs, err)
		}
		if n.engine != nil {
			// Closing the device closes the wrapper, the stack or TUN and the Bind.
			n.engine.Close()
		} else if n.wrapper != nil {
			n.wrapper.Close()
		}
		if n.replay != nil {
			// After the Bind: nothing records into it any more.
			if err := n.replay.Save(); err != nil {
				errs = append(errs, err)
			}
		}
		n.events.Close()
		// Last: the namespace is as this node found it.
		if n.netnsLock != nil {
			if err := n.netnsLock.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		n.closeErr = errors.Join(errs...)
		n.log.Info("node stopped")
	})
	return n.closeErr
}

func (n *Node) serveMetrics(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", adminapi.Handler(n.log, adminapi.Metrics{Gatherer: n.Metrics()}))
	n.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go n.metrics.Serve(ln)
	if ap, err := netip.ParseAddrPort(addr); err == nil && !ap.Addr().Unmap().IsLoopback() {
		// Validate refused this without metrics_public = true.
		n.log.Warn("serving metrics beyond loopback, without authentication (admin.metrics_public = true)", "addr", addr)
	}
	return nil
}

// onDeny is the filter's rate-limited report of denied inbound packets.
func (n *Node) onDeny(d policy.Denial) {
	n.log.Info("inbound packets denied", "from", d.Src, "to", d.Dst, "proto", d.Proto, "port", d.DstPort, "reason", d.Reason.String(), "total", d.Count)
	n.events.Publish(Event{Type: EventDenied, Address: d.Src.String(), Detail: fmt.Sprintf("%s proto %d port %d to %s", d.Reason, d.Proto, d.DstPort, d.Dst), Count: d.Count})
}

// pollLoop reads the device's per-peer state every 2 s, turning handshakes
// into events, and saves the handshake replay state every replaySave.
func (n *Node) pollLoop() {
	defer n.wg.Done()
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	lastSave := time.Now()
	for {
		select {
		case <-n.done:
			return
		case now := <-t.C:
			n.expireRules(n.clock.Now())
			n.refresh(context.Background())
			n.syncFirewallPeers()
			if now.Sub(lastSave) >= replaySave {
				lastSave = now
				if err := n.replay.Save(); err != nil {
					n.log.Warn("cannot save the handshake replay state", "err", err)
				}
			}
		}
	}
}

// expireRules drops the rules whose until has passed (pollLoop looks
// every 2 s: a rule outlives its until by at most that).
func (n *Node) expireRules(now time.Time) {
	next := n.store.Matcher().NextExpiry()
	if next.IsZero() || now.Before(next) {
		return
	}
	removed := n.store.Expire(now)
	n.knownKeysChanged()
	for _, e := range removed {
		n.log.Info("policy: rule expired", "rule", e.Rule.String(), "until", e.Until)
		n.events.Publish(Event{Type: EventPolicyExpired, Address: addrOf(e.From), Detail: e.Rule.String() + " expired"})
	}
}

// replaySave is how often the replay state is saved: what a crash can
// lose (a recording of a handshake from the last replaySave before it
// could be answered once after the restart).
const replaySave = 10 * time.Second

// replayFile is where the newest handshake time of each peer is kept,
// beside the key.
func replayFile(cfg *config.Config) string {
	return filepath.Join(filepath.Dir(cfg.KeyFile), "handshakes.json")
}

// withdrawWait bounds how long Close waits for its withdrawals to leave:
// the round trip of a handshake, for a peer whose session must be renewed
// before WireGuard sends it anything.
const withdrawWait = time.Second

// flushWithdrawals waits, at most withdrawWait, until WireGuard has taken
// the withdrawals from the wrapper and queued them for their peers, and
// then until each of those peers has had a transport message handed to
// the socket since its withdrawal was queued: the withdrawal, or one
// queued ahead of it, which the peer's one sender hands over just before
// (transport/sent.go). The device may then close without dropping them.
func (n *Node) flushWithdrawals(sent map[identity.PublicKey]uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), withdrawWait)
	defer cancel()
	if err := n.wrapper.WaitStaged(ctx); err != nil {
		n.log.Info("route withdrawals not sent before shutdown", "err", err)
		return
	}
	for k, before := range sent {
		if err := n.bind.WaitSent(ctx, k, before); err != nil {
			n.log.Info("route withdrawal not sent before shutdown", "peer", k.ShortString(), "err", err)
		}
	}
}
