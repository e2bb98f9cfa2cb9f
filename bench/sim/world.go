package main

// This file builds the simulated internet and the nodes' configs: bridges
// on the internet, each node on a site of its own behind a NAT (or on the
// internet itself), random allow rules.

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/testnet/vnet"
)

// natKinds are the kinds of site a node may sit on, as -nat names them.
var natKinds = []string{"public", "cone", "eim", "sym"}

// natConfig is the NAT in front of a site of kind k ("public": none).
func natConfig(k string) (vnet.NATConfig, bool) {
	switch k {
	case "cone": // full cone: anyone reaches a mapping once it exists
		return vnet.NATConfig{Filtering: vnet.EndpointIndependentFiltering}, true
	case "eim": // Linux masquerade behind a stateful firewall: port-restricted cone
		return vnet.NATConfig{}, true
	case "sym": // a new random port for every remote
		return vnet.NATConfig{Mapping: vnet.AddressAndPortDependentMapping, Ports: vnet.RandomPorts}, true
	}
	return vnet.NATConfig{}, false
}

// natMix is -nat: weights of the site kinds.
type natMix map[string]int

func parseNATMix(s string) (natMix, error) {
	m := natMix{}
	total := 0
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		w, err := strconv.Atoi(v)
		if !ok || err != nil || w < 0 || !slices.Contains(natKinds, k) {
			return nil, fmt.Errorf("-nat %q: want KIND=WEIGHT,... with kinds %s", s, strings.Join(natKinds, ", "))
		}
		m[k] += w
		total += w
	}
	if total == 0 {
		return nil, fmt.Errorf("-nat %q: the weights add up to 0", s)
	}
	return m, nil
}

// pick draws a kind by weight.
func (m natMix) pick(rng *rand.Rand) string {
	total := 0
	for _, k := range natKinds {
		total += m[k]
	}
	x := rng.IntN(total)
	for _, k := range natKinds {
		if x < m[k] {
			return k
		}
		x -= m[k]
	}
	return natKinds[len(natKinds)-1]
}

func (m natMix) String() string {
	var parts []string
	for _, k := range natKinds {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
		}
	}
	return strings.Join(parts, ",")
}

// member is one simulated node, bridge or not, before and after it runs.
type member struct {
	name    string
	dir     string
	key     identity.PrivateKey
	host    *vnet.Host
	kind    string // site kind; "bridge" for bridges
	bridges []int  // indexes of the bridges it joins
	allows  []int  // indexes of the nodes its policy lets in (udp/echoPort)
}

// internetPrefix holds the bridges' and the public sites' addresses.
var internetPrefix = netip.MustParsePrefix("127.64.0.0/10")

// bridgeBatch is the bridges' UDP batch size.
const bridgeBatch = 128

// port is every node's WireGuard and bridge port.
const port = 4610

// echoPort is where every node answers datagrams on its overlay address.
const echoPort = 7

// plan is the world and everything in it, before any node runs.
type plan struct {
	world   *vnet.World
	bridges []*member
	nodes   []*member
	pairs   []pair // (client, server): server's policy allows client
	org     *orgPlan
}

// orgPlan is the organisation of the crl scenario: every node is a
// member of "acme" with a certificate of its own, and every node's
// policy lets any member in (udp to its echo port).
type orgPlan struct {
	signer  *org.Signer
	certs   []*org.Cert // by node index
	revoked int         // the node whose certificate the list revokes
	peers   []int       // nodes with a session from the revoked one (pairs revoked -> peer)
}

// orgName is the crl scenario's organisation.
const orgName = "acme"

// pair is an allowed pair: nodes[server]'s policy lets nodes[client] in.
type pair struct{ client, server int }

