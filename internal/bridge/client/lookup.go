package client

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/nat"
	"github.com/tomoe-net/tomoe/internal/transport"
)

// lookupAnswer is a bridge's answer to a lookup, for the Lookup waiting
// for it.
type lookupAnswer struct {
	via *bridgeConn
	m   wire.Message
}

// ErrNotFound: no bridge knows the address.
var ErrNotFound = errors.New("no bridge knows this address")

// Found is a verified lookup answer.
type Found struct {
	Key       identity.PublicKey
	Relay     transport.Relay // the bridge that answered; nil if the answer is the bridge itself
	RelayID   uint32
	Endpoints []netip.AddrPort // plausible ones only (see nat.Plausible)
	Bridge    netip.AddrPort   // for a bridge's own address: where it is

	loopback bool  // the bridge that answered is on this host: loopback endpoints are plausible
	at       int64 // the answer's time, by the bridge's clock (nat.Prober.AddIntroduced)
}

// Lookup asks the registered bridges who owns addr, again after
// lookupRetry, and gives up after lookupTimeout (of the client's clock)
// or when ctx ends. Only an answer whose key hashes to addr is used
// (DESIGN.md: lookups are self-certifying); a wrong one is logged and
// counted.
func (c *Client) Lookup(ctx context.Context, addr netip.Addr) (Found, error) {
	c.stats.Lookups.Add(1)
	seq := c.seq.Add(1)
	ch := make(chan lookupAnswer, 2*len(c.bridges)+2)
	c.mu.Lock()
	c.lookups[seq] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.lookups, seq)
		c.mu.Unlock()
	}()
	ask := func() int {
		n := 0
		for _, b := range c.bridges {
			if b.registered() {
				b.send(wire.Message{Kind: wire.KindLookup, Seq: seq, Address: addr})
				n++
			}
		}
		return n
	}
	if ask() == 0 {
		return Found{}, errors.New("not registered with any bridge")
	}
	retry := c.clock.NewTimer(lookupRetry)
	defer retry.Stop()
	timeout := c.clock.NewTimer(lookupTimeout)
	defer timeout.Stop()
	notFound := map[*bridgeConn]bool{}
	giveUp := func() (Found, error) {
		if len(notFound) > 0 {
			return Found{}, ErrNotFound
		}
		return Found{}, fmt.Errorf("no bridge answered the lookup of %s", addr)
	}
	for {
		select {
		case <-ctx.Done():
			return giveUp()
		case <-timeout.C():
			return giveUp()
		case <-retry.C():
			ask()
		case a := <-ch:
			m := a.m
			if m.Address != addr {
				continue
			}
			if !m.Found {
				notFound[a.via] = true
				if len(notFound) == c.registeredCount() {
					return Found{}, ErrNotFound
				}
				continue
			}
			if m.Key.Address() != addr {
				c.stats.WrongAnswers.Add(1)
				c.log.Warn("bridge answered a lookup with a key that does not own the address; ignored", "bridge", a.via.cfg.Endpoint, "address", addr, "key", m.Key.ShortString())
				continue
			}
			c.stats.LookupsFound.Add(1)
			loopback := a.via.onLoopback()
			f := Found{Key: m.Key, RelayID: m.ID, Endpoints: nat.PlausibleOnly(m.Endpoints, loopback), loopback: loopback, at: m.Time}
			if m.Key == a.via.cfg.Key {
				f.Bridge = a.via.udpAddr()
			} else {
				f.Relay = a.via.relay()
			}
			if f.Relay != nil || f.Bridge.IsValid() {
				return f, nil
			}
		}
	}
}

func (c *Client) registeredCount() int {
	n := 0
	for _, b := range c.bridges {
		if b.registered() {
			n++
		}
	}
	return n
}

func (c *Client) deliverLookup(b *bridgeConn, m wire.Message) {
	c.mu.Lock()
	ch := c.lookups[m.Seq]
	c.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- lookupAnswer{via: b, m: m}:
	default:
	}
}
