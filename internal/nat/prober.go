package nat

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/clock"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/ratelimit"
)

// Paths is what the prober needs of the node's Bind (transport.Bind): to
// send its probes and answers over the node's UDP socket, to learn which
// peers have a relay path whose direct path is worth probing, and to
// record the proof that a peer answered from an address, which moves that
// peer's direct path there. SendFrames must not keep the frames after it
// returns.
type Paths interface {
	SendFrames(frames [][]byte, dst netip.AddrPort) error
	RelayedPeers() map[identity.PublicKey]netip.AddrPort
	DirectWorks(key identity.PublicKey, addr netip.AddrPort)
}

// TTLPaths is what a Paths may also do (transport.Bind does): send frames
// with an IP TTL (IPv6: hop limit) of their own, leaving every other
// send's as it is. A prober whose Paths cannot sends no openers.
type TTLPaths interface {
	SendFramesTTL(frames [][]byte, dst netip.AddrPort, ttl int) error
}

// Sealer seals m to the key to, with shared if it is not nil (the key the
// frame being answered opened with), else with a cached or computed one:
// keycache.Cache.Seal.
type Sealer interface {
	Seal(to identity.PublicKey, shared *wire.SharedKey, m wire.Message) ([]byte, error)
}

// Counters are the owner's counters the prober adds to.
type Counters struct {
	Sent     *atomic.Uint64 // probes sent
	Limited  *atomic.Uint64 // probes not sent: over the rate per peer or in all
	Acks     *atomic.Uint64 // answers to our probes (and challenges) taken
	Answered *atomic.Uint64 // peers' probes answered
	Refused  *atomic.Uint64 // peers' probes not answered: stale, answered before, or over the rate
	Dropped  *atomic.Uint64 // messages not expected: answers to nothing we sent, other kinds
	Openers  *atomic.Uint64 // openers sent: probes with a TTL that ends past this side's NAT
}

// Config is what a Prober works with.
type Config struct {
	Paths      Paths
	Sealer     Sealer
	Counters   Counters    // nil fields: counters of its own
	Broadcasts *Broadcasts // this host's broadcast addresses, never probed; nil: NewBroadcasts()
	// Clock decides the candidates' lifetime, the answer window of
	// probes and the freshness of peers' probes; nil: real time. The
	// owner's rounds (Round) bring their own time.
	Clock clock.Clock
}

// Prober keeps, for the peers bridges introduced or lookups found, where
// they may be reachable directly (candidates), probes those places on its
// owner's rounds, answers peers' probes, and tells the Bind which direct
// paths are proven. It is safe for concurrent use.
type Prober struct {
	paths Paths
	ttl   TTLPaths // nil: no openers
	seal  Sealer
	stats Counters
	bcast *Broadcasts // never probed
	clock clock.Clock

	mu         sync.Mutex // guards candidates, probes, seen, bursting
	candidates map[identity.PublicKey]*candidateSet
	bursting   bool // some candidate wants fast rounds (Bursting)
	probes     map[uint64]sentProbe
	seen       map[identity.PublicKey]*probeMemory // peers' probes answered

	answers     *ratelimit.Keyed // probe answers per peer (by its address)
	allAnswers  ratelimit.Bucket // probe answers in all
	probeBudget *ratelimit.Keyed // probes sent per peer (by its address)
	allProbes   ratelimit.Bucket // probes sent in all
}

// NewProber returns a prober with no candidates.
func NewProber(cfg Config) *Prober {
	p := &Prober{
		paths:       cfg.Paths,
		seal:        cfg.Sealer,
		stats:       cfg.Counters,
		bcast:       cfg.Broadcasts,
		clock:       clock.Or(cfg.Clock),
		candidates:  make(map[identity.PublicKey]*candidateSet),
		probes:      make(map[uint64]sentProbe),
		seen:        make(map[identity.PublicKey]*probeMemory),
		answers:     ratelimit.NewKeyed(peerAnswerRate, peerAnswerBurst, maxProbingPeers),
		probeBudget: ratelimit.NewKeyed(peerProbeRate, peerProbeBurst, maxProbingPeers),
	}
	p.ttl, _ = cfg.Paths.(TTLPaths)
	for _, c := range []**atomic.Uint64{&p.stats.Sent, &p.stats.Limited, &p.stats.Acks, &p.stats.Answered, &p.stats.Refused, &p.stats.Dropped, &p.stats.Openers} {
		if *c == nil {
			*c = new(atomic.Uint64)
		}
	}
	if p.bcast == nil {
		p.bcast = NewBroadcasts()
	}
	now := p.clock.Now().UnixNano()
	p.allAnswers.Init(now, allAnswerBurst)
	p.allProbes.Init(now, allProbeBurst)
	return p
}

