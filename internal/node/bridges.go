package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/bridge"
	"github.com/tomoe-net/tomoe/internal/bridge/client"
	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node/peers"
	"github.com/tomoe-net/tomoe/internal/routes"
)

// startBridging starts this node's bridge role, or its client of the
// bridges it joins (a node is one or the other: federation is not built).
func (n *Node) startBridging() error {
	cfg := n.cfg
	if cfg.Bridge.Enable {
		s, err := bridge.NewServer(bridge.ServerConfig{
			Key:       n.key,
			Allow:     cfg.BridgeKeys(),
			StateFile: cfg.BridgeStateFile(),
			TCP:       cfg.Bridge.TCP.String(),
			Sender:    n.bind,
			RelayMbit: cfg.Bridge.RelayMbit,
			Mark:      n.underlayMark(),
			Log:       n.log.With("component", "bridge"),
			Clock:     n.opts.Clock,
			ListenTCP: n.injected().ListenTCP,
		})
		if err != nil {
			return fmt.Errorf("bridge: %w", err)
		}
		if err := s.Start(); err != nil {
			s.Close()
			return fmt.Errorf("bridge.tcp %s: %w", cfg.Bridge.TCP, err)
		}
		n.server = s
		n.bind.SetFrameHandler(s)
		return nil
	}
	if len(cfg.Bridges) == 0 {
		return nil
	}
	var bcs []client.BridgeConfig
	for _, r := range cfg.Bridges {
		bcs = append(bcs, client.BridgeConfig{Endpoint: r.Endpoint.String(), Key: r.PublicKey, Token: r.Token})
	}
	n.setStaticKeys(cfg.Peers)
	n.client = client.New(client.Config{
		Key:            n.key,
		Bridges:        bcs,
		Bind:           n.bind,
		Log:            n.log.With("component", "bridges"),
		Wants:          n.wants,
		LocalEndpoints: n.localEndpoints,
		Mark:           n.underlayMark(),
		Resolver:       n.underlayResolver(),
		Clock:          n.opts.Clock,
		DialTCP:        n.injected().DialTCP,
		InterfaceAddrs: n.injected().InterfaceAddrs,
		// Even a node that trusts no organisation yet takes them: it may
		// have asked to join one (`tomoe org join`).
		OrgMessage:   func(b identity.PublicKey, payload []byte) { n.orgs.OnBridge(b, payload) },
		OnRegistered: func(b identity.PublicKey) { n.orgs.BridgeRegistered(b) },
	})
	n.knownKeysChanged()
	n.bind.SetFrameHandler(n.client)
	n.client.Start()
	return nil
}

// knownKeysChanged tells the bridge client the keys this node knows in
// advance, its static peers' and those its rules name by key, so that
// their shared keys are ready before their first frame (and a forged
// frame that claims one costs no X25519). Rules that name an address
// have no key to compute with: frames from it go to the client's worker.
func (n *Node) knownKeysChanged() {
	if n.client == nil {
		return
	}
	static := n.staticKeys.Load()
	keys := make([]identity.PublicKey, 0, len(*static))
	for k := range *static {
		keys = append(keys, k)
	}
	for _, e := range n.store.Rules() {
		if !e.From.Key.IsZero() {
			keys = append(keys, e.From.Key)
		}
	}
	n.client.SetKnownKeys(keys)
}

// setStaticKeys records the static peers' keys (wants, knownKeysChanged).
func (n *Node) setStaticKeys(list []config.Peer) {
	keys := make(map[identity.PublicKey]bool, len(list))
	for _, p := range list {
		keys[p.PublicKey] = true
	}
	n.staticKeys.Store(&keys)
}

// injected is what Options.Transport gives the bridge roles: TCP dial and
// listen, and the host's networks (nil: the host's own).
func (n *Node) injected() Transport {
	if t := n.opts.Transport; t != nil {
		return Transport{DialTCP: t.DialTCP, ListenTCP: t.ListenTCP, InterfaceAddrs: t.InterfaceAddrs}
	}
	return Transport{}
}

// underlayMark is the fwmark of the node's own underlay sockets in kernel
// mode (see routes.Mark), else 0.
func (n *Node) underlayMark() uint32 {
	if n.configuresHost() {
		return routes.Mark
	}
	return 0
}

