package bridge

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
)

// candidateSet is where a peer may be reachable directly, as bridges
// reported it; probeLoop probes it until it expires.
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

// What a probe from a peer may cost this node: one answer, and only for a
// probe that is fresh and not answered before. A probe is a sealed frame
// that anyone on the path can copy and send again from any address; the
// answer goes to where the probe came from.
const (
	// peerClockWindow is how far a probe's time (the peer's clock) may be
	// from ours. Nodes are within wire.MaxClockSkew of their bridge's clock
	// (it refuses them otherwise), so within twice that of each other;
	// a minute more for the way.
	peerClockWindow = 2*wire.MaxClockSkew + time.Minute
	// probeReorder: a probe up to this much older than the newest one
	// answered from that peer is still answered, once. A peer probes
	// several of our endpoints at once, and the paths reorder them.
	probeReorder = time.Second
	// recentProbes probes of one peer within probeReorder are remembered
	// exactly; more in that span are not answered.
	recentProbes = 16
	// maxProbingPeers bounds the peers whose probes are remembered; a
	// peer's memory goes once its newest probe is older than
	// peerClockWindow (the window refuses its probes by then).
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
func (c *Client) answerableLocked(key identity.PublicKey, t int64, now time.Time) bool {
	floor := now.Add(-peerClockWindow).UnixNano()
	if t < floor || t > now.Add(peerClockWindow).UnixNano() {
		return false
	}
	pm := c.seen[key]
	if pm == nil {
		if len(c.seen) >= maxProbingPeers {
			for k, p := range c.seen {
				if p.newest < floor {
					delete(c.seen, k)
				}
			}
			if len(c.seen) >= maxProbingPeers {
				return false // forgetting anyone now would let their probes be answered again
			}
		}
		pm = &probeMemory{}
		c.seen[key] = pm
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

// handlePeer acts on a probe or probe answer from the node from (proven by
// its key: the frame opened with shared, which seals the answers), which
// came from src.
//
// A probe is answered once, with a challenge (a nonce of ours in Seq):
// the prober answers it from the same place, which proves the path to us
// the other way without our probing src ourselves. So a probe costs this
// node exactly one packet, however it got here, and src (which a copier
// chooses) never becomes a place we probe.
func (c *Client) handlePeer(from identity.PublicKey, shared *wire.SharedKey, m wire.Message, src netip.AddrPort) {
	now := time.Now()
	switch m.Kind {
	case wire.KindProbe:
		c.mu.Lock()
		ok := c.answerableLocked(from, m.Time, now)
		c.mu.Unlock()
		if !ok || !c.answers.Allow(from.Address(), now) || !c.allAnswers.Allow(now.UnixNano(), 1, allAnswerRate, allAnswerBurst) {
			c.stats.ProbesRefused.Add(1)
			return
		}
		ack := wire.Message{Kind: wire.KindProbeAck, Echo: m.Seq, Seq: c.newProbe(from, src, now, true)}
		if frame, err := c.keys.Seal(from, shared, ack); err == nil {
			c.stats.ProbesAnswered.Add(1)
			_ = c.cfg.Bind.SendFrames([][]byte{frame}, src)
		}
	case wire.KindProbeAck:
		// Only the answer to a probe (or challenge) we sent, once, from
		// where we sent it: a replayed answer cannot point the peer
		// anywhere, nor draw a packet.
		p, ok := c.takeProbe(m.Echo, from, src)
		if !ok {
			c.stats.Dropped.Add(1)
			return
		}
		c.stats.ProbeAcks.Add(1)
		c.cfg.Bind.DirectWorks(from, src)
		if p.challenge || m.Seq == 0 {
			return
		}
		// The peer's challenge: answered once, to where our probe went.
		if frame, err := c.keys.Seal(from, shared, wire.Message{Kind: wire.KindProbeAck, Echo: m.Seq}); err == nil {
			_ = c.cfg.Bind.SendFrames([][]byte{frame}, src)
		}
	default:
		c.stats.Dropped.Add(1)
	}
}

// Probe starts probing the endpoints of a lookup's answer for a direct
// path to its key.
func (c *Client) Probe(f Found) {
	c.addCandidates(f.Key, f.Endpoints, f.loopback)
}

// addCandidates adds the plausible endpoints of eps to key's candidates
// (loopback: the bridge that told them is on this host) and probes them
// fast for a while.
func (c *Client) addCandidates(key identity.PublicKey, eps []netip.AddrPort, loopback bool) {
	now := time.Now()
	eps = slices.DeleteFunc(plausibleOnly(eps, loopback), func(ep netip.AddrPort) bool { return c.bcast.has(ep.Addr(), now) })
	c.mu.Lock()
	defer c.mu.Unlock()
	cs := c.candidates[key]
	if cs == nil {
		if len(c.candidates) >= 4096 {
			clear(c.candidates)
		}
		cs = &candidateSet{}
		c.candidates[key] = cs
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

func containsEP(eps []netip.AddrPort, ep netip.AddrPort) bool {
	for _, e := range eps {
		if e == ep {
			return true
		}
	}
	return false
}

// probeLoop probes direct paths: fast right after an introduction, then
// every probeInterval for every peer that has a relay to fall back on. It
// also looks relayed peers up again now and then (refreshInterval), and at
// once when this node's public address changed: the answer brings fresh
// endpoints, and the lookup makes the bridge introduce us to the peer
// again, so both sides probe each other's current addresses.
func (c *Client) probeLoop() {
	defer c.wg.Done()
	fast := time.NewTicker(probeBurst)
	defer fast.Stop()
	var lastSlow, lastRefresh time.Time
	for {
		select {
		case <-c.stop:
			return
		case all := <-c.refreshNow:
			lastRefresh = time.Now()
			c.refresh(all)
		case now := <-fast.C:
			slow := now.Sub(lastSlow) >= probeInterval
			if slow {
				lastSlow = now
			}
			c.probeRound(now, slow)
			if now.Sub(lastRefresh) >= refreshInterval {
				lastRefresh = now
				c.refresh(false)
			}
		}
	}
}

// kickRefresh asks probeLoop to look relayed peers up again now; all: also
// the ones on a direct path.
func (c *Client) kickRefresh(all bool) {
	select {
	case c.refreshNow <- all:
	default:
	}
}

// refresh looks up again the peers that have a relay path (only those on
// the relay now, unless all), in the background.
func (c *Client) refresh(all bool) {
	var keys []identity.PublicKey
	for k := range c.cfg.Bind.RelayedPeers() {
		if all || c.cfg.Bind.PathOf(k).Kind == "relay" {
			keys = append(keys, k)
		}
		if len(keys) == maxRefresh {
			break
		}
	}
	if len(keys) == 0 || !c.refreshing.CompareAndSwap(false, true) {
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer c.refreshing.Store(false)
		for _, k := range keys {
			if c.stopped() {
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
			f, err := c.Lookup(ctx, k.Address())
			cancel()
			if err != nil || f.Key != k || f.Relay == nil {
				continue
			}
			c.cfg.Bind.SetRelay(k, f.Relay, f.RelayID)
			c.Probe(f)
		}
	}()
}

func (c *Client) probeRound(now time.Time, slow bool) {
	targets := map[identity.PublicKey][]netip.AddrPort{}
	if slow {
		for k, d := range c.cfg.Bind.RelayedPeers() {
			if d.IsValid() {
				targets[k] = append(targets[k], d)
			}
		}
	}
	c.mu.Lock()
	for k, cs := range c.candidates {
		if now.After(cs.expires) {
			delete(c.candidates, k)
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
	c.mu.Unlock()
	for k, eps := range targets {
		for _, ep := range eps {
			if !c.probeBudget.Allow(k.Address(), now) || !c.allProbes.Allow(now.UnixNano(), 1, allProbeRate, allProbeBurst) {
				c.stats.ProbesLimited.Add(1)
				continue
			}
			frame, err := c.keys.Seal(k, nil, wire.Message{Kind: wire.KindProbe, Seq: c.newProbe(k, ep, now, false)})
			if err != nil {
				continue
			}
			c.stats.ProbesSent.Add(1)
			_ = c.cfg.Bind.SendFrames([][]byte{frame}, ep)
		}
	}
}

// newProbe records a probe (or a challenge) to key at to and returns its
// random, nonzero sequence number.
func (c *Client) newProbe(key identity.PublicKey, to netip.AddrPort, now time.Time, challenge bool) uint64 {
	seq := rand.Uint64() | 1
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.probes) >= maxSentProbes {
		for s, p := range c.probes {
			if now.Sub(p.at) > probeAnswerWindow {
				delete(c.probes, s)
			}
		}
		if len(c.probes) >= maxSentProbes {
			clear(c.probes)
		}
	}
	c.probes[seq] = sentProbe{key: key, to: to, at: now, challenge: challenge}
	return seq
}

// takeProbe consumes the probe seq if key answered it from where it went.
func (c *Client) takeProbe(seq uint64, key identity.PublicKey, from netip.AddrPort) (sentProbe, bool) {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.probes[seq]
	if !ok || p.key != key || p.to != from || time.Since(p.at) > probeAnswerWindow {
		return sentProbe{}, false
	}
	delete(c.probes, seq)
	return p, true
}

// maxIntroduced bounds the peers whose introductions a node remembers per
// bridge.
const maxIntroduced = 4096

// freshIntroduction reports whether an introduction of key stamped t (the
// bridge's clock) is news at now, and if so notes it. The bridge and this
// node agree on the time within wire.MaxClockSkew (the bridge refuses it
// otherwise), and the bridge's introductions of one peer come in order: a
// replayed one (which would make this node probe old endpoints and point
// the peer's relay at an old id) is neither fresh nor newer. When the
// memory is full of live entries the introduction is refused: forgetting
// one would let it be replayed.
func (b *bridgeConn) freshIntroduction(key identity.PublicKey, t int64, now time.Time) bool {
	floor := now.Add(-peerClockWindow).UnixNano()
	if t < floor || t > now.Add(peerClockWindow).UnixNano() {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	last, ok := b.introduced[key]
	if ok && t <= last {
		return false
	}
	if !ok && len(b.introduced) >= maxIntroduced {
		for k, at := range b.introduced {
			if at < floor {
				delete(b.introduced, k)
			}
		}
		if len(b.introduced) >= maxIntroduced {
			return false
		}
	}
	if b.introduced == nil {
		b.introduced = make(map[identity.PublicKey]int64)
	}
	b.introduced[key] = t
	return true
}
