package bridge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/admission"
	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/nat"
	"github.com/tomoe-net/tomoe/internal/ratelimit"
)

// clockRefusal returns why a node message stamped t is not fresh at now,
// in words for the node's user, or "" if it is.
func clockRefusal(t int64, now time.Time) string {
	lo, hi := now.Add(-wire.MaxClockSkew).UnixNano(), now.Add(wire.MaxClockSkew).UnixNano()
	if t >= lo && t <= hi {
		return ""
	}
	// In float64: t is the sender's and may be anything.
	off := (float64(t) - float64(now.UnixNano())) / 1e9
	way := "ahead of"
	if off < 0 {
		off, way = -off, "behind"
	}
	by := "more than 10 years"
	if off < 10*365*24*3600 {
		by = time.Duration(off * 1e9).Round(time.Second).String()
	}
	return fmt.Sprintf("clock: this node's clock is %s %s the bridge's (at most %s allowed); set its time (NTP)", by, way, wire.MaxClockSkew)
}

// register acts on a Register from from, whose frame opened with shared.
func (s *Server) register(from identity.PublicKey, shared *wire.SharedKey, m wire.Message, src netip.AddrPort, c *serverConn, now time.Time) {
	s.adm.Lock()
	s.mu.RLock()
	last, seen := s.lastTime[from]
	boundTo, retired := identity.PublicKey{}, false
	if c != nil {
		boundTo, retired = c.key, c.retired
	}
	s.mu.RUnlock()
	if seen && m.Time <= last {
		s.adm.Unlock()
		s.stats.replays.Add(1)
		return
	}
	if (!boundTo.IsZero() && boundTo != from) || retired {
		s.adm.Unlock() // a connection carries one node, once
		return
	}
	// Checked before admission, so that a stale Register with a token
	// spends no use of it.
	reason := clockRefusal(m.Time, now)
	if reason != "" {
		s.stats.stale.Add(1)
	} else {
		var enrolledWith string
		var err error
		reason, enrolledWith, err = s.adm.AdmitLocked(from, m.Token, now)
		if err != nil {
			s.log.Error("bridge: cannot store an enrolment", "peer", from.String(), "err", err)
		}
		if enrolledWith != "" {
			s.keys.PinShared(from, shared) // admitted from now on
			s.stats.enrolments.Add(1)
			s.log.Info("bridge: key enrolled with a join token", "peer", from.String(), "addr", src, "token_id", enrolledWith)
		}
	}
	if reason != "" {
		s.adm.Unlock()
		s.stats.refused.Add(1)
		s.logLimited(slog.LevelInfo, "bridge: registration refused", "peer", from.String(), "addr", src, "reason", reason)
		// The answer echoes the Register's time: only the node that sent
		// it acts on it, not one a replay came from (or was spoofed from).
		if c != nil || s.refusals.Allow(ratelimit.Source(src.Addr()), now) {
			s.sendControl(from, shared, wire.Message{Kind: wire.KindRefused, Echo: uint64(m.Time), Text: reason}, src, c)
		}
		return
	}

	s.mu.Lock()
	if other := s.byUDP[src]; c == nil && other != nil && other.key != from && !s.proves(from, m.Seq, src, now) {
		// Another node's registration holds src: the Register may come
		// from a member who spoofs src to take it. Ask the key to prove it
		// receives at src (a node that the NAT gave that address now does);
		// until then nothing moves.
		s.lastTime[from] = m.Time
		s.timesDirty = true
		s.mu.Unlock()
		s.adm.Unlock()
		s.stats.challenges.Add(1)
		if s.challenges.Allow(ratelimit.Source(src.Addr()), now) {
			s.sendControl(from, shared, wire.Message{Kind: wire.KindChallenge, Echo: uint64(m.Time), Seq: s.challengeFor(from, src, challengeEpoch(now))}, src, nil)
		}
		return
	}
	reg := s.regs[from]
	isNew := reg == nil
	if isNew {
		reg = &registration{key: from, addr: from.Address(), id: s.allocIDLocked(from)}
		reg.relay.Init(now.UnixNano(), s.relayBurst)
		reg.lookup.Init(now.UnixNano(), lookupBurst)
		s.regs[from] = reg
		s.byID[reg.id] = reg
		s.byAddr[reg.addr] = reg
	}
	// The node registered over another TCP connection before: it has left
	// it (or the bridge never saw it break), so it goes, and with it its
	// slot and buffers, rather than idling until tcpIdleTimeout.
	var old *serverConn
	if reg.tcp != nil && reg.tcp != c {
		old = reg.tcp
		old.retired = true
	}
	s.detachLocked(reg)
	if c != nil {
		reg.tcp, reg.endpoint = c, c.remote
		c.key, c.reg = from, reg
	} else {
		if other := s.byUDP[src]; other != nil {
			s.removeLocked(other) // another key proved it receives at this address now
		}
		reg.endpoint = src
		s.byUDP[src] = reg
	}
	// What the node says of itself goes to every node that looks it up,
	// which may probe it: only plausible endpoints (loopback ones only from
	// a node on this host).
	reg.local = nat.PlausibleOnly(m.Endpoints, src.Addr().IsLoopback())
	reg.lastSeen = now.UnixNano()
	s.lastTime[from] = m.Time
	s.timesDirty = true
	id := reg.id
	s.mu.Unlock()
	s.adm.Unlock()
	if old != nil {
		old.close()
	}

	s.stats.registrations.Add(1)
	if isNew {
		s.logLimited(slog.LevelInfo, "bridge: node registered", "peer", from.String(), "addr", src, "transport", transportName(c))
	}
	s.sendControl(from, shared, wire.Message{Kind: wire.KindRegistered, Echo: uint64(m.Time), ID: id, Interval: keepaliveInterval, Endpoints: []netip.AddrPort{src}}, src, c)
}

