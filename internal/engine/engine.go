// Package engine owns the WireGuard device: it turns typed peer state into
// the device's configuration, adds and removes peers at run time, and reads
// the device's per-peer counters back. It knows nothing of policy or
// bridges; the node tells it which peers to have.
package engine

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/transport"
)

// MaxPeers is wireguard-go's limit per device.
const MaxPeers = device.MaxPeers

// PeerConfig is what the device is told about one peer.
type PeerConfig struct {
	Key identity.PublicKey
	// Endpoint is the peer's direct underlay address; invalid if unknown.
	Endpoint netip.AddrPort
	// AllowedIPs are the sources the peer may send from and the
	// destinations routed to it (cryptokey routing).
	AllowedIPs []netip.Prefix
	// Keepalive is the persistent keepalive interval (0: off).
	Keepalive time.Duration
}

// PeerStats is the device's view of one peer.
type PeerStats struct {
	Key           identity.PublicKey
	Endpoint      netip.AddrPort
	LastHandshake time.Time // zero if none yet
	RxBytes       uint64
	TxBytes       uint64
}

// Bind is what the engine needs of the node's conn.Bind (transport.Bind):
// the device sends and receives through it, and the engine names each
// peer's endpoint to the device by the peer's key, so the Bind must know
// the peers before the device does. Its contract:
//
//   - SetPrivateKey is called once, before the device opens the Bind: the
//     Bind needs the node's key to open handshake initiations.
//   - SetPeer is called before the device is told of a peer, with its
//     direct address if known (invalid if not); from then on ParseEndpoint
//     must accept transport.EndpointName of that key and return the peer's
//     one stable endpoint, whatever path its packets take. Calling it for
//     a known peer must keep the path the Bind chose. The result is not
//     used here.
//   - RemovePeer is called after the device dropped the peer, and when
//     adding it to the device failed; the Bind forgets the peer.
//
// SetPeer and RemovePeer are called with the engine's lock held, never
// from the device's goroutines: they must not call back into the engine.
type Bind interface {
	conn.Bind
	SetPrivateKey(key identity.PrivateKey)
	SetPeer(key identity.PublicKey, addr netip.AddrPort) *transport.PeerEndpoint
	RemovePeer(key identity.PublicKey)
}

// Engine is one WireGuard device.
type Engine struct {
	dev  *device.Device
	bind Bind
	log  *slog.Logger

	mu    sync.Mutex // serialises configuration changes; guards peers
	peers map[identity.PublicKey]PeerConfig
}

// New creates the device on tunDev and bind, with the node's key, listening
// on port (0: any free port), and brings it up.
func New(key identity.PrivateKey, tunDev tun.Device, bind Bind, port uint16, log *slog.Logger) (*Engine, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	bind.SetPrivateKey(key)
	e := &Engine{bind: bind, log: log, peers: make(map[identity.PublicKey]PeerConfig)}
	e.dev = device.NewDevice(tunDev, bind, newLogger(log))
	raw := key.Raw()
	cfg := fmt.Sprintf("private_key=%s\nlisten_port=%d\n", hex.EncodeToString(raw[:]), port)
	if err := e.dev.IpcSet(cfg); err != nil {
		e.dev.Close()
		return nil, fmt.Errorf("configure device: %w", unwrapIPC(err))
	}
	if err := e.dev.Up(); err != nil {
		e.dev.Close()
		return nil, fmt.Errorf("bring device up: %w", err)
	}
	return e, nil
}

// unwrapIPC turns the device's IPC errors into plain ones.
func unwrapIPC(err error) error {
	var ipcErr *device.IPCError
	if errors.As(err, &ipcErr) && errors.Unwrap(ipcErr) != nil {
		return errors.Unwrap(ipcErr)
	}
	return err
}

// SetMark puts fwmark mark on the device's UDP sockets (0: none), so that
// the node's own routes never capture its underlay traffic.
func (e *Engine) SetMark(mark uint32) error {
	if err := e.dev.IpcSet(fmt.Sprintf("fwmark=%d\n", mark)); err != nil {
		return fmt.Errorf("set fwmark: %w", unwrapIPC(err))
	}
	return nil
}

// ListenPort returns the UDP port the device listens on.
func (e *Engine) ListenPort() uint16 {
	s, err := e.dev.IpcGet()
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(line, "listen_port="); ok {
			p, _ := strconv.ParseUint(v, 10, 16)
			return uint16(p)
		}
	}
	return 0
}