// How a peer's candidates are probed: fast right after an introduction
// (probeBurstCount rounds), then on the owner's slow rounds, until
// candidateLifetime after the last introduction.
const (
	probeBurstCount   = 8
	candidateLifetime = time.Minute
	// maxCandidates bounds a peer's candidates: the newest are kept.
	maxCandidates = 8
)

// Openers: the first packets after an introduction to a peer that may be
// behind a NAT (OpenerNeeded) are probes with openerTTL, sent every
// openerInterval for openerLead before any probe that could reach it.
//
// Why: a router that accepts unsolicited input (no input firewall, as on
// many home Linux routers) makes a conntrack entry for a probe that
// reaches it before its own side has sent to the prober, and while that
// entry lives (30 s, renewed by each such probe) masquerade gives the
// flow from its side to the prober another public port: the hole is in
// the wrong place, and with a filtering NAT on the prober's side neither
// ever hears the other. Two such "easy" NATs could only go direct if
// both sides' first probes crossed their own routers before the other's
// arrived. An opener makes this side's NAT map the flow and dies at the
// next router, short of the peer's; the bridge introduces both sides at
// once, so when the probes start, openerLead later, both mappings exist
// and no probe is unsolicited. TTL 2 passes a NAT that is the host's
// first hop (the home router; TTL 1 would die there unmapped) and dies
// at the first router beyond it; a peer's router within two hops is not
// shielded (nor harmed: it sees what it would have seen). openerLead
// covers the skew between the two sides' introductions (the bridge's
// paths to each, and each side's round timer, probeBurst at most).
const (
	openerTTL      = 2
	openerLead     = time.Second
	openerInterval = 400 * time.Millisecond
)

// OpenerNeeded reports whether probes to a may cross a NAT on the way,
// and so are preceded by openers: loopback and private (RFC 1918, ULA)
// addresses are reached on this host or its own networks, with no NAT
// between; other addresses (shared address space 100.64/10 included) may
// be a NAT's public side.
func OpenerNeeded(a netip.Addr) bool {
	a = a.Unmap()
	return !a.IsLoopback() && !a.IsPrivate()
}

// candidateSet is where a peer may be reachable directly, as bridges
// reported it; Round probes it until it expires.
type candidateSet struct {
	addrs   []netip.AddrPort
	expires time.Time
	burst   int // probes left in the fast burst
	// Until openUntil its addresses get openers (at nextOpener), no
	// probes; the burst starts after (candidates that need openers
	// only).
	openUntil, nextOpener time.Time
	// The retry period (the bridge's time / retryPeriod) of the last
	// attempt; whether a probe of it was answered; whether it ended
	// unanswered (then its addresses that need openers are left alone
	// until the next attempt).
	period         int64
	proved, failed bool
}

// Retrying after a failed attempt. A probe that reached a router without
// an input firewall before its side had sent (an introduction that one
// side lost, or got more than openerLead late) leaves a stray conntrack
// entry there for 30 s (nf_conntrack_udp_timeout) after the last such
// probe; the other side's flow, if it started while the stray lived, has
// the wrong port for 30 s after its own last packet. The pair can only
// go direct after both sides have been silent towards each other that
// long and then start together. So after an attempt proves nothing the
// prober sends nothing more to the addresses that need openers, slow
// rounds included, until an introduction whose bridge time falls within
// retryWindow after a multiple of retryPeriod, once a period. Both sides
// pick the same introductions without talking to each other: one lookup
// makes the bridge answer one side and introduce the other at once, both
// stamped with its clock. Two attempts are then at least retryPeriod -
// retryWindow - (openerLead and the burst) apart, longer than the
// strays live. Relayed peers are looked up every 20 s (the client's
// refresh), so a window seldom passes without an introduction. An
// introduction with a new endpoint (the peer moved) starts an attempt
// at once.
const (
	retryPeriod = time.Minute
	retryWindow = 20 * time.Second
)

// sentProbe is a probe, or a challenge in a probe's answer, awaiting its
// answer.
type sentProbe struct {
	key       identity.PublicKey
	to        netip.AddrPort
	at        time.Time
	challenge bool
}

const (
	probeAnswerWindow = 5 * time.Second
	maxSentProbes     = 8192
)

// ClockWindow is how far the time of a peer's probe, or of a bridge's
// introduction, may be from this node's clock. Nodes are within
// wire.MaxClockSkew of their bridge's clock (it refuses them otherwise),
// so within twice that of each other; a minute more for the way.
const ClockWindow = 2*wire.MaxClockSkew + time.Minute

