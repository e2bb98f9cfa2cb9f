package node

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node/localsvc"
	"github.com/tomoe-net/tomoe/internal/node/peers"
	"github.com/tomoe-net/tomoe/internal/offers"
	"github.com/tomoe-net/tomoe/internal/policy"
	"github.com/tomoe-net/tomoe/internal/services"
)

// Live reload: SIGHUP to `tomoe up` and POST /v1/reload (`tomoe reload`)
// both call Reload, which reads the config file the node started with
// again and applies the difference (config.Compare) to the running node:
//
//   - The whole file is decoded and validated first, and the changes that
//     can be refused (a static peer with this node's own key, offers the
//     node cannot forward) are checked; an invalid file changes nothing.
//   - Then, in this order: static peers that left the file or whose
//     endpoint changed leave the device; offers, accept rules and exposed
//     services that left the file are withdrawn; the policy's config rules (and
//     the rules [[admin.allow]] implies) are replaced in one step, and the
//     sessions of the peers a removed allow rule named, or that the new
//     policy no longer admits at all, are cut as a revocation cuts them;
//     new static peers are added; routes; exposed services (the removed
//     first) and the local access listeners; [[admin.allow]].
//   - Rules and changes from other sources (the admin API's, the
//     organisations', the console's) stay as they are: the API's route
//     and service changes apply over the new file as they did over the
//     old one.
//   - Keys a running node cannot change (config.RestartKeys) are reported,
//     compared with the file the node started with, and not applied.
//
// The key is not read again, nor are key_passphrase_file, console.org_key
// and the orgs' certificates checked (config.LoadReload): a node that
// dropped root may not read them any more.

// errNoConfigPath is Reload's error for a node started without a file.
var errNoConfigPath = errors.New("reload: this node was not started from a config file")

// ReloadError is Reload's error for a file it refused: the node runs on
// with the config it had.
type ReloadError struct{ Err error }

func (e *ReloadError) Error() string {
	return "config not reloaded, the node keeps running with its current config: " + e.Err.Error()
}
func (e *ReloadError) Unwrap() error { return e.Err }

// Reload reads the config file again (Options.ConfigPath) and applies the
// difference. A *ReloadError means nothing changed. Otherwise the result
// says what changed; its Errors list changes that failed (a port taken),
// everything else having been applied.
func (n *Node) Reload(ctx context.Context) (adminapi.ReloadResult, error) {
	n.reloadMu.Lock()
	defer n.reloadMu.Unlock()
	res, err := n.reloadLocked()
	var re *ReloadError
	switch {
	case errors.As(err, &re):
		n.log.Error("config reload refused, the node runs on with its current config", "file", n.opts.ConfigPath, "err", oneLine(re.Err))
		n.events.Publish(Event{Type: adminapi.EventConfigReloaded, Detail: "refused: " + oneLine(re.Err)})
	case err != nil:
		n.log.Error("config reload failed", "file", n.opts.ConfigPath, "err", oneLine(err))
	case res.Unchanged():
		n.log.Info("config reloaded: nothing changed", "file", res.File)
	case len(res.Errors) > 0:
		n.log.Error("config reloaded with errors", "file", res.File, "changes", res.Summary(), "errors", strings.Join(res.Errors, "; "))
		n.events.Publish(Event{Type: adminapi.EventConfigReloaded, Detail: res.Summary() + "; errors: " + strings.Join(res.Errors, "; ")})
	default:
		n.log.Info("config reloaded", "file", res.File, "changes", res.Summary())
		n.events.Publish(Event{Type: adminapi.EventConfigReloaded, Detail: res.Summary()})
	}
	for _, w := range res.Warnings {
		n.log.Warn(w)
	}
	return res, err
}

// oneLine joins a multi-line error (a *config.ValidationError lists one
// problem a line) for a log line.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