// underlayResolver looks up the names of peers' and bridges' underlay
// endpoints: in kernel mode its queries carry routes.Mark, as the node's
// other underlay traffic does (see routes.Resolver).
func (n *Node) underlayResolver() *net.Resolver {
	if n.configuresHost() {
		return routes.Resolver()
	}
	return net.DefaultResolver
}

// stopBridging ends the bridge role or client (before the Bind closes, so
// the client can say goodbye).
func (n *Node) stopBridging() {
	if n.client != nil {
		n.client.Close()
	}
	if n.server != nil {
		n.server.Close()
	}
}

// wants reports whether this node would talk to key: a static peer, a
// peer in the device now, or a key its policy lets in. Only for those does
// it answer probes. The bridge client asks on the UDP receive goroutine,
// for every control frame from a sender that is not a bridge, so it takes
// neither Node.mu (held across device changes) nor the policy store's
// lock (held while a rule change writes the state file): the static keys
// do not change, the Bind's peers and the filter's rules are read without
// waiting for either.
func (n *Node) wants(key identity.PublicKey) bool {
	return (*n.staticKeys.Load())[key] || n.bind.Peer(key) != nil || n.filter.Matcher().AllowsAny(key.Address())
}

// localEndpoints are this node's addresses on its own networks, with its
// port, for peers on the same LAN as it.
func (n *Node) localEndpoints() []netip.AddrPort {
	port := n.engine.ListenPort()
	var out []netip.AddrPort
	for _, ip := range n.hostAddrs() {
		ip = ip.Unmap()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() || identity.IsNodeAddress(ip) || identity.IsSiteAddress(ip) {
			continue
		}
		out = append(out, netip.AddrPortFrom(ip, port))
		if len(out) == 4 {
			break
		}
	}
	return out
}

// hostAddrs are the host's interface addresses (or what Options.Transport
// says they are).
func (n *Node) hostAddrs() []netip.Addr {
	if t := n.opts.Transport; t != nil && t.LocalAddrs != nil {
		return t.LocalAddrs()
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if pfx, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, pfx.Addr())
		}
	}
	return out
}

// lookupViaBridges asks the bridges who owns dst and makes it a peer:
// relayed at first, direct as soon as a probe gets through.
func (n *Node) lookupViaBridges(ctx context.Context, dst netip.Addr) (*peers.Peer, error) {
	if n.client == nil || !identity.IsNodeAddress(dst) {
		return nil, fmt.Errorf("%s: %w", dst, ErrNoPeer)
	}
	f, err := n.client.Lookup(ctx, dst)
	if errors.Is(err, client.ErrNotFound) {
		return nil, fmt.Errorf("%s: %w (and no bridge knows it)", dst, ErrNoPeer)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", dst, ErrNoPeer, err)
	}
	n.peers.Lock()
	defer n.peers.Unlock()
	if n.closing.Load() {
		return nil, errClosing
	}
	p := n.peers.Get(f.Key)
	if p == nil {
		if n.peers.DynamicFull() {
			return nil, fmt.Errorf("%s: too many peers (%d)", dst, n.peers.Limits().MaxDynamic)
		}
		p = &peers.Peer{Key: f.Key, Addr: dst, ViaBridge: true}
		n.insertLocked(p)
	}
	n.peers.Unmark(p) // this node wants it
	if f.Bridge.IsValid() {
		p.Endpoint = f.Bridge // the bridge itself: straight to it
	}
	if err := n.activateLocked(p); err != nil {
		if !p.Static {
			n.forgetLocked(p, "not added")
		}
		return nil, err
	}
	if f.Relay != nil {
		n.bind.SetRelay(f.Key, f.Relay, f.RelayID)
		n.client.Probe(f)
	}
	return p, nil
}

// bridgeStatus is the bridges part of the status: never null.
func (n *Node) bridgeStatus() []adminapi.Bridge {
	out := []adminapi.Bridge{}
	if n.client == nil {
		return out
	}
	for _, s := range n.client.Status() {
		b := adminapi.Bridge{Endpoint: s.Endpoint, PublicKey: s.PublicKey, State: s.State, Transport: s.Transport, Observed: s.Observed, Error: s.Error}
		if s.LastRegister != nil {
			t := s.LastRegister.Format(time.RFC3339)
			b.LastRegistered = &t
		}
		out = append(out, b)
	}
	return out
}