// What a probe from a peer may cost this node: one answer, and only for a
// probe that is fresh and not answered before. A probe is a sealed frame
// that anyone on the path can copy and send again from any address; the
// answer goes to where the probe came from.
const (
	// probeReorder: a probe up to this much older than the newest one
	// answered from that peer is still answered, once. A peer probes
	// several of our endpoints at once, and the paths reorder them.
	probeReorder = time.Second
	// recentProbes probes of one peer within probeReorder are remembered
	// exactly; more in that span are not answered.
	recentProbes = 16
	// maxProbingPeers bounds the peers whose probes are remembered; a
	// peer's memory goes once its newest probe is older than
	// ClockWindow (the window refuses its probes by then).
	maxProbingPeers = 4096

	// Answers per peer (a member that forges probes with other source
	// addresses can draw at most these) and in all.
	peerAnswerRate, peerAnswerBurst = 16, 32
	allAnswerRate, allAnswerBurst   = 256, 512
)

// Probes this node sends, per peer and in all. A peer's (or a lying
// bridge's) endpoints, whatever they are, draw at most peerProbeRate
// packets a second from this node: enough for the fast rounds
// (probeBurstCount of them) after an introduction to two or three
// endpoints, and for a round a second to the most (maxCandidates and the
// direct address) after them. The overall rate spreads a node with
// hundreds of relayed peers over a few seconds.
const (
	peerProbeRate, peerProbeBurst = maxCandidates + 2, 24
	allProbeRate, allProbeBurst   = 256, 512
)

// probeMemory is what a node remembers of one peer's probes.
type probeMemory struct {
	newest int64               // the newest probe time answered
	recent [recentProbes]int64 // probe times answered, a ring
	next   int                 // the ring's oldest slot
}

// answerableLocked reports whether a probe stamped t from key at now is
// fresh and not answered before, and if so notes it as answered.
func (p *Prober) answerableLocked(key identity.PublicKey, t int64, now time.Time) bool {
	floor := now.Add(-ClockWindow).UnixNano()
	if t < floor || t > now.Add(ClockWindow).UnixNano() {
		return false
	}
	pm := p.seen[key]
	if pm == nil {
		if len(p.seen) >= maxProbingPeers {
			for k, m := range p.seen {
				if m.newest < floor {
					delete(p.seen, k)
				}
			}
			if len(p.seen) >= maxProbingPeers {
				return false // forgetting anyone now would let their probes be answered again
			}
		}
		pm = &probeMemory{}
		p.seen[key] = pm
	}
	newest := max(pm.newest, t)
	// Older than the reorder span, answered already, or the ring is full
	// of probes within the span (overwriting one would let it be
	// answered again).
	if t <= pm.newest-int64(probeReorder) || slices.Contains(pm.recent[:], t) || pm.recent[pm.next] > newest-int64(probeReorder) {
		return false
	}
	pm.recent[pm.next] = t
	pm.next = (pm.next + 1) % len(pm.recent)
	pm.newest = newest
	return true
}

// Handle acts on a probe or probe answer from the node from (proven by
// its key: the frame opened with shared, which seals the answers), which
// came from src.
//
// A probe is answered once, with a challenge (a nonce of ours in Seq):
// the prober answers it from the same place, which proves the path to us
// the other way without our probing src ourselves. So a probe costs this
// node exactly one packet, however it got here, and src (which a copier
// chooses) never becomes a place we probe.
//
// It may run on a receive goroutine: it seals its answers with shared and
// never computes a key.
func (p *Prober) Handle(from identity.PublicKey, shared *wire.SharedKey, m wire.Message, src netip.AddrPort) {
	now := p.clock.Now()
	switch m.Kind {
	case wire.KindProbe:
		p.mu.Lock()
		ok := p.answerableLocked(from, m.Time, now)
		p.mu.Unlock()
		if !ok || !p.answers.Allow(from.Address(), now) || !p.allAnswers.Allow(now.UnixNano(), 1, allAnswerRate, allAnswerBurst) {
			p.stats.Refused.Add(1)
			return
		}
		ack := wire.Message{Kind: wire.KindProbeAck, Echo: m.Seq, Seq: p.newProbe(from, src, now, true)}
		if frame, err := p.seal.Seal(from, shared, ack); err == nil {
			p.stats.Answered.Add(1)
			_ = p.paths.SendFrames([][]byte{frame}, src)
		}
	case wire.KindProbeAck:
		// Only the answer to a probe (or challenge) we sent, once, from
		// where we sent it: a replayed answer cannot point the peer
		// anywhere, nor draw a packet.
		sent, ok := p.takeProbe(m.Echo, from, src)
		if !ok {
			p.stats.Dropped.Add(1)
			return
		}
		p.stats.Acks.Add(1)
		p.mu.Lock()
		if cs := p.candidates[from]; cs != nil {
			cs.proved, cs.failed = true, false
		}
		p.mu.Unlock()
		p.paths.DirectWorks(from, src)
		if sent.challenge || m.Seq == 0 {
			return
		}
		// The peer's challenge: answered once, to where our probe went.
		if frame, err := p.seal.Seal(from, shared, wire.Message{Kind: wire.KindProbeAck, Echo: m.Seq}); err == nil {
			_ = p.paths.SendFrames([][]byte{frame}, src)
		}
	default:
		p.stats.Dropped.Add(1)
	}
}

