package client

import (
	"context"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
)

// Probe starts probing the endpoints of a lookup's answer for a direct
// path to its key. The bridge introduced this node to the peer at the
// time of its answer: the peer's introduction carries the same time.
func (c *Client) Probe(f Found) {
	if f.at == 0 {
		f.at = c.clock.Now().UnixNano()
	}
	c.prober.AddIntroduced(f.Key, f.Endpoints, f.loopback, f.at)
	c.burst()
}

// burst puts probeLoop's ticker on fast rounds, after an introduction
// (the prober is bursting by then).
func (c *Client) burst() {
	if !c.stopped() && c.fastRounds.CompareAndSwap(false, true) {
		c.probeTick.Reset(probeBurst)
	}
}

// paceRounds sets probeLoop's ticker after a round: slow once the prober
// has no burst on. An introduction that comes while it slows down finds
// the prober bursting (checked again after the switch) or the ticker slow
// already (burst switches it back).
func (c *Client) paceRounds() {
	if c.prober.Bursting() || !c.fastRounds.CompareAndSwap(true, false) {
		return
	}
	c.probeTick.Reset(probeInterval)
	if c.prober.Bursting() {
		c.burst()
	}
}

// probeLoop probes direct paths: fast right after an introduction, then
// every probeInterval for every peer that has a relay to fall back on. It
// also looks relayed peers up again now and then (refreshInterval), and at
// once when this node's public address changed: the answer brings fresh
// endpoints, and the lookup makes the bridge introduce us to the peer
// again, so both sides probe each other's current addresses. It rounds
// every probeBurst only while the prober has a burst on, and every
// probeInterval otherwise: an idle node wakes once a second, not ten times
// (bench/sim: every node's 100 ms ticker was a fifth of a 10,000-node
// simulation's CPU).
func (c *Client) probeLoop() {
	defer c.wg.Done()
	var lastSlow, lastRefresh time.Time
	for {
		select {
		case <-c.stop:
			return
		case all := <-c.refreshNow:
			lastRefresh = c.clock.Now()
			c.refresh(all)
		case now := <-c.probeTick.C():
			slow := !c.fastRounds.Load() || now.Sub(lastSlow) >= probeInterval
			if slow {
				lastSlow = now
			}
			c.prober.Round(now, slow)
			c.paceRounds()
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
			// Lookup gives up after lookupTimeout of the client's clock;
			// this bound in real time as well lets Close, which waits for
			// this goroutine, end while a test's clock stands still.
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
