package main

// This file is the crl scenario (issue 11): every node is a member of one
// organisation; once the allowed pairs have exchanged (so the nodes hold
// sessions and each other's certificates), a revocation list revoking one
// member is pushed to one other node, as `tomoe org crl push` does, and
// the run times how long it takes to reach every node (through the bridge,
// which tells its members, and through the peers, which announce it to
// their sessions) and how long each node that had a session with the
// revoked member takes to cut it.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/node"
)

// CRLResult is the crl scenario's figures.
type CRLResult struct {
	Revoked  string  `json:"revoked"`   // the member whose certificate the list revokes
	PushedTo string  `json:"pushed_to"` // the node the list was pushed to
	PushMS   float64 `json:"push_ms"`   // the push call

	// BridgeCerts is the certificates the bridges held when the list was
	// pushed (one per registered member once all presented theirs).
	BridgeCerts int `json:"bridge_certs"`
	// BridgeExpired is the registrations the bridges had dropped for lack
	// of keepalives by then (each also drops the member's certificates).
	BridgeExpired uint64 `json:"bridge_expired"`
	Online        int    `json:"online"`  // nodes running when the list was pushed
	Reached       int    `json:"reached"` // of those, nodes holding the list by the end
	// Times from the push until a node held the list (its org_crl
	// event): the median, 90th percentile and last node; AllSeconds is
	// the last only if every online node got it (0 otherwise).
	P50Seconds float64 `json:"p50_seconds"`
	P90Seconds float64 `json:"p90_seconds"`
	MaxSeconds float64 `json:"max_seconds"`
	AllSeconds float64 `json:"all_seconds"`
	// What the bridges did meanwhile: members told of the list (Hellos
	// sent), and organisation messages their rate limits dropped.
	BridgePushed  uint64 `json:"bridge_pushed"`
	BridgeLimited uint64 `json:"bridge_limited"`
	// Sessions with the revoked member: live just before the push (its
	// datagram answered), cut (a peer_removed event for it after the
	// list arrived), and its next datagram refused after the cut.
	Sessions int `json:"sessions"`
	Cut      int `json:"cut"`
	Refused  int `json:"refused"`
	// From a node holding the list to its session with the revoked
	// member being cut (org_crl event to peer_removed event).
	CutMedianMS float64 `json:"cut_median_ms"`
	CutMaxMS    float64 `json:"cut_max_ms"`
	// From the revoked member, each session carries datagrams back to
	// back (each waits for its echo) from before the push: the last one
	// answered was sent this long after the node held the list (the
	// largest over the sessions; negative: before). It bounds when the
	// node stopped admitting the revoked member's traffic, whatever its
	// events say.
	LastAnsweredMS float64 `json:"last_answered_ms"`
	Probes         int     `json:"probes"` // datagrams sent by the probes
	// EventsMissed: nodes whose event stream overflowed (their times are
	// missing, not wrong).
	EventsMissed int `json:"events_missed,omitempty"`
}

// crlWatch follows one node's events: when it got the list, and when it
// cut the revoked member.
type crlWatch struct {
	got, cut time.Time // zero: not yet
	overflow bool
}

