package bridge

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// candidateSet is where a peer may be reachable directly, as bridges
// reported it; probeLoop probes it until it expires.
type candidateSet struct {
	addrs   []netip.AddrPort
	expires time.Time
	burst   int // probes left in the fast burst
}

// sentProbe is a probe awaiting its answer.
type sentProbe struct {
	key identity.PublicKey
	to  netip.AddrPort
	at  time.Time
}

const (
	probeAnswerWindow = 5 * time.Second
	maxSentProbes     = 8192
)

// handlePeer acts on a probe or probe answer from the node from (proven by
// its key), which came from src.
func (c *Client) handlePeer(from identity.PublicKey, m Message, src netip.AddrPort) {
	switch m.Kind {
	case KindProbe:
		c.addCandidates(from, []netip.AddrPort{src}, src.Addr().IsLoopback())
		if ack, err := c.keys.seal(from, Message{Kind: KindProbeAck, Seq: m.Seq}); err == nil {
			_ = c.cfg.Bind.SendFrames([][]byte{ack}, src)
		}
	case KindProbeAck:
		// Only the answer to a probe we sent, once, from where we sent it:
		// a replayed ack cannot point the peer anywhere.
		if !c.takeProbe(m.Seq, from, src) {
			c.stats.Dropped.Add(1)
			return
		}
		c.stats.ProbeAcks.Add(1)
		c.cfg.Bind.DirectWorks(from, src)
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
			frame, err := c.keys.seal(k, Message{Kind: KindProbe, Seq: c.newProbe(k, ep, now)})
			if err != nil {
				continue
			}
			c.stats.ProbesSent.Add(1)
			_ = c.cfg.Bind.SendFrames([][]byte{frame}, ep)
		}
	}
}

// newProbe records a probe to key at to and returns its random sequence
// number.
func (c *Client) newProbe(key identity.PublicKey, to netip.AddrPort, now time.Time) uint64 {
	seq := rand.Uint64()
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
	c.probes[seq] = sentProbe{key: key, to: to, at: now}
	return seq
}

// takeProbe consumes the probe seq if key answered it from where it went.
func (c *Client) takeProbe(seq uint64, key identity.PublicKey, from netip.AddrPort) bool {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.probes[seq]
	if !ok || p.key != key || p.to != from || time.Since(p.at) > probeAnswerWindow {
		return false
	}
	delete(c.probes, seq)
	return true
}
