package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/devices"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node/peers"
)

// Hosted devices (`tomoe device add`): plain WireGuard peers (phones,
// wg-quick) whose home is this node. Each is a static peer without an
// endpoint (WireGuard learns it from the device's handshake), with only its
// node address in its AllowedIPs; the TUN wrapper forwards between it and
// the overlay (policy.Filter.Hairpin), and the filter guards it.

// devicesFile is where a node keeps its hosted devices: beside its key.
func devicesFile(cfg *config.Config) string {
	return filepath.Join(filepath.Dir(cfg.KeyFile), "devices.json")
}

// DevicesArea is GET /v1/devices, POST /v1/devices/add and
// /v1/devices/remove.
type DevicesArea struct{ *Node }

// RegisterAPI implements adminapi.Area.
func (a DevicesArea) RegisterAPI(m *adminapi.Mux) {
	m.Get("/v1/devices", func(ctx context.Context) (any, error) { return a.Devices(ctx) })
	adminapi.Post(m, "/v1/devices/add", func(ctx context.Context, r adminapi.DeviceAddRequest) (any, error) { return a.AddDevice(ctx, r) })
	adminapi.Post(m, "/v1/devices/remove", func(ctx context.Context, r adminapi.DeviceRemoveRequest) (any, error) {
		return a.RemoveDevice(ctx, r)
	})
}

// openDevices loads the hosted devices and registers them as static
// peers. A device key that is also a configured peer, or a device another
// peer hosts, stops the node: one of the two must go.
func (n *Node) openDevices() error {
	st, err := devices.Open(devicesFile(n.cfg))
	if err != nil {
		return err
	}
	n.devices = st
	n.peers.Lock()
	defer n.peers.Unlock()
	for _, d := range st.List() {
		if err := n.deviceConflictLocked(d.PublicKey); err != nil {
			return fmt.Errorf("%s: device %q: %w (tomoe device remove %s, or change the config)", st.Path(), d.Name, err, d.Name)
		}
		n.insertDeviceLocked(d)
	}
	n.hostedChangedLocked()
	return nil
}

// deviceConflictLocked says why key cannot be a device hosted here.
func (n *Node) deviceConflictLocked(key identity.PublicKey) error {
	switch {
	case key == n.pub:
		return errors.New("that is this node's own key")
	case n.peers.Get(key) != nil:
		return errors.New("that key is a peer of this node")
	case n.peers.ByDevice(key.Address()) != nil:
		return fmt.Errorf("that device is hosted by peer %s (peers[].devices)", n.peers.ByDevice(key.Address()).Key.ShortString())
	}
	return nil
}

func (n *Node) insertDeviceLocked(d devices.Device) {
	n.insertLocked(&peers.Peer{Key: d.PublicKey, Addr: d.Address(), Name: d.Name, Static: true, Device: true})
}

// hostedChangedLocked tells the filter which addresses are hosted devices.
func (n *Node) hostedChangedLocked() {
	var addrs []netip.Addr
	for p := range n.peers.All() {
		if p.Device {
			addrs = append(addrs, p.Addr)
		}
	}
	n.filter.SetHosted(addrs)
	n.store.SetHosted(addrs)
}

// Devices is GET /v1/devices.
func (a DevicesArea) Devices(ctx context.Context) ([]adminapi.Device, error) {
	n := a.Node
	n.refresh(ctx)
	n.peers.Lock()
	defer n.peers.Unlock()
	list := n.devices.List()
	out := make([]adminapi.Device, 0, len(list))
	for _, d := range list {
		out = append(out, n.apiDeviceLocked(d))
	}
	return out, nil
}

func (n *Node) apiDeviceLocked(d devices.Device) adminapi.Device {
	ad := adminapi.Device{Name: d.Name, PublicKey: d.PublicKey.String(), Address: d.Address().String(), Added: d.Added.UTC().Format(time.RFC3339)}
	p := n.peers.Get(d.PublicKey)
	if p == nil || !p.Device {
		return ad
	}
	ad.Up, ad.RxBytes, ad.TxBytes = p.Up, p.RX, p.TX
	if p.Active {
		if ep := n.endpointOf(p); ep != "" {
			ad.Endpoint = &ep
		}
	}
	if !p.LastHS.IsZero() {
		t := p.LastHS.UTC().Format(time.RFC3339)
		ad.LastHandshake = &t
	}
	return ad
}