func (n *Node) reloadLocked() (adminapi.ReloadResult, error) {
	res := adminapi.ReloadResult{File: n.opts.ConfigPath, NeedsRestart: []string{}, PeersCut: []string{}, Warnings: []string{}, Errors: []string{}}
	if n.opts.ConfigPath == "" {
		return res, &ReloadError{errNoConfigPath}
	}
	if n.closing.Load() {
		return res, &ReloadError{errClosing}
	}
	cfg, err := config.LoadReload(n.opts.ConfigPath)
	if err != nil {
		return res, &ReloadError{err}
	}
	d := config.Compare(n.live, cfg)
	d.Restart = config.RestartKeys(n.cfg, cfg)
	res.NeedsRestart = append(res.NeedsRestart, d.Restart...)
	if err := n.checkReload(cfg, &d); err != nil {
		return res, &ReloadError{err}
	}
	res.Peers = adminapi.ReloadCount{Added: len(d.PeersAdded), Removed: len(d.PeersRemoved), Changed: len(d.PeersChanged)}
	res.Policy = adminapi.ReloadCount{Added: len(d.PolicyAdded), Removed: len(d.PolicyRemoved)}
	res.Routes = adminapi.ReloadCount{Added: len(d.OffersAdded) + len(d.AcceptAdded), Removed: len(d.OffersRemoved) + len(d.AcceptRemoved)}
	res.Expose = adminapi.ReloadCount{Added: len(d.ExposeAdded), Removed: len(d.ExposeRemoved), Changed: len(d.ExposeChanged)}
	res.Access = adminapi.ReloadCount{Added: d.AccessAdded, Removed: d.AccessRemoved}
	if d.AccessChanged && d.AccessAdded+d.AccessRemoved == 0 {
		res.Access.Changed = 1 // proxy.users
	}
	res.Admin = d.AdminAllowChanged
	if !d.Live() {
		return res, nil
	}
	fail := func(what string, err error) {
		if err != nil {
			res.Errors = append(res.Errors, what+": "+oneLine(err))
		}
	}

	// Peers that leave, or move: out of the device first.
	n.reloadPeersOut(&d)
	// Offers, accept rules and services that leave: withdrawn before the
	// policy changes, so that a new rule that admits a peer to "this node
	// and every route it offers" never meets the old offers and services
	// (the node is never more open than under the old file or the new).
	// What stays keeps its old form until the new one is applied below.
	if len(d.OffersRemoved)+len(d.AcceptRemoved) > 0 {
		o, a := routesOf(keptRoutes(n.live.Routes, cfg.Routes))
		fail("routes", n.routes.Reload(o, a))
	}
	if len(d.ExposeRemoved) > 0 {
		fail("expose", n.svc.ReloadExpose(exposeOf(keptExpose(n.live.Expose, cfg.Expose))))
	}
	n.reloadStep("withdrawn")
	// The policy in one step, then the cuts.
	if len(d.PolicyAdded)+len(d.PolicyRemoved) > 0 || d.AdminAllowChanged {
		warnings, cut := n.reloadPolicy(cfg, &d)
		res.Warnings = append(res.Warnings, warnings...)
		for _, k := range cut {
			res.PeersCut = append(res.PeersCut, k.String())
		}
	}
	n.reloadStep("policy")
	fail("peers", n.reloadPeersIn(cfg, &d))
	if len(d.OffersAdded)+len(d.OffersRemoved)+len(d.AcceptAdded)+len(d.AcceptRemoved) > 0 {
		o, a := routesOf(cfg.Routes)
		fail("routes", n.routes.Reload(o, a))
	}
	if len(d.ExposeAdded)+len(d.ExposeRemoved)+len(d.ExposeChanged) > 0 {
		fail("expose", n.svc.ReloadExpose(exposeOf(cfg.Expose)))
	}
	if d.AccessChanged {
		fail("access", n.svc.ReloadAccess(localsvc.Config{Log: n.log, Connect: cfg.Connect,
			SOCKS5: cfg.Proxy.SOCKS5.String(), HTTP: cfg.Proxy.HTTP.String(), Users: cfg.Proxy.Users}))
	}
	if d.L2Changed {
		c, err := n.reloadL2(cfg)
		res.L2 = c
		fail("l2", err)
	}
	if d.AdminAllowChanged {
		// Removed identities lost the rules to the admin port with the
		// policy above; new ones need the listener when there was none.
		fail("admin.allow", n.serveOverlayAdmin())
	}

	// What the next reload compares with: the live sections as applied,
	// the others as they were (they need a restart).
	live := *n.live
	live.Peers, live.Policy.Allow, live.Policy.Deny, live.Routes = cfg.Peers, cfg.Policy.Allow, cfg.Policy.Deny, cfg.Routes
	live.Expose, live.Connect, live.Proxy, live.Admin.Allow = cfg.Expose, cfg.Connect, cfg.Proxy, cfg.Admin.Allow
	live.L2 = cfg.L2
	n.live = &live
	return res, nil
}