// crl runs the scenario's revocation and fills in res.CRL.
func (s *sim) crl(ctx context.Context) {
	op := s.plan.org
	rev := s.nodes[op.revoked]
	res := &CRLResult{}
	s.res.CRL = res
	if rev == nil {
		s.res.Errors = append(s.res.Errors, "crl: the node to revoke did not start")
		return
	}
	res.Revoked = rev.name
	var online []*running
	for _, r := range s.nodes {
		if r != nil {
			online = append(online, r)
		}
	}
	res.Online = len(online)

	// Every member's certificate at its bridge: the bridge takes documents
	// only of organisations its members present certificates of, and
	// tells only those members of a new one. Members present theirs when
	// they register; give them up to 30 s more (what is missing then is
	// a figure: members the bridge will not tell).
	deadline := time.Now().Add(30 * time.Second)
	for {
		res.BridgeCerts, res.BridgeExpired = 0, 0
		for _, b := range s.bridges {
			st, _ := b.node.BridgeStats()
			res.BridgeCerts += st.OrgCerts
			res.BridgeExpired += st.Expired
		}
		if res.BridgeCerts >= res.Online*min(s.o.perNode, s.o.bridges) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond) // polling the bridges' counters: nothing signals a certificate kept
	}

	// Live sessions from the revoked member: its datagram is answered.
	type session struct {
		peer int
		c    net.Conn
	}
	var sessions []session
	var smu sync.Mutex
	var wg sync.WaitGroup
	for _, x := range op.peers {
		if s.nodes[x] == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := pair{client: op.revoked, server: x}
			c, err := s.dial(ctx, p, time.Now().Add(30*time.Second))
			if err != nil {
				return
			}
			for range 5 {
				if roundTrip(c, 2*time.Second) == nil {
					smu.Lock()
					sessions = append(sessions, session{x, c})
					smu.Unlock()
					return
				}
			}
			c.Close()
		}()
	}
	wg.Wait()
	defer func() {
		for _, se := range sessions {
			se.c.Close()
		}
	}()
	res.Sessions = len(sessions)
	if res.Sessions < len(op.peers) {
		s.res.Errors = append(s.res.Errors, fmt.Sprintf("crl: the revoked node had a live session with %d of its %d peers before the push", res.Sessions, len(op.peers)))
	}

	// Follow every node's events from now on.
	watches := make([]crlWatch, len(s.nodes))
	var wmu sync.Mutex
	var reached atomic.Int64
	all := make(chan struct{})
	revKey := rev.node.PublicKey().String()
	var stops []func()
	var ewg sync.WaitGroup
	for i, r := range s.nodes {
		if r == nil {
			continue
		}
		ch, stop := r.node.Subscribe()
		stops = append(stops, stop)
		ewg.Add(1)
		go func() {
			defer ewg.Done()
			for ev := range ch {
				t, err := time.Parse(time.RFC3339Nano, ev.Time)
				if err != nil {
					t = time.Now()
				}
				wmu.Lock()
				w := &watches[i]
				switch {
				case ev.Type == adminapi.EventOverflow:
					w.overflow = true
				case ev.Type == "org_crl" && w.got.IsZero():
					w.got = t
					if reached.Add(1) == int64(len(online)) {
						close(all)
					}
				case ev.Type == node.EventPeerRemoved && ev.Peer == revKey && !w.got.IsZero() && w.cut.IsZero():
					w.cut = t
				}
				wmu.Unlock()
			}
		}()
	}
	defer func() {
		for _, stop := range stops {
			stop()
		}
		ewg.Wait()
	}()

	// The revoked member keeps sending on every session.
	lastOK := make([]atomic.Int64, len(sessions))
	var probes atomic.Int64
	probeCtx, stopProbes := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	for i, se := range sessions {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			for seq := 0; probeCtx.Err() == nil; seq++ {
				t := time.Now()
				probes.Add(1)
				if probe(se.c, seq, 250*time.Millisecond) {
					lastOK[i].Store(t.UnixNano())
				}
			}
		}()
	}
	stopped := false
	stopProbing := func() {
		if !stopped {
			stopped = true
			stopProbes()
			pwg.Wait()
		}
	}
	defer stopProbing()

	// Push the list to one node, as `tomoe org crl push` does.
	rng := rand.New(rand.NewPCG(s.o.seed, 0x63726c))
	to := online[rng.IntN(len(online))]
	for to == rev {
		to = online[rng.IntN(len(online))]
	}
	res.PushedTo = to.name
	list, err := op.signer.Revoke([]uint64{op.certs[op.revoked].Serial}, nil, time.Now())
	if err != nil {
		s.res.Errors = append(s.res.Errors, "crl: "+err.Error())
		return
	}
	b0 := s.orgStats()
	s.log.Info("pushing a revocation list", "revoked", rev.name, "to", to.name, "online", len(online), "sessions", len(sessions), "bridge_certs", res.BridgeCerts, "bridge_expired", res.BridgeExpired)
	t0 := time.Now()
	pr, err := node.OrgsArea{Node: to.node}.Push(ctx, adminapi.OrgPushRequest{Document: list.Text()})
	res.PushMS = ms(time.Since(t0))
	if err != nil || !pr.Newer {
		s.res.Errors = append(s.res.Errors, fmt.Sprintf("crl: push = %+v, %v", pr, err))
		return
	}
	stopProgress := s.progress("revocation list spreading", func() []any {
		return []any{"reached", reached.Load(), "online", len(online), "seconds", time.Since(t0).Seconds(), "rss_mib", rssBytes() >> 20}
	})
	select {
	case <-all:
	case <-ctx.Done():
	case <-time.After(s.o.crlTimeout): // the limit of the phase
	}
	stopProgress()
	// The cuts follow the list's event on each node at once; give the
	// event goroutines a moment to record them.
	cutDeadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(cutDeadline) && ctx.Err() == nil {
		wmu.Lock()
		n := 0
		for _, se := range sessions {
			if !watches[se.peer].got.IsZero() && watches[se.peer].cut.IsZero() {
				n++
			}
		}
		wmu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond) // polling what the event goroutines recorded
	}
	stopProbing()
	res.Probes = int(probes.Load())
	b1 := s.orgStats()
	res.BridgePushed, res.BridgeLimited = b1.pushed-b0.pushed, b1.limited-b0.limited

	wmu.Lock()
	var spread, cuts []time.Duration
	for i, r := range s.nodes {
		if r == nil {
			continue
		}
		w := watches[i]
		if w.overflow {
			res.EventsMissed++
		}
		if !w.got.IsZero() {
			spread = append(spread, w.got.Sub(t0))
		}
	}
	for _, se := range sessions {
		w := watches[se.peer]
		if !w.got.IsZero() && !w.cut.IsZero() {
			cuts = append(cuts, w.cut.Sub(w.got))
		}
	}
	wmu.Unlock()
	res.Reached, res.Cut = len(spread), len(cuts)
	if len(spread) > 0 {
		slices.Sort(spread)
		res.P50Seconds = spread[len(spread)/2].Seconds()
		res.P90Seconds = spread[len(spread)*9/10].Seconds()
		res.MaxSeconds = spread[len(spread)-1].Seconds()
		if len(spread) == len(online) {
			res.AllSeconds = res.MaxSeconds
		}
	}
	first := true
	for i, se := range sessions {
		w := watches[se.peer]
		if ok := lastOK[i].Load(); ok != 0 && !w.got.IsZero() {
			d := ms(time.Unix(0, ok).Sub(w.got))
			if first || d > res.LastAnsweredMS {
				res.LastAnsweredMS, first = d, false
			}
		}
	}
	if len(cuts) > 0 {
		slices.Sort(cuts)
		res.CutMedianMS = ms(cuts[len(cuts)/2])
		res.CutMaxMS = ms(cuts[len(cuts)-1])
	}
	if res.Reached < res.Online {
		var missing []string
		for i, r := range s.nodes {
			if r != nil && watches[i].got.IsZero() && len(missing) < 10 {
				missing = append(missing, r.name+" "+bridgeState(ctx, r))
			}
		}
		s.res.Errors = append(s.res.Errors, fmt.Sprintf("crl: %d of %d nodes did not get the list within %v (some: %s)", res.Online-res.Reached, res.Online, s.o.crlTimeout, strings.Join(missing, ", ")))
	}

	// The revoked member's next datagram on each session is refused.
	var refused atomic.Int64
	for _, se := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if roundTrip(se.c, time.Second) != nil {
				refused.Add(1)
			}
		}()
	}
	wg.Wait()
	res.Refused = int(refused.Load())
	s.log.Info("revocation list spread", "reached", res.Reached, "online", res.Online, "p50_s", res.P50Seconds, "p90_s", res.P90Seconds, "max_s", res.MaxSeconds,
		"sessions", res.Sessions, "cut", res.Cut, "refused", res.Refused, "cut_max_ms", res.CutMaxMS)
}

