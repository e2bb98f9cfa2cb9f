package client

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/tomoe-net/tomoe/internal/bridge/wire"
	"github.com/tomoe-net/tomoe/internal/nat"
	"github.com/tomoe-net/tomoe/internal/transport"
)

// bridgeConn is the client's state for one bridge.
type bridgeConn struct {
	c   *Client
	cfg BridgeConfig

	mu         sync.Mutex
	state      string
	transport  string
	err        string
	addr       netip.AddrPort // resolved UDP address
	observed   netip.AddrPort
	id         uint32
	lastOK     time.Time
	sent       [sentRegisters]int64 // times of the last Registers sent, a ring
	sentNext   int                  // where in sent the next one goes
	lastEcho   int64                // the Register the newest accepted answer answered
	challenged int64                // the Register the newest challenge answered was for
	interval   time.Duration
	tcp        *clientTCP
	udp        *udpRelay
	alt        []netip.AddrPort // other addresses the bridge sent from
	given      transport.Relay  // the relay peers' paths through this bridge use
	answered   chan struct{}    // signalled on Registered/Refused
	refused    bool
	intros     nat.Introductions // the bridge's newest introduction of each peer
}

// sentRegisters is how many Registers sent an answer may answer: those
// of the last two minutes at the keepalive interval, more than enough for
// the three sent a second while registering.
const sentRegisters = 8

// answersLocked reports whether a Registered or Refused that echoes the
// Register time echo is news, and notes it. It must answer one of the
// last Registers this node sent, newer than the one the last accepted
// answer answered, so that a replayed answer cannot revive a lapsed
// registration, move our address or teach us a bridge address, and the
// bridge's answer to someone else's replay of an old Register of ours
// (a refusal: the clock) is not taken for ours. A refusal may answer the
// same Register as the last answer: a bridge that revokes a node tells it
// so, echoing its newest Register.
func (b *bridgeConn) answersLocked(echo int64, refused bool) bool {
	if echo == 0 || !slices.Contains(b.sent[:], echo) || echo < b.lastEcho || (echo == b.lastEcho && !refused) {
		return false
	}
	b.lastEcho = echo
	return true
}

// challengeLocked reports whether a Challenge that echoes the Register
// time echo is to be answered, and notes it: one of our last Registers,
// not older than the last answer, and each Register's challenge only
// once, so that a replayed challenge draws no Register.
func (b *bridgeConn) challengeLocked(echo int64) bool {
	if echo == 0 || !slices.Contains(b.sent[:], echo) || echo < b.lastEcho || echo <= b.challenged {
		return false
	}
	b.challenged = echo
	return true
}

func (b *bridgeConn) registered() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state == "registered"
}

func (b *bridgeConn) udpAddr() netip.AddrPort {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addr
}

// onLoopback reports whether the bridge is reached at a loopback address:
// it runs on this host, and so does every node it sees at one.
func (b *bridgeConn) onLoopback() bool { return b.udpAddr().Addr().IsLoopback() }

func (b *bridgeConn) relay() transport.Relay {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.transport == "tcp" && b.tcp != nil {
		return b.tcp
	}
	if b.udp != nil {
		return b.udp
	}
	return nil
}

func (b *bridgeConn) setState(state, errText string) {
	b.mu.Lock()
	changed := b.state != state
	b.state, b.err = state, errText
	b.mu.Unlock()
	if changed {
		b.c.log.Info("bridge "+state, "bridge", b.cfg.Endpoint, "error", errText)
	}
}

// run registers and keeps the registration alive: over UDP first, over TCP
// when UDP gets no answer.
func (b *bridgeConn) run() {
	defer b.c.wg.Done()
	defer b.closeTCP() // also one a dial finished while we were stopping
	useTCP := false
	for {
		if b.c.stopped() {
			return
		}
		addr, err := b.resolve()
		if err != nil {
			b.setState("unreachable", err.Error())
			if !b.c.sleep(5 * time.Second) {
				return
			}
			continue
		}
		b.mu.Lock()
		b.addr = addr
		if b.udp == nil || b.udp.addr != addr {
			if b.udp != nil {
				b.c.cfg.Bind.RemoveUDPRelay(b.udp.addr)
				for _, a := range b.alt {
					b.c.cfg.Bind.RemoveUDPRelay(a)
				}
				b.alt = nil
			}
			b.udp = &udpRelay{addr: addr, bind: b.c.cfg.Bind}
			b.c.cfg.Bind.AddUDPRelay(addr, b.udp)
		}
		b.mu.Unlock()
		if useTCP {
			if err := b.dialTCP(addr); err != nil {
				b.setState("unreachable", "no answer over UDP; TCP: "+err.Error())
				useTCP = false
				if !b.c.sleep(5 * time.Second) {
					return
				}
				continue
			}
		}
		ok := b.register(useTCP)
		if !ok {
			if b.c.stopped() {
				return
			}
			if b.isRefused() {
				if !b.c.sleep(30 * time.Second) {
					return
				}
				continue
			}
			useTCP = !useTCP // UDP unanswered: TCP; TCP failed: back to UDP
			continue
		}
		// Registered: keep it alive until it lapses.
		b.keepalive()
		b.closeTCP()
		useTCP = false
	}
}