// checkReload refuses what the file's validation cannot know: this
// node's own key as a static peer or a peer's device, a device this node
// hosts as a peer or another peer's device, offers this node cannot make.
func (n *Node) checkReload(cfg *config.Config, d *config.Diff) error {
	hosted := map[identity.PublicKey]string{}
	for _, d := range n.devices.List() {
		hosted[d.PublicKey] = d.Name
	}
	for i, p := range cfg.Peers {
		if p.PublicKey == n.pub {
			return fmt.Errorf("%s: peers[%d]: that is this node's own key", n.opts.ConfigPath, i)
		}
		if name, ok := hosted[p.PublicKey]; ok {
			return fmt.Errorf("%s: peers[%d]: that key is device %q, which this node hosts (tomoe device remove %s first)", n.opts.ConfigPath, i, name, name)
		}
		if _, err := n.hostedBy(p); err != nil {
			return fmt.Errorf("%s: peers[%d].%w", n.opts.ConfigPath, i, err)
		}
		for j, d := range p.Devices {
			if name, ok := hosted[d]; ok {
				return fmt.Errorf("%s: peers[%d].devices[%d]: that is device %q, which this node hosts itself", n.opts.ConfigPath, i, j, name)
			}
		}
	}
	if len(d.OffersAdded)+len(d.OffersRemoved)+len(d.AcceptAdded)+len(d.AcceptRemoved) > 0 {
		o, a := routesOf(cfg.Routes)
		if err := n.routes.CheckReload(o, a); err != nil {
			return fmt.Errorf("%s: %w", n.opts.ConfigPath, err)
		}
	}
	return nil
}

func routesOf(r config.Routes) ([]config.Offer, []offers.Rule) {
	var o []config.Offer
	for _, r := range r.Offer {
		o = append(o, config.Offer{Prefix: r.Prefix.Prefix, Masquerade: r.Masquerade})
	}
	var a []offers.Rule
	for _, r := range r.Accept {
		a = append(a, offers.Rule{From: r.From, Prefix: r.Prefix.Prefix})
	}
	return o, a
}

func exposeOf(list []config.Expose) []services.Service {
	var out []services.Service
	for _, e := range list {
		out = append(out, services.Service{Proto: e.Proto.String(), Port: uint16(e.Port), Target: e.Target.String()})
	}
	return out
}

// keptRoutes are the old offers whose prefix the new file still offers
// (as they were) and the old accept rules it still has: old ∩ new.
func keptRoutes(old, new config.Routes) config.Routes {
	var r config.Routes
	for _, o := range old.Offer {
		if slices.ContainsFunc(new.Offer, func(n config.RouteOffer) bool { return n.Prefix == o.Prefix }) {
			r.Offer = append(r.Offer, o)
		}
	}
	for _, a := range old.Accept {
		if slices.ContainsFunc(new.Accept, func(n config.RouteAccept) bool { return n.Prefix == a.Prefix && n.From.Same(a.From) }) {
			r.Accept = append(r.Accept, a)
		}
	}
	return r
}

// keptExpose are the old services whose proto and port the new file
// still exposes, as they were.
func keptExpose(old, new []config.Expose) []config.Expose {
	var out []config.Expose
	for _, o := range old {
		if slices.ContainsFunc(new, func(n config.Expose) bool { return n.Proto == o.Proto && n.Port == o.Port }) {
			out = append(out, o)
		}
	}
	return out
}