// A challenge is a MAC of the key, the address and the time (in epochs of
// challengeEpochLen, by the bridge's clock) under a secret of the bridge,
// so the bridge keeps no state per challenge: a flood of Registers costs it
// no memory. One is accepted in its epoch and the next (30 to 60 s: time
// for a node to answer at once), and a node answers each only once.
const challengeEpochLen = 30 * time.Second

func challengeEpoch(now time.Time) int64 { return now.UnixNano() / int64(challengeEpochLen) }

// challengeFor is the challenge for key at src in epoch: never zero.
func (s *Server) challengeFor(key identity.PublicKey, src netip.AddrPort, epoch int64) uint64 {
	mac := hmac.New(sha256.New, s.challengeKey[:])
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(epoch))
	mac.Write(b[:])
	mac.Write(key[:])
	a, _ := src.MarshalBinary()
	mac.Write(a)
	return binary.BigEndian.Uint64(mac.Sum(nil)) | 1
}

// proves reports whether seq answers the challenge for key at src,
// so that key receives at src.
func (s *Server) proves(key identity.PublicKey, seq uint64, src netip.AddrPort, now time.Time) bool {
	if seq == 0 {
		return false
	}
	e := challengeEpoch(now)
	return seq == s.challengeFor(key, src, e) || seq == s.challengeFor(key, src, e-1)
}

// allocIDLocked picks a nonzero relay id no registration has: derived
// from the key when that one is free, so a node keeps its id across a
// bridge restart and peers' relay paths to it stay valid; else random.
func (s *Server) allocIDLocked(key identity.PublicKey) uint32 {
	h := sha256.Sum256(key[:])
	if id := binary.BigEndian.Uint32(h[:4]); id != 0 && s.byID[id] == nil && s.deriveIDs {
		return id
	}
	for {
		if id := s.newID(); id != 0 && s.byID[id] == nil {
			return id
		}
	}
}