// AddCandidates adds the plausible endpoints of eps to key's candidates
// (loopback: the bridge that told them is on this host) and probes them
// fast for a while: AddIntroduced, introduced now by this node's clock.
func (p *Prober) AddCandidates(key identity.PublicKey, eps []netip.AddrPort, loopback bool) {
	p.AddIntroduced(key, eps, loopback, p.clock.Now().UnixNano())
}

// AddIntroduced adds the plausible endpoints of eps to key's candidates
// (loopback: the bridge that told them is on this host), as a bridge
// introduced them at its time at (Unix nanoseconds, the bridge's clock),
// and starts an attempt: openers (if they need them), then probes, fast
// for a while. After an attempt that proved nothing, only an
// introduction in a new retry window, or one that brings a new endpoint,
// starts the next (see retryPeriod).
func (p *Prober) AddIntroduced(key identity.PublicKey, eps []netip.AddrPort, loopback bool, at int64) {
	now := p.clock.Now()
	eps = slices.DeleteFunc(PlausibleOnly(eps, loopback), func(ep netip.AddrPort) bool { return p.bcast.Has(ep.Addr(), now) })
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := p.candidates[key]
	if cs == nil {
		if len(p.candidates) >= 4096 {
			clear(p.candidates)
		}
		cs = &candidateSet{}
		p.candidates[key] = cs
	}
	cs.expires = now.Add(candidateLifetime)
	added := false
	for _, ep := range eps {
		if containsEP(cs.addrs, ep) {
			continue
		}
		if len(cs.addrs) >= maxCandidates {
			cs.addrs = cs.addrs[1:]
		}
		cs.addrs = append(cs.addrs, ep)
		added = true
	}
	period, inWindow := at/int64(retryPeriod), at >= 0 && at%int64(retryPeriod) < int64(retryWindow)
	if cs.failed && !added && (!inWindow || period == cs.period) {
		return // quiet: the strays of the last attempt must expire
	}
	cs.period, cs.failed, cs.proved = period, false, false
	cs.burst = probeBurstCount
	p.bursting = true
	if slices.ContainsFunc(cs.addrs, func(ep netip.AddrPort) bool { return OpenerNeeded(ep.Addr()) }) {
		cs.openUntil, cs.nextOpener = now.Add(openerLead), time.Time{}
	}
}

// Bursting reports whether some candidate wants fast rounds (openers or
// a burst after an introduction) as of the last Round or introduction:
// the owner may round at its slow pace while it is false, and must go
// fast again after its next AddIntroduced.
func (p *Prober) Bursting() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bursting
}

// Candidates lists the endpoints each peer is probed at now (a copy).
func (p *Prober) Candidates() map[identity.PublicKey][]netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[identity.PublicKey][]netip.AddrPort, len(p.candidates))
	for k, cs := range p.candidates {
		out[k] = slices.Clone(cs.addrs)
	}
	return out
}

func containsEP(eps []netip.AddrPort, ep netip.AddrPort) bool {
	for _, e := range eps {
		if e == ep {
			return true
		}
	}
	return false
}