// reloadStep calls the test hook, if any, between the steps of a reload.
func (n *Node) reloadStep(step string) {
	if h := n.reloadHook; h != nil {
		h(step)
	}
}

// reloadPeersOut takes the static peers the file no longer lists out of
// the device and the table, and those whose endpoint changed out of the
// device (reloadPeersIn records them anew); a removed peer the policy
// still admits may come back by its own handshake, as any other.
func (n *Node) reloadPeersOut(d *config.Diff) {
	if len(d.PeersRemoved)+len(d.PeersChanged) == 0 {
		return
	}
	n.routes.Lock()
	defer n.routes.Unlock()
	for _, cp := range d.PeersRemoved {
		if p := n.peers.Get(cp.PublicKey); p != nil && p.Static {
			n.flushFlowsLocked(p)
			n.forgetLocked(p, "removed from the config")
		}
	}
	for _, cp := range d.PeersChanged {
		p := n.peers.Get(cp.PublicKey)
		i := slices.IndexFunc(n.live.Peers, func(o config.Peer) bool { return o.PublicKey == cp.PublicKey })
		switch {
		case p == nil || !p.Static || i < 0:
		case n.live.Peers[i].Endpoint != cp.Endpoint:
			n.forgetLocked(p, "endpoint changed in the config")
		}
	}
	n.routes.RecomputeLocked()
}

// reloadPeersIn adds the new static peers (replacing a record the peer
// had as a dynamic one: its session restarts), records anew those whose
// endpoint changed, and updates names and keepalives in place.
func (n *Node) reloadPeersIn(cfg *config.Config, d *config.Diff) error {
	n.setStaticKeys(cfg.Peers)
	n.dns.setStatic(cfg.Peers)
	defer n.knownKeysChanged()
	if len(d.PeersAdded)+len(d.PeersChanged) == 0 {
		return nil
	}
	n.routes.Lock()
	defer n.routes.Unlock()
	var errs []error
	for _, cp := range slices.Concat(d.PeersAdded, d.PeersChanged) {
		p := n.peers.Get(cp.PublicKey)
		if p != nil && p.Static {
			// Same endpoint (reloadPeersOut forgot the others): name and
			// keepalive in place.
			p.Name = cp.Name
			update := false
			if k := cp.Keepalive(); k != p.Keepalive {
				p.Keepalive = k
				update = true
			}
			if devs, _ := n.hostedBy(cp); !slices.Equal(devs, p.Devices) {
				n.forgetDeviceSessionsLocked(cp)
				n.setDevicesLocked(p, devs)
				update = true
			}
			if update && p.Active {
				if err := n.activateLocked(p); err != nil {
					errs = append(errs, fmt.Errorf("peer %s: %w", cp.PublicKey.ShortString(), err))
				}
			}
			continue
		}
		if p != nil {
			n.flushFlowsLocked(p)
			n.forgetLocked(p, "now a static peer of the config")
		}
		n.forgetDeviceSessionsLocked(cp)
		n.insertLocked(n.staticPeerLocked(cp))
	}
	n.routes.RecomputeLocked()
	return errors.Join(errs...)
}

// forgetDeviceSessionsLocked ends the sessions of their own that static
// peer cp's devices had (as dynamic peers): a device is reached through
// its home only. Call it before the devices are given to cp's record, so
// that forgetting the device's record does not take its address out of
// the wrapper's routes afterwards.
func (n *Node) forgetDeviceSessionsLocked(cp config.Peer) {
	for _, d := range cp.Devices {
		if dp := n.peers.Get(d); dp != nil && !dp.Static {
			n.flushFlowsLocked(dp)
			n.forgetLocked(dp, "now a device hosted by "+cp.PublicKey.ShortString())
		}
	}
}

// setDevicesLocked changes the devices static peer p hosts, in the table
// and the wrapper's routes (the caller updates its AllowedIPs in the
// device); flows with a device it no longer hosts are forgotten.
func (n *Node) setDevicesLocked(p *peers.Peer, devs []netip.Addr) {
	var gone []netip.Addr
	for _, d := range p.Devices {
		if !slices.Contains(devs, d) {
			gone = append(gone, d)
			n.wrapper.SetPeer(d, false)
		}
	}
	n.peers.SetDevices(p, devs)
	if p.Active {
		for _, d := range devs {
			n.wrapper.SetPeer(d, true)
		}
	}
	if len(gone) > 0 {
		n.filter.Conntrack().Flush(func(a netip.Addr) bool { return slices.Contains(gone, a) })
	}
}

