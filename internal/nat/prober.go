package nat

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
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
}

// Config is what a Prober works with.
type Config struct {
	Paths      Paths
	Sealer     Sealer
	Counters   Counters    // nil fields: counters of its own
	Broadcasts *Broadcasts // this host's broadcast addresses, never probed; nil: NewBroadcasts()
}

// Prober keeps, for the peers bridges introduced or lookups found, where
// they may be reachable directly (candidates), probes those places on its
// owner's rounds, answers peers' probes, and tells the Bind which direct
// paths are proven. It is safe for concurrent use.
type Prober struct {
	paths Paths
	seal  Sealer
	stats Counters
	bcast *Broadcasts // never probed

	mu         sync.Mutex // guards candidates, probes, seen
	candidates map[identity.PublicKey]*candidateSet
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
		candidates:  make(map[identity.PublicKey]*candidateSet),
		probes:      make(map[uint64]sentProbe),
		seen:        make(map[identity.PublicKey]*probeMemory),
		answers:     ratelimit.NewKeyed(peerAnswerRate, peerAnswerBurst, maxProbingPeers),
		probeBudget: ratelimit.NewKeyed(peerProbeRate, peerProbeBurst, maxProbingPeers),
	}
	for _, c := range []**atomic.Uint64{&p.stats.Sent, &p.stats.Limited, &p.stats.Acks, &p.stats.Answered, &p.stats.Refused, &p.stats.Dropped} {
		if *c == nil {
			*c = new(atomic.Uint64)
		}
	}
	if p.bcast == nil {
		p.bcast = NewBroadcasts()
	}
	now := time.Now().UnixNano()
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

// candidateSet is where a peer may be reachable directly, as bridges
// reported it; Round probes it until it expires.
type candidateSet struct {
	addrs   []netip.AddrPort
	expires time.Time
	burst   int // probes left in the fast burst
}

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
	now := time.Now()
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
// fast for a while.
func (p *Prober) AddCandidates(key identity.PublicKey, eps []netip.AddrPort, loopback bool) {
	now := time.Now()
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
	cs.burst = probeBurstCount
	for _, ep := range eps {
		if containsEP(cs.addrs, ep) {
			continue
		}
		if len(cs.addrs) >= maxCandidates {
			cs.addrs = cs.addrs[1:]
		}
		cs.addrs = append(cs.addrs, ep)
	}
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
// budgets per peer and in all. The owner calls it on its timer, never on
// a receive goroutine: sealing a probe to a peer whose shared key is not
// cached costs an X25519.
func (p *Prober) Round(now time.Time, slow bool) {
	targets := map[identity.PublicKey][]netip.AddrPort{}
	if slow {
		for k, d := range p.paths.RelayedPeers() {
			if d.IsValid() {
				targets[k] = append(targets[k], d)
			}
		}
	}
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
	for k, cs := range p.candidates {
		if now.After(cs.expires) {
			delete(p.candidates, k)
			continue
		}
		if cs.burst > 0 || slow {
			if cs.burst > 0 {
				cs.burst--
			}
			for _, a := range cs.addrs {
				if !containsEP(targets[k], a) {
					targets[k] = append(targets[k], a)
				}
			}
		}
	}
	p.mu.Unlock()
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
	if !ok || sent.key != key || sent.to != from || time.Since(sent.at) > probeAnswerWindow {
		return sentProbe{}, false
	}
	delete(p.probes, seq)
	return sent, true
}