func (b *bridgeConn) isRefused() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.refused
}

func (b *bridgeConn) resolve() (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(b.cfg.Endpoint); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	host, port, err := net.SplitHostPort(b.cfg.Endpoint)
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port in %q", b.cfg.Endpoint)
	}
	// A DNS timeout is the net package's: real time.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r := b.c.cfg.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return netip.AddrPort{}, fmt.Errorf("resolve %s: %v", host, err)
	}
	return netip.AddrPortFrom(addrs[0].Unmap(), uint16(p)), nil
}

// register sends Register until answered; false if it never was.
func (b *bridgeConn) register(tcp bool) bool {
	b.setState("registering", "")
	attempts := udpAttempts
	if tcp {
		attempts = 2
	}
	for range attempts {
		b.sendRegister(0)
		switch b.wait(registerRetry, nil) {
		case stopped:
			return false
		case answered:
			return !b.isRefused()
		}
	}
	return false
}

// What ended a wait.
const (
	stopped  = iota // the client stopped
	answered        // the bridge answered a Register
	broke           // the TCP connection broke
	elapsed         // the time ran out
)

// wait waits d of the client's clock for the bridge's answer, the client
// to stop, or broken to be closed (nil: never), and says which came.
func (b *bridgeConn) wait(d time.Duration, broken <-chan struct{}) int {
	t := b.c.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-b.c.stop:
		return stopped
	case <-broken:
		return broke
	case <-b.answered:
		return answered
	case <-t.C():
		return elapsed
	}
}

// sendRegister sends a Register; seq answers a Challenge (0: none).
func (b *bridgeConn) sendRegister(seq uint64) {
	var eps []netip.AddrPort
	if f := b.c.cfg.LocalEndpoints; f != nil {
		eps = f()
	}
	// The token is needed only until the bridge has enrolled our key.
	b.mu.Lock()
	token := ""
	if b.lastOK.IsZero() || b.refused {
		token = b.cfg.Token
	}
	b.mu.Unlock()
	b.send(wire.Message{Kind: wire.KindRegister, Seq: seq, Token: token, Endpoints: eps})
}

// keepalive re-registers every interval until registrationLapse of them
// go unanswered or the TCP connection breaks.
func (b *bridgeConn) keepalive() {
	missed := 0
	for {
		b.mu.Lock()
		iv := b.interval
		tcp := b.tcp
		b.mu.Unlock()
		var broken <-chan struct{}
		if tcp != nil {
			broken = tcp.done
		}
		switch b.wait(iv, broken) {
		case stopped:
			return
		case broke:
			b.setState("registering", "TCP connection lost")
			return
		case answered:
			missed = 0
			continue
		}
		missed++
		if missed > registrationLapse {
			b.setState("registering", "registration lapsed: the bridge stopped answering")
			return
		}
		b.sendRegister(0)
	}
}

// send seals m to the bridge over its current transport.
func (b *bridgeConn) send(m wire.Message) {
	b.mu.Lock()
	tcp, addr := b.tcp, b.addr
	if m.Kind == wire.KindRegister {
		last := b.sent[(b.sentNext+len(b.sent)-1)%len(b.sent)]
		m.Time = max(b.c.clock.Now().UnixNano(), last+1)
		b.sent[b.sentNext] = m.Time
		b.sentNext = (b.sentNext + 1) % len(b.sent)
	}
	b.mu.Unlock()
	frame, err := b.c.keys.Seal(b.cfg.Key, nil, m)
	if err != nil {
		return
	}
	if tcp != nil {
		tcp.write(frame)
		return
	}
	if addr.IsValid() {
		_ = b.c.cfg.Bind.SendFrames([][]byte{frame}, addr)
	}
}

// sawSource notes that the bridge (proven by its key) sent from src. A
// bridge with several addresses answers from the one its routing picks,
// not necessarily the one this node registered with: wireguard-go's UDP
// receive path loses the packet's destination address when UDP GRO is on,
// so the bridge cannot answer from it. Relay frames from src are accepted
// as the bridge's too. (Behind a NAT that filters by address such answers
// do not arrive at all; the node then registers over TCP by itself.)
func (b *bridgeConn) sawSource(src netip.AddrPort) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !src.IsValid() || src == b.addr || b.udp == nil || slices.Contains(b.alt, src) {
		return
	}
	if len(b.alt) == maxAltSources {
		b.c.cfg.Bind.RemoveUDPRelay(b.alt[0])
		b.alt = b.alt[1:]
	}
	b.alt = append(b.alt, src)
	b.c.cfg.Bind.AddUDPRelay(src, b.udp)
	b.c.log.Warn("the bridge answers from another address than the one configured; accepting it (configure that address to avoid this)", "bridge", b.cfg.Endpoint, "answers_from", src)
}