// AddDevice is POST /v1/devices/add: a new key for the device, recorded
// by its public half only; the private half leaves in the response's
// wg-quick configuration and nowhere else (no log, no event, no file).
func (a DevicesArea) AddDevice(ctx context.Context, req adminapi.DeviceAddRequest) (adminapi.DeviceAddResponse, error) {
	n := a.Node
	if err := devices.CheckName(req.Name); err != nil {
		return adminapi.DeviceAddResponse{}, adminapi.BadRequest(err)
	}
	endpoint, err := n.deviceEndpoint(req.Endpoint)
	if err != nil {
		return adminapi.DeviceAddResponse{}, adminapi.BadRequest(err)
	}
	key, err := identity.GeneratePrivateKey()
	if err != nil {
		return adminapi.DeviceAddResponse{}, err
	}
	d := devices.Device{Name: req.Name, PublicKey: key.Public(), Added: time.Now().UTC().Truncate(time.Second)}
	n.peers.Lock()
	if n.closing.Load() {
		n.peers.Unlock()
		return adminapi.DeviceAddResponse{}, errClosing
	}
	if err := n.deviceConflictLocked(d.PublicKey); err != nil {
		n.peers.Unlock()
		return adminapi.DeviceAddResponse{}, err // a fresh key: cannot happen
	}
	if err := n.devices.Add(d); err != nil {
		n.peers.Unlock()
		switch {
		case errors.Is(err, devices.ErrExists):
			return adminapi.DeviceAddResponse{}, adminapi.Conflict(err)
		case errors.Is(err, devices.ErrBadName), errors.Is(err, devices.ErrFull):
			return adminapi.DeviceAddResponse{}, adminapi.BadRequest(err)
		}
		return adminapi.DeviceAddResponse{}, err
	}
	n.insertDeviceLocked(d)
	n.hostedChangedLocked()
	ad := n.apiDeviceLocked(d)
	n.peers.Unlock()

	prof := devices.Profile{Name: d.Name, PrivateKey: key, MTU: n.cfg.TUN.MTU, Home: n.pub, Endpoint: endpoint,
		AllowedIPs: n.deviceAllowedIPs(), Keepalive: devices.DefaultKeepalive}
	n.log.Info("device added", "device", d.Name, "peer", d.PublicKey.ShortString(), "addr", d.Address())
	n.events.Publish(Event{Type: adminapi.EventPeerAdded, Peer: d.PublicKey.String(), Address: d.Address().String(), Detail: "device " + d.Name + " added"})
	return adminapi.DeviceAddResponse{Device: ad, Config: prof.WGQuick(),
		Peers: fmt.Sprintf("devices = [%q]  # on the [[peers]] entry of %s, in the config of every node the device may talk to", d.PublicKey.String(), n.pub)}, nil
}

// RemoveDevice is POST /v1/devices/remove: the device's session ends at
// once and its address is no longer forwarded.
func (a DevicesArea) RemoveDevice(ctx context.Context, req adminapi.DeviceRemoveRequest) (adminapi.Device, error) {
	n := a.Node
	if strings.TrimSpace(req.Device) == "" {
		return adminapi.Device{}, adminapi.BadRequest(errors.New("name the device: its name, public key or address"))
	}
	n.peers.Lock()
	defer n.peers.Unlock()
	d, err := n.devices.Remove(req.Device)
	if errors.Is(err, devices.ErrNotFound) {
		return adminapi.Device{}, adminapi.NotFound(err)
	}
	if err != nil {
		return adminapi.Device{}, err
	}
	ad := n.apiDeviceLocked(d)
	if p := n.peers.Get(d.PublicKey); p != nil && p.Device {
		n.forgetLocked(p, "device removed")
	}
	n.hostedChangedLocked()
	n.log.Info("device removed", "device", d.Name, "peer", d.PublicKey.ShortString())
	return ad, nil
}

// deviceAllowedIPs is what a device sends to its home: the overlay, the
// routes this node offers and those it accepted from peers.
func (n *Node) deviceAllowedIPs() []netip.Prefix {
	out := []netip.Prefix{netip.MustParsePrefix("fc00::/8")}
	for _, o := range n.routes.Offers() {
		out = append(out, o.Prefix)
	}
	for _, o := range n.routes.Owners() {
		out = append(out, o.Prefix)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out)
}

// deviceEndpoint is where a device reaches this node: given ("host:port",
// checked), else the public address a bridge observed for this node,
// else the host's one best address (see below) with its listen port.
func (n *Node) deviceEndpoint(given string) (string, error) {
	if given != "" {
		ep, err := config.ParseEndpoint(given)
		if err != nil {
			return "", fmt.Errorf("endpoint: %v", err)
		}
		if ep.Name != "" {
			return net.JoinHostPort(ep.Name, strconv.Itoa(int(ep.Port))), nil
		}
		return netip.AddrPortFrom(ep.Addr.Unmap(), ep.Port).String(), nil
	}
	if n.client != nil {
		for _, b := range n.client.Status() {
			if ap, err := netip.ParseAddrPort(b.Observed); err == nil && ap.Addr().IsGlobalUnicast() && !ap.Addr().IsPrivate() {
				return ap.String(), nil
			}
		}
	}
	// The host's addresses by preference: public before private, IPv4
	// (which every phone network reaches) before IPv6; the best class
	// must hold one address, else the caller chooses.
	var classes [4][]netip.Addr
	for _, a := range n.hostAddrs() {
		a = a.Unmap()
		if !a.IsGlobalUnicast() || identity.IsNodeAddress(a) || identity.IsSiteAddress(a) || a == n.ipv4 {
			continue
		}
		c := 0
		if a.IsPrivate() {
			c = 2
		}
		if a.Is6() {
			c++
		}
		if !slices.Contains(classes[c], a) {
			classes[c] = append(classes[c], a)
		}
	}
	port := n.engine.ListenPort()
	var cands []netip.Addr
	for _, c := range classes {
		if len(c) > 0 {
			cands = c
			break
		}
	}
	switch len(cands) {
	case 0:
		return "", errors.New("this node knows no address a device can reach it at: give one with --endpoint HOST:PORT (its public address or DNS name, and listen.udp's port)")
	case 1:
		return netip.AddrPortFrom(cands[0], port).String(), nil
	}
	list := make([]string, len(cands))
	for i, a := range cands {
		list[i] = a.String()
	}
	return "", fmt.Errorf("this node has several addresses (%s): choose the one the device reaches with --endpoint HOST:%d", strings.Join(list, ", "), port)
}