// buildPlan creates the world, the hosts and the key files, and draws the
// policies: node i joins perNode bridges (i mod B onwards), and allows
// o.pairs other nodes, drawn among those that share a bridge with it (no
// bridge federation yet: nodes meet only on a bridge they both joined).
func buildPlan(o options, dir string) (*plan, error) {
	rng := rand.New(rand.NewPCG(o.seed, 0x73696d))
	// The world's batch is the bridges': 128, as conn.StdNetBind's on
	// Linux. Nodes see a smaller one (smallBatch).
	w := vnet.New(vnet.Config{Seed: o.seed, BindBatchSize: bridgeBatch})
	// The internet is in 127.0.0.0/8: the bridge client falls back to TCP
	// through the kernel's own dialer when UDP gets no answer (node.Options'
	// Transport does not reach it yet), and such a dial must find nothing
	// but this machine's loopback.
	internet, err := w.NewNetwork("internet", internetPrefix)
	if err != nil {
		return nil, err
	}
	p := &plan{world: w}
	newMember := func(name, kind string) (*member, error) {
		m := &member{name: name, kind: kind, dir: filepath.Join(dir, name)}
		if err := os.MkdirAll(m.dir, 0o700); err != nil {
			return nil, err
		}
		if m.key, err = identity.GeneratePrivateKey(); err != nil {
			return nil, err
		}
		return m, os.WriteFile(filepath.Join(m.dir, "node.key"), []byte(m.key.Base64()+"\n"), 0o600)
	}
	for b := range o.bridges {
		m, err := newMember(fmt.Sprintf("bridge%d", b), "bridge")
		if err != nil {
			return nil, err
		}
		if m.host, err = internet.AddHost(m.name); err != nil {
			return nil, err
		}
		p.bridges = append(p.bridges, m)
	}
	perNode := min(o.perNode, o.bridges)
	for i := range o.nodes {
		m, err := newMember(fmt.Sprintf("n%d", i), o.mix.pick(rng))
		if err != nil {
			return nil, err
		}
		if err := addSite(w, internet, m, i, rng, o.delay, o.loss); err != nil {
			return nil, err
		}
		for j := range perNode {
			m.bridges = append(m.bridges, (i+j)%o.bridges)
		}
		p.nodes = append(p.nodes, m)
	}
	// Policies: each node allows o.pairs others that share a bridge with it.
	byBridge := make([][]int, o.bridges)
	for i, m := range p.nodes {
		for _, b := range m.bridges {
			byBridge[b] = append(byBridge[b], i)
		}
	}
	if o.scenario == scenarioCRL {
		if err := p.buildOrg(o, dir, rng); err != nil {
			return nil, err
		}
	}
	for i, m := range p.nodes {
		seen := map[int]bool{i: true}
		for tries := 0; len(m.allows) < o.pairs && tries < 20*o.pairs; tries++ {
			cands := byBridge[m.bridges[rng.IntN(len(m.bridges))]]
			c := cands[rng.IntN(len(cands))]
			if seen[c] {
				continue
			}
			seen[c] = true
			m.allows = append(m.allows, c)
			p.pairs = append(p.pairs, pair{client: c, server: i})
		}
	}
	if p.org != nil {
		// The revoked node has sessions with crl-peers others (it is the
		// client: after the cut, its datagrams must go unanswered).
		have := map[pair]bool{}
		for _, pr := range p.pairs {
			have[pr] = true
		}
		for _, x := range p.org.peers {
			if pr := (pair{client: p.org.revoked, server: x}); !have[pr] {
				have[pr] = true
				p.pairs = append(p.pairs, pr)
			}
		}
	}
	return p, nil
}