// detachLocked takes reg off its transport (it is moving).
func (s *Server) detachLocked(reg *registration) {
	if reg.tcp == nil && reg.endpoint.IsValid() && s.byUDP[reg.endpoint] == reg {
		delete(s.byUDP, reg.endpoint)
	}
	reg.tcp, reg.endpoint = nil, netip.AddrPort{}
}

// removeLocked drops reg. Its TCP connection, if any, stays open.
func (s *Server) removeLocked(reg *registration) {
	if s.regs[reg.key] == reg {
		delete(s.regs, reg.key)
	}
	if s.byID[reg.id] == reg {
		delete(s.byID, reg.id)
	}
	if s.byAddr[reg.addr] == reg {
		delete(s.byAddr, reg.addr)
	}
	s.detachLocked(reg)
	s.org.dropMemberLocked(reg.key)
}

// onPathLocked reports whether a frame from src (or over c) comes from
// where reg registered.
func onPathLocked(reg *registration, src netip.AddrPort, c *serverConn) bool {
	if c != nil {
		return reg.tcp == c
	}
	return reg.tcp == nil && reg.endpoint == src
}

func (s *Server) unregister(from identity.PublicKey, m wire.Message, src netip.AddrPort, c *serverConn, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	reg := s.regs[from]
	if reg == nil || !onPathLocked(reg, src, c) {
		return
	}
	if m.Time <= s.lastTime[from] {
		s.stats.replays.Add(1)
		return
	}
	if clockRefusal(m.Time, now) != "" {
		s.stats.stale.Add(1)
		return
	}
	s.lastTime[from] = m.Time
	s.timesDirty = true
	s.removeLocked(reg)
}

// Revoke stops key for good: it is recorded as revoked (overriding the
// config allow list and join tokens), its registration is dropped and its
// TCP connections closed at once, so relaying from and to it stops. It
// reports whether the key had been allowed, enrolled or registered.
func (s *Server) Revoke(key identity.PublicKey) (bool, error) {
	s.adm.Lock()
	known, err := s.adm.RevokeLocked(key, s.now())
	if err != nil {
		s.adm.Unlock()
		return false, fmt.Errorf("bridge revoke %s: %w", key.ShortString(), err)
	}
	s.mu.Lock()
	var tell netip.AddrPort // a UDP node is told at once; a TCP node sees its connection close
	echo := s.lastTime[key] // the refusal answers the newest Register, which the node knows
	if reg := s.regs[key]; reg != nil {
		if reg.tcp == nil {
			tell = reg.endpoint
		}
		s.removeLocked(reg)
		known = true
	}
	delete(s.lastTime, key)
	s.timesDirty = true
	s.mu.Unlock()
	s.adm.Unlock()
	if tell.IsValid() {
		s.sendControl(key, nil, wire.Message{Kind: wire.KindRefused, Echo: uint64(echo), Text: admission.RefuseRevoked}, tell, nil)
	}

	s.connMu.Lock()
	conns := make([]*serverConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.connMu.Unlock()
	s.mu.RLock()
	conns = slices.DeleteFunc(conns, func(c *serverConn) bool { return c.key != key })
	s.mu.RUnlock()
	for _, c := range conns {
		c.close()
	}
	s.keys.Forget(key)
	s.joins.dropNode(key)
	s.log.Info("bridge: key revoked", "peer", key.String())
	return known, nil
}

// expireIdle drops registrations without a keepalive for registrationTTL,
// closing their TCP connections.
func (s *Server) expireIdle(now time.Time) {
	cutoff := now.Add(-registrationTTL).UnixNano()
	var conns []*serverConn
	s.mu.Lock()
	for _, reg := range s.regs {
		if reg.lastSeen < cutoff {
			if reg.tcp != nil {
				conns = append(conns, reg.tcp)
			}
			s.removeLocked(reg)
			s.stats.expired.Add(1)
		}
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}