// bridgeState says how r stands with its bridges and which list it holds,
// for a node the list did not reach.
func bridgeState(ctx context.Context, r *running) string {
	st, err := r.node.StatusArea().Status(ctx)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	var parts []string
	for _, b := range st.Bridges {
		parts = append(parts, "bridge "+b.State+"/"+b.Transport)
	}
	for _, o := range st.Orgs {
		v := uint64(0)
		if o.CRL != nil {
			v = o.CRL.Version
		}
		parts = append(parts, fmt.Sprintf("list %d", v))
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// probe sends one datagram numbered seq on c and reports whether its echo
// came back within wait (echoes of earlier datagrams are skipped).
func probe(c net.Conn, seq int, wait time.Duration) bool {
	msg := fmt.Appendf(nil, "probe-%d", seq)
	deadline := time.Now().Add(wait)
	c.SetWriteDeadline(deadline)
	if _, err := c.Write(msg); err != nil {
		time.Sleep(10 * time.Millisecond) // a refused write: do not spin
		return false
	}
	c.SetReadDeadline(deadline)
	buf := make([]byte, 64)
	for {
		k, err := c.Read(buf)
		if err != nil {
			return false
		}
		if string(buf[:k]) == string(msg) {
			return true
		}
	}
}

// orgStats adds up the bridges' organisation counters.
func (s *sim) orgStats() (sum struct{ pushed, limited uint64 }) {
	for _, b := range s.bridges {
		st, _ := b.node.BridgeStats()
		sum.pushed += st.OrgPushed
		sum.limited += st.OrgLimited
	}
	return sum
}
