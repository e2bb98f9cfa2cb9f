package config

import (
	"reflect"
	"slices"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// Diff is what changed from one valid configuration to another, as a live
// reload (SIGHUP, `tomoe reload`) applies it: the sections a running node
// changes in place (static peers, policy rules, routes, services, the
// admin API's identities), and the keys that take effect only when the
// node starts again (Restart).
type Diff struct {
	// Static peers, by public key. PeersChanged holds the new entries of
	// the keys whose endpoint, name or keepalive changed.
	PeersAdded, PeersRemoved, PeersChanged []Peer
	// PolicyAdded and PolicyRemoved are the file's allow and deny rules
	// that are new or gone (a rule whose until changed is both).
	PolicyAdded, PolicyRemoved []policy.Rule
	// Routes: offers by prefix (a changed masquerade is both removed and
	// added), accept rules by identity and prefix.
	OffersAdded, OffersRemoved []RouteOffer
	AcceptAdded, AcceptRemoved []RouteAccept
	// Exposed services by proto/port; ExposeChanged holds the new entries
	// whose target changed.
	ExposeAdded, ExposeRemoved, ExposeChanged []Expose
	// AccessChanged: connect, proxy.socks5, proxy.http or proxy.users
	// changed, so the local access listeners start again.
	// AccessAdded and AccessRemoved count the listeners.
	AccessChanged              bool
	AccessAdded, AccessRemoved int
	// AdminAllowChanged: [[admin.allow]] changed.
	AdminAllowChanged bool
	// L2Changed: [[l2]] changed (segments, members, hub, attach).
	L2Changed bool
	// Restart names the keys (tables, for [bridge], [[bridges]] and
	// [[orgs]]) whose change needs a restart; a reload leaves them as they
	// were.
	Restart []string
}

// Live reports whether the diff has something a reload applies.
func (d *Diff) Live() bool {
	return len(d.PeersAdded)+len(d.PeersRemoved)+len(d.PeersChanged)+len(d.PolicyAdded)+len(d.PolicyRemoved)+
		len(d.OffersAdded)+len(d.OffersRemoved)+len(d.AcceptAdded)+len(d.AcceptRemoved)+
		len(d.ExposeAdded)+len(d.ExposeRemoved)+len(d.ExposeChanged) > 0 || d.AccessChanged || d.AdminAllowChanged || d.L2Changed
}

// Empty reports whether nothing changed at all.
func (d *Diff) Empty() bool { return !d.Live() && len(d.Restart) == 0 }

// Compare returns what changed from old to new, both valid.
func Compare(old, new *Config) Diff {
	var d Diff
	d.Restart = RestartKeys(old, new)
	d.L2Changed = !reflect.DeepEqual(old.L2, new.L2)

	oldPeers := map[identity.PublicKey]Peer{}
	for _, p := range old.Peers {
		oldPeers[p.PublicKey] = p
	}
	newKeys := map[identity.PublicKey]bool{}
	for _, p := range new.Peers {
		newKeys[p.PublicKey] = true
		o, ok := oldPeers[p.PublicKey]
		switch {
		case !ok:
			d.PeersAdded = append(d.PeersAdded, p)
		case !reflect.DeepEqual(o, p):
			d.PeersChanged = append(d.PeersChanged, p)
		}
	}
	for _, p := range old.Peers {
		if !newKeys[p.PublicKey] {
			d.PeersRemoved = append(d.PeersRemoved, p)
		}
	}

	oldRules, newRules := old.PolicyRules(), new.PolicyRules()
	sameRule := func(a, b policy.Rule) bool { return a.Equal(b) && a.Until.Equal(b.Until) }
	for _, r := range newRules {
		if !slices.ContainsFunc(oldRules, func(o policy.Rule) bool { return sameRule(o, r) }) {
			d.PolicyAdded = append(d.PolicyAdded, r)
		}
	}
	for _, r := range oldRules {
		if !slices.ContainsFunc(newRules, func(n policy.Rule) bool { return sameRule(n, r) }) {
			d.PolicyRemoved = append(d.PolicyRemoved, r)
		}
	}

	d.OffersAdded, d.OffersRemoved = added(old.Routes.Offer, new.Routes.Offer, func(a, b RouteOffer) bool { return a == b }),
		added(new.Routes.Offer, old.Routes.Offer, func(a, b RouteOffer) bool { return a == b })
	sameAccept := func(a, b RouteAccept) bool { return a.Prefix == b.Prefix && a.From.Same(b.From) }
	d.AcceptAdded, d.AcceptRemoved = added(old.Routes.Accept, new.Routes.Accept, sameAccept),
		added(new.Routes.Accept, old.Routes.Accept, sameAccept)

	sameService := func(a, b Expose) bool { return a.Proto == b.Proto && a.Port == b.Port }
	for _, e := range new.Expose {
		i := slices.IndexFunc(old.Expose, func(o Expose) bool { return sameService(o, e) })
		switch {
		case i < 0:
			d.ExposeAdded = append(d.ExposeAdded, e)
		case old.Expose[i] != e:
			d.ExposeChanged = append(d.ExposeChanged, e)
		}
	}
	d.ExposeRemoved = added(new.Expose, old.Expose, sameService)

	if !reflect.DeepEqual(accessOf(old), accessOf(new)) {
		d.AccessChanged = true
		ol, nl := accessOf(old).listeners(), accessOf(new).listeners()
		d.AccessAdded = len(added(ol, nl, func(a, b string) bool { return a == b }))
		d.AccessRemoved = len(added(nl, ol, func(a, b string) bool { return a == b }))
	}
	d.AdminAllowChanged = !reflect.DeepEqual(old.Admin.Allow, new.Admin.Allow)
	return d
}

// added returns the entries of to that from lacks.
func added[T any](from, to []T, same func(a, b T) bool) []T {
	var out []T
	for _, t := range to {
		if !slices.ContainsFunc(from, func(f T) bool { return same(f, t) }) {
			out = append(out, t)
		}
	}
	return out
}

// access is what the local access listeners are made from.
type access struct {
	Connect []Connect
	Proxy   Proxy
}

func accessOf(c *Config) access { return access{Connect: c.Connect, Proxy: c.Proxy} }

// listeners names each listener with what it does, so that a listener
// whose remote changed counts as removed and added.
func (a access) listeners() []string {
	var out []string
	for _, c := range a.Connect {
		out = append(out, "connect "+c.Local.String()+" "+c.Remote.String())
	}
	if a.Proxy.SOCKS5.IsSet() {
		out = append(out, "socks5 "+a.Proxy.SOCKS5.String())
	}
	if a.Proxy.HTTP.IsSet() {
		out = append(out, "http "+a.Proxy.HTTP.String())
	}
	return out
}

// RestartKeys names the keys whose change a running node cannot apply:
// its identity and files (key, state), its interface and socket, its log,
// its bridge role and bridges, its organisations, its local users and the
// user it runs as.
func RestartKeys(old, new *Config) []string {
	var keys []string
	check := func(key string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			keys = append(keys, key)
		}
	}
	check("key_file", old.KeyFile, new.KeyFile)
	check("key_passphrase_file", old.KeyPassphraseFile, new.KeyPassphraseFile)
	check("tun.mode", old.TUN.Mode, new.TUN.Mode)
	check("tun.name", old.TUN.Name, new.TUN.Name)
	check("tun.mtu", old.TUN.MTU, new.TUN.MTU)
	check("tun.ipv4", old.TUN.IPv4, new.TUN.IPv4)
	check("tun.ipv4_prefix", old.TUN.IPv4Prefix, new.TUN.IPv4Prefix)
	check("tun.dns", old.TUN.DNS, new.TUN.DNS)
	check("listen.udp", old.Listen.UDP, new.Listen.UDP)
	check("listen.stealth", old.Listen.Stealth, new.Listen.Stealth)
	check("admin.socket", old.Admin.Socket, new.Admin.Socket)
	check("admin.group", old.Admin.Group, new.Admin.Group)
	check("admin.metrics", old.Admin.Metrics, new.Admin.Metrics)
	check("admin.metrics_public", old.Admin.MetricsPublic, new.Admin.MetricsPublic)
	check("admin.web", old.Admin.Web, new.Admin.Web)
	check("policy.state_file", old.Policy.StateFile, new.Policy.StateFile)
	check("log.level", old.Log.Level, new.Log.Level)
	check("log.format", old.Log.Format, new.Log.Format)
	check("bridge", old.Bridge, new.Bridge)
	check("bridges", old.Bridges, new.Bridges)
	check("console.org_key", old.Console.OrgKey, new.Console.OrgKey)
	check("orgs", old.Orgs, new.Orgs)
	check("allowed_local_users", old.AllowedLocalUsers, new.AllowedLocalUsers)
	check("run.user", old.Run, new.Run)
	return keys
}