// handle acts on a message from the bridge (proven by its key), which
// came from src over UDP or over the TCP connection.
func (b *bridgeConn) handle(m wire.Message, src netip.AddrPort, overTCP bool) {
	switch m.Kind {
	case wire.KindRegistered, wire.KindRefused:
		b.mu.Lock()
		fresh := b.answersLocked(int64(m.Echo), m.Kind == wire.KindRefused)
		b.mu.Unlock()
		if !fresh {
			b.c.stats.Dropped.Add(1)
			return
		}
	}
	switch m.Kind {
	case wire.KindRegistered:
		if !overTCP {
			b.sawSource(src)
		}
		transport := "udp"
		if overTCP {
			transport = "tcp"
		}
		b.mu.Lock()
		b.id = m.ID
		b.refused = false
		moved := false
		if len(m.Endpoints) > 0 {
			moved = b.observed.IsValid() && b.transport == transport && b.observed != m.Endpoints[0]
			b.observed = m.Endpoints[0]
		}
		b.interval = time.Duration(m.Interval) * time.Second
		if b.interval < time.Second || b.interval > time.Minute {
			b.interval = defaultKeepalive
		}
		b.transport = transport
		b.lastOK = b.c.clock.Now()
		fresh := b.state != "registered"
		b.mu.Unlock()
		b.repointRelays()
		if moved {
			// Our public address changed: peers behind NAT must learn the
			// new one from an introduction before they can reach it.
			b.c.log.Info("this node's address as the bridge sees it changed; re-introducing peers", "bridge", b.cfg.Endpoint, "observed", m.Endpoints[0])
			b.c.kickRefresh(true)
		}
		b.setState("registered", "")
		b.signal()
		if f := b.c.cfg.OnRegistered; fresh && f != nil {
			f(b.cfg.Key)
		}
	case wire.KindOrg:
		if f := b.c.cfg.OrgMessage; f != nil {
			f(b.cfg.Key, m.Data)
		}
	case wire.KindRefused:
		b.mu.Lock()
		b.refused = true
		b.mu.Unlock()
		b.setState("refused", m.Text)
		b.signal()
	case wire.KindChallenge:
		// Another node's registration held the address our Register came
		// from: the bridge asks us to prove we receive there (a NAT gave
		// us an address it had) by registering again with its nonce.
		b.mu.Lock()
		fresh := !overTCP && b.challengeLocked(int64(m.Echo))
		b.mu.Unlock()
		if !fresh {
			b.c.stats.Dropped.Add(1)
			return
		}
		b.c.log.Info("the bridge asks this node to prove its address (another node held it); answering", "bridge", b.cfg.Endpoint)
		b.sendRegister(m.Seq)
	case wire.KindLookupReply:
		b.c.deliverLookup(b, m)
	case wire.KindIntroduce:
		if m.Key == b.c.keys.Public() || !b.c.cfg.Wants(m.Key) {
			return
		}
		if !b.intros.Fresh(m.Key, m.Time, b.c.clock.Now()) {
			b.c.stats.Dropped.Add(1)
			return
		}
		b.c.prober.AddIntroduced(m.Key, m.Endpoints, b.onLoopback(), m.Time)
		b.c.burst()
		if r := b.relay(); r != nil {
			b.c.cfg.Bind.SetRelay(m.Key, r, m.ID)
		}
	default:
		b.c.stats.Dropped.Add(1)
	}
}

// repointRelays moves peers' relay paths through this bridge onto the
// transport it is registered over now (after a switch between UDP and TCP,
// or a new TCP connection). Relay ids are the bridge's and stay valid.
func (b *bridgeConn) repointRelays() {
	r := b.relay()
	b.mu.Lock()
	old := b.given
	b.given = r
	b.mu.Unlock()
	if old != nil && r != nil && old != r {
		b.c.cfg.Bind.MoveRelay(old, r)
	}
}

func (b *bridgeConn) signal() {
	select {
	case b.answered <- struct{}{}:
	default:
	}
}

// udpRelay relays through a bridge over the node's UDP socket.
type udpRelay struct {
	addr netip.AddrPort
	bind *transport.Bind
}

func (u *udpRelay) SendRelay(frames [][]byte) error { return u.bind.SendFrames(frames, u.addr) }
func (u *udpRelay) String() string                  { return u.addr.String() + "/udp" }