// SetPeer adds the peer or replaces its configuration.
func (e *Engine) SetPeer(pc PeerConfig) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, exists := e.peers[pc.Key]; !exists && len(e.peers) >= MaxPeers {
		return fmt.Errorf("add peer %s: the device holds %d peers already", pc.Key.ShortString(), MaxPeers)
	}
	e.bind.SetPeer(pc.Key, pc.Endpoint)
	var b strings.Builder
	fmt.Fprintf(&b, "public_key=%s\n", hex.EncodeToString(pc.Key[:]))
	fmt.Fprintf(&b, "endpoint=%s\n", transport.EndpointName(pc.Key))
	fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", int(pc.Keepalive/time.Second))
	b.WriteString("replace_allowed_ips=true\n")
	for _, p := range pc.AllowedIPs {
		fmt.Fprintf(&b, "allowed_ip=%s\n", p)
	}
	if err := e.dev.IpcSet(b.String()); err != nil {
		if _, exists := e.peers[pc.Key]; !exists {
			e.bind.RemovePeer(pc.Key)
		}
		return fmt.Errorf("add peer %s: %w", pc.Key.ShortString(), unwrapIPC(err))
	}
	e.peers[pc.Key] = pc
	return nil
}

// RemovePeer removes the peer; its session keys are erased, so its traffic
// stops at once. It reports whether the peer was there.
func (e *Engine) RemovePeer(key identity.PublicKey) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.peers[key]; !ok {
		return false
	}
	e.dev.RemovePeer(device.NoisePublicKey(key))
	e.bind.RemovePeer(key)
	delete(e.peers, key)
	return true
}

// Initiate starts a handshake with the peer now (unless one was sent in
// the last 5 s).
func (e *Engine) Initiate(key identity.PublicKey) error {
	p := e.dev.LookupPeer(device.NoisePublicKey(key))
	if p == nil {
		return fmt.Errorf("initiate %s: not a peer", key.ShortString())
	}
	return p.SendHandshakeInitiation(false)
}

// HasPeer reports whether key is configured in the device.
func (e *Engine) HasPeer(key identity.PublicKey) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.peers[key]
	return ok
}

// Peer returns the configuration of key.
func (e *Engine) Peer(key identity.PublicKey) (PeerConfig, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	pc, ok := e.peers[key]
	return pc, ok
}

// PeerCount returns the number of configured peers.
func (e *Engine) PeerCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.peers)
}

// Stats reads every peer's counters from the device.
func (e *Engine) Stats() ([]PeerStats, error) {
	s, err := e.dev.IpcGet()
	if err != nil {
		return nil, fmt.Errorf("read device state: %w", err)
	}
	return parseStats(s), nil
}

// parseStats reads the peers out of the device's UAPI "get" output.
func parseStats(s string) []PeerStats {
	var (
		out     []PeerStats
		cur     *PeerStats
		sec, ns int64
	)
	flush := func() {
		if cur != nil {
			if sec != 0 || ns != 0 {
				cur.LastHandshake = time.Unix(sec, ns)
			}
			out = append(out, *cur)
		}
		cur, sec, ns = nil, 0, 0
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if k == "public_key" {
			flush()
			raw, err := hex.DecodeString(v)
			if err != nil || len(raw) != identity.KeySize {
				continue
			}
			cur = &PeerStats{}
			copy(cur.Key[:], raw)
			continue
		}
		if cur == nil {
			continue
		}
		switch k {
		case "endpoint":
			cur.Endpoint, _ = netip.ParseAddrPort(v)
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(v, 10, 64)
		case "last_handshake_time_nsec":
			ns, _ = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			cur.RxBytes, _ = strconv.ParseUint(v, 10, 64)
		case "tx_bytes":
			cur.TxBytes, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	flush()
	return out
}

// Close takes the device down and releases its sockets and TUN device.
func (e *Engine) Close() {
	e.dev.Close()
}

// newLogger adapts wireguard-go's printf logger to slog: its verbose lines
// are debug, its errors are warnings, rate-limited per message format
// because some fire per packet (e.g. "Failed to send data packets" to a
// peer with no path).
func newLogger(log *slog.Logger) *device.Logger {
	var (
		mu   sync.Mutex
		last = map[string]time.Time{}
	)
	return &device.Logger{
		Verbosef: func(format string, args ...any) {
			if log.Enabled(context.Background(), slog.LevelDebug) {
				log.Debug(fmt.Sprintf(format, args...), "component", "wireguard")
			}
		},
		Errorf: func(format string, args ...any) {
			mu.Lock()
			now := time.Now()
			if t, ok := last[format]; ok && now.Sub(t) < 10*time.Second {
				mu.Unlock()
				return
			}
			if len(last) > 256 {
				clear(last)
			}
			last[format] = now
			mu.Unlock()
			log.Warn(fmt.Sprintf(format, args...), "component", "wireguard")
		},
	}
}