// staticPeerLocked makes the (inactive) record of a static peer. The
// peer table's lock is held.
func (n *Node) staticPeerLocked(cp config.Peer) *peers.Peer {
	k := cp.PublicKey
	ep := cp.Endpoint
	p := &peers.Peer{Key: k, Addr: k.Address(), Name: cp.Name, Static: true, Host: ep.Name, Port: ep.Port, Keepalive: cp.Keepalive(), Site: true}
	if ep.Addr.IsValid() {
		p.Endpoint = netip.AddrPortFrom(ep.Addr.Unmap(), ep.Port)
	}
	p.Devices, _ = n.hostedBy(cp) // refused before: addStatic, checkReload
	if owner := n.peers.BySite(k.SitePrefix()); owner != nil {
		n.log.Warn("two static peers have the same site prefix; only the first gets it", "peer", k.ShortString(), "other", owner.Key.ShortString())
		p.Site = false
	}
	return p
}

// reloadPolicy replaces the config's rules (and [[admin.allow]]'s) in one
// step, then cuts, as Revoke does, the sessions of the peers a removed
// allow rule named by key or address (even when another rule still admits
// them: their flows are judged afresh; a rule whose until alone changed is
// not removed) and of those the policy admitted and admits no more (a
// removed "*", group: or org: rule).
func (n *Node) reloadPolicy(cfg *config.Config, d *config.Diff) (warnings []string, cut []identity.PublicKey) {
	before := n.store.Matcher()
	allow := cfg.Admin.Allow
	n.adminAllow.Store(&allow)
	warnings = n.store.SetConfig(cfg.PolicyRules(), cfg.AdminRules(adminapi.AdminPort))
	after := n.store.Matcher() // the filter has it already (Store.Publish)
	// A rule whose until alone changed stays: it cuts nothing.
	kept := cfg.PolicyRules()
	named := func(a netip.Addr) bool {
		return slices.ContainsFunc(d.PolicyRemoved, func(r policy.Rule) bool {
			return !r.Deny && !r.From.Any && r.From.Covers(a) && !slices.ContainsFunc(kept, r.Equal)
		})
	}
	lost := func(a netip.Addr) bool { return named(a) || (before.AllowsAny(a) && !after.AllowsAny(a)) }
	n.routes.Lock()
	for p := range n.peers.All() {
		if !lost(p.Addr) {
			n.flushDeviceFlowsLocked(p, lost)
			continue
		}
		n.flushFlowsLocked(p)
		if p.Active {
			cut = append(cut, p.Key)
		}
		if p.Static {
			n.deactivateLocked(p, "config reloaded: its rules changed")
		} else {
			n.forgetLocked(p, "config reloaded: its rules changed")
		}
	}
	n.routes.RecomputeLocked() // "*" accept rules follow the policy
	n.routes.Unlock()
	n.knownKeysChanged()
	for _, r := range d.PolicyAdded {
		n.log.Info("policy: config rule added", "rule", r.String())
	}
	for _, r := range d.PolicyRemoved {
		n.log.Info("policy: config rule removed", "rule", r.String())
	}
	return warnings, cut
}

// ReloadArea is POST /v1/reload (on the admin socket only).
type ReloadArea struct{ *Node }

// RegisterAPI implements adminapi.Area.
func (a ReloadArea) RegisterAPI(m *adminapi.Mux) {
	adminapi.Post(m, "/v1/reload", func(ctx context.Context, _ adminapi.ReloadRequest) (any, error) {
		res, err := a.Reload(ctx)
		var re *ReloadError
		if errors.As(err, &re) {
			return nil, &adminapi.RequestError{Code: http.StatusUnprocessableEntity, Err: re.Err}
		}
		return res, err
	})
}