// buildOrg makes the organisation (its key in dir), signs every node's
// certificate into its directory, and draws the node to revoke and the
// nodes it has sessions with.
func (p *plan) buildOrg(o options, dir string, rng *rand.Rand) error {
	s, err := org.Init(orgName, filepath.Join(dir, orgName+".key"))
	if err != nil {
		return err
	}
	op := &orgPlan{signer: s, revoked: rng.IntN(len(p.nodes))}
	now := time.Now()
	for _, m := range p.nodes {
		c, err := s.SignCert(org.CertRequest{Node: m.key.Public(), Name: m.name + "." + orgName, Groups: []string{"sim"}, TTL: 24 * time.Hour}, now)
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		if err := os.WriteFile(filepath.Join(m.dir, orgName+".cert"), []byte(c.Text()+"\n"), 0o644); err != nil {
			return err
		}
		op.certs = append(op.certs, c)
	}
	// Peers of the revoked node: among those sharing a bridge with it.
	byBridge := map[int]bool{}
	for _, b := range p.nodes[op.revoked].bridges {
		byBridge[b] = true
	}
	var cands []int
	for i, m := range p.nodes {
		if i == op.revoked {
			continue
		}
		for _, b := range m.bridges {
			if byBridge[b] {
				cands = append(cands, i)
				break
			}
		}
	}
	rng.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	op.peers = cands[:min(o.crlPeers, len(cands))]
	slices.Sort(op.peers)
	p.org = op
	return nil
}

// addSite puts m on a site of its kind: on the internet itself, or alone
// on a LAN behind a NAT, its link delayed by up to delay and losing a
// share loss of the datagrams.
func addSite(w *vnet.World, internet *vnet.Network, m *member, i int, rng *rand.Rand, delay time.Duration, loss float64) error {
	var err error
	cfg, natted := natConfig(m.kind)
	if !natted {
		m.host, err = internet.AddHost(m.name)
	} else {
		var lan *vnet.Network
		lan, err = w.NewNetwork(m.name+"-lan", netip.MustParsePrefix("10.0.0.0/24"))
		if err != nil {
			return err
		}
		if _, err = w.NewNAT(m.name+"-nat", lan, internet, cfg); err != nil {
			return err
		}
		m.host, err = lan.AddHost(m.name)
	}
	if err != nil {
		return err
	}
	if delay > 0 || loss > 0 {
		lc := vnet.LinkConfig{Loss: loss}
		if delay > 0 {
			lc.Delay = time.Duration(rng.Int64N(int64(delay)) + 1)
		}
		m.host.Link().Set(lc)
	}
	return nil
}

// config is m's node config: userspace mode, its bridges (or the bridge
// role, allowing the nodes that join it), its allow rules.
func (p *plan) config(m *member) (*config.Config, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "key_file = \"node.key\"\n[tun]\nmode = \"userspace\"\n[listen]\nudp = \"0.0.0.0:%d\"\n[admin]\nsocket = \"admin.sock\"\n", port)
	if m.kind == "bridge" {
		b.WriteString("[bridge]\nenable = true\n")
		for _, n := range p.nodes {
			if slices.Contains(n.bridges, slices.Index(p.bridges, m)) {
				fmt.Fprintf(&b, "[[bridge.allow]]\npublic_key = %q\n", n.key.Public())
			}
		}
	}
	for _, bi := range m.bridges {
		br := p.bridges[bi]
		fmt.Fprintf(&b, "[[bridges]]\nendpoint = \"%s:%d\"\npublic_key = %q\n", br.host.Addr(), port, br.key.Public())
	}
	switch {
	case p.org != nil && m.kind != "bridge":
		// Any member may reach the echo port: who may is the certificate's
		// business, so a revoked member is refused.
		fmt.Fprintf(&b, "[[orgs]]\nname = %q\npublic_key = %q\ncert = %q\n", orgName, p.org.signer.Public(), orgName+".cert")
		fmt.Fprintf(&b, "[[policy.allow]]\nfrom = \"org:%s\"\nproto = \"udp\"\nports = \"%d\"\n", orgName, echoPort)
	default:
		for _, c := range m.allows {
			fmt.Fprintf(&b, "[[policy.allow]]\nfrom = %q\nproto = \"udp\"\nports = \"%d\"\n", p.nodes[c].key.Public(), echoPort)
		}
	}
	return config.Parse([]byte(b.String()), m.name+".toml", m.dir)
}