// Round probes, at now, the candidates still fast-probing (a burst after
// each introduction), and on a slow round every candidate and the direct
// address of every peer that has a relay path to fall back on, within the
// budgets per peer and in all. Right after an introduction, candidates
// that may be behind a NAT get openers first, and no probes (see
// openerLead). The owner calls it on its timer, never on a receive
// goroutine: sealing a probe to a peer whose shared key is not cached
// costs an X25519.
func (p *Prober) Round(now time.Time, slow bool) {
	targets := map[identity.PublicKey][]netip.AddrPort{}
	if slow {
		for k, d := range p.paths.RelayedPeers() {
			if d.IsValid() {
				targets[k] = append(targets[k], d)
			}
		}
	}
	openers := map[identity.PublicKey][]netip.AddrPort{}
	p.mu.Lock()
	if slow {
		// Unanswered probes are never taken after probeAnswerWindow:
		// forget them now, not only when maxSentProbes are out (a node
		// probing a few relayed peers each second otherwise keeps 8,192
		// of them, about 1 MB, bench/sim found).
		for seq, sent := range p.probes {
			if now.Sub(sent.at) > probeAnswerWindow {
				delete(p.probes, seq)
			}
		}
	}
	p.bursting = false
	for k, cs := range p.candidates {
		if now.After(cs.expires) {
			delete(p.candidates, k)
			continue
		}
		if cs.burst > 0 || now.Before(cs.openUntil) {
			p.bursting = true // this round's decrement may end it: one more fast round is harmless
		}
		if now.Before(cs.openUntil) {
			// Not even the slow round's probe of the peer's direct
			// address, if it is one of these.
			targets[k] = slices.DeleteFunc(targets[k], func(ep netip.AddrPort) bool { return containsEP(cs.addrs, ep) })
			if len(targets[k]) == 0 {
				delete(targets, k)
			}
			if p.ttl == nil || now.Before(cs.nextOpener) {
				continue
			}
			cs.nextOpener = now.Add(openerInterval)
			for _, a := range cs.addrs {
				if OpenerNeeded(a.Addr()) {
					openers[k] = append(openers[k], a)
				}
			}
			continue
		}
		if cs.burst > 0 || slow {
			for _, a := range cs.addrs {
				if cs.failed && OpenerNeeded(a.Addr()) {
					continue
				}
				if !containsEP(targets[k], a) {
					targets[k] = append(targets[k], a)
				}
			}
			if cs.burst > 0 {
				cs.burst--
				// The attempt's last round: unanswered so far, it failed
				// (an answer still on its way undoes that).
				if cs.burst == 0 && !cs.proved && slices.ContainsFunc(cs.addrs, func(ep netip.AddrPort) bool { return OpenerNeeded(ep.Addr()) }) {
					cs.failed = true
				}
			}
		}
	}
	p.mu.Unlock()
	p.send(openers, now, true)
	p.send(targets, now, false)
}

// send probes each peer's endpoints in targets, as openers if opener,
// within the budgets per peer and in all. An opener is a probe: if it
// reaches the peer after all (a peer fewer hops away than openerTTL), it
// is answered as one.
func (p *Prober) send(targets map[identity.PublicKey][]netip.AddrPort, now time.Time, opener bool) {
	for k, eps := range targets {
		for _, ep := range eps {
			if !p.probeBudget.Allow(k.Address(), now) || !p.allProbes.Allow(now.UnixNano(), 1, allProbeRate, allProbeBurst) {
				p.stats.Limited.Add(1)
				continue
			}
			frame, err := p.seal.Seal(k, nil, wire.Message{Kind: wire.KindProbe, Seq: p.newProbe(k, ep, now, false)})
			if err != nil {
				continue
			}
			if opener {
				if p.ttl.SendFramesTTL([][]byte{frame}, ep, openerTTL) == nil {
					p.stats.Openers.Add(1)
				}
				continue
			}
			p.stats.Sent.Add(1)
			_ = p.paths.SendFrames([][]byte{frame}, ep)
		}
	}
}

// newProbe records a probe (or a challenge) to key at to and returns its
// random, nonzero sequence number.
func (p *Prober) newProbe(key identity.PublicKey, to netip.AddrPort, now time.Time, challenge bool) uint64 {
	seq := rand.Uint64() | 1
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.probes) >= maxSentProbes {
		for s, sent := range p.probes {
			if now.Sub(sent.at) > probeAnswerWindow {
				delete(p.probes, s)
			}
		}
		if len(p.probes) >= maxSentProbes {
			clear(p.probes)
		}
	}
	p.probes[seq] = sentProbe{key: key, to: to, at: now, challenge: challenge}
	return seq
}

// takeProbe consumes the probe seq if key answered it from where it went.
func (p *Prober) takeProbe(seq uint64, key identity.PublicKey, from netip.AddrPort) (sentProbe, bool) {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	p.mu.Lock()
	defer p.mu.Unlock()
	sent, ok := p.probes[seq]
	if !ok || sent.key != key || sent.to != from || p.clock.Now().Sub(sent.at) > probeAnswerWindow {
		return sentProbe{}, false
	}
	delete(p.probes, seq)
	return sent, true
}