var errNotBridge = &adminapi.RequestError{Code: http.StatusConflict, Err: errors.New("this node is not a bridge: set [bridge] enable = true in its config")}

// bridgeRole summarises the bridge role for the status, or nil.
func (n *Node) bridgeRole() *adminapi.BridgeRole {
	if n.server == nil {
		return nil
	}
	st := n.server.Stats()
	r := &adminapi.BridgeRole{Nodes: st.Registered, RelayedBytes: st.RelayedBytes}
	if a := n.server.TCPAddr(); a != nil {
		r.TCP = a.String()
	}
	return r
}

// BridgeStats returns the bridge role's counters, for programs that run
// bridges in this process (bench/sim); ok is false when this node is not
// a bridge.
func (n *Node) BridgeStats() (st bridge.ServerStats, ok bool) {
	if n.server == nil {
		return st, false
	}
	return n.server.Stats(), true
}

// BridgeNodes is GET /v1/bridge/nodes.
func (a BridgeArea) BridgeNodes(ctx context.Context) ([]adminapi.BridgeNode, error) {
	n := a.Node
	if n.server == nil {
		return nil, errNotBridge
	}
	out := []adminapi.BridgeNode{}
	for _, ni := range n.server.Nodes() {
		bn := adminapi.BridgeNode{
			PublicKey: ni.PublicKey.String(), Address: ni.Address.String(), Endpoint: ni.Endpoint.String(),
			Transport: ni.Transport, LastSeen: ni.LastSeen.UTC().Format(time.RFC3339),
			RelayedBytes: ni.RelayedBytes, RelayID: ni.RelayID, LocalEndpoints: []string{},
		}
		for _, ep := range ni.LocalEndpoints {
			bn.LocalEndpoints = append(bn.LocalEndpoints, ep.String())
		}
		out = append(out, bn)
	}
	return out, nil
}

// CreateToken is POST /v1/bridge/tokens.
func (a BridgeArea) CreateToken(ctx context.Context, req adminapi.TokenRequest) (adminapi.TokenResponse, error) {
	n := a.Node
	if n.server == nil {
		return adminapi.TokenResponse{}, errNotBridge
	}
	ttl := 24 * time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			return adminapi.TokenResponse{}, &adminapi.RequestError{Err: fmt.Errorf("ttl %q: want a positive duration such as \"24h\"", req.TTL)}
		}
		ttl = d
	}
	if req.Uses < 1 {
		return adminapi.TokenResponse{}, &adminapi.RequestError{Err: fmt.Errorf("uses %d: a token must allow at least one join", req.Uses)}
	}
	tok, info, err := n.server.CreateToken(req.Uses, ttl)
	if err != nil {
		return adminapi.TokenResponse{}, &adminapi.RequestError{Err: err}
	}
	n.log.Info("join token created", "id", info.ID, "uses", info.UsesLeft, "expires", info.Expires)
	return adminapi.TokenResponse{Token: tok, ID: info.ID, Uses: info.UsesLeft, Expires: info.Expires.UTC().Format(time.RFC3339)}, nil
}

// BridgeRevoke is POST /v1/bridge/revoke.
func (a BridgeArea) BridgeRevoke(ctx context.Context, req adminapi.BridgeRevokeRequest) (adminapi.BridgeRevokeResponse, error) {
	n := a.Node
	if n.server == nil {
		return adminapi.BridgeRevokeResponse{}, errNotBridge
	}
	k, err := identity.ParsePublicKey(req.PublicKey)
	if err != nil {
		return adminapi.BridgeRevokeResponse{}, &adminapi.RequestError{Err: err}
	}
	registered := false
	for _, ni := range n.server.Nodes() {
		if ni.PublicKey == k {
			registered = true
		}
	}
	if _, err := n.server.Revoke(k); err != nil {
		return adminapi.BridgeRevokeResponse{}, err
	}
	n.log.Info("node revoked from the bridge", "peer", k.ShortString(), "was_registered", registered)
	return adminapi.BridgeRevokeResponse{PublicKey: k.String(), WasRegistered: registered}, nil
}
