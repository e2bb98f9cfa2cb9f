package webui

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/units"
	"github.com/tomoe-net/tomoe/internal/webui/session"
)

// Peer history: the byte counters sampled each time the peers table is
// drawn (the page asks every few seconds), for the rate graph, and the
// round-trip time of an echo request (POST /v1/ping) sent now and then to
// each peer that is up. A peer that does not answer echo requests (its
// policy does not let this node's ICMP in) shows none.
const (
	historyLen     = 30               // samples per peer
	sampleInterval = time.Second      // at most one sample a second
	pingInterval   = 10 * time.Second // per peer
	pingTimeout    = 2 * time.Second
	maxHistory     = 1024 // peers remembered; beyond it the stalest goes
)

type sample struct {
	at     time.Time
	rx, tx uint64
}

type peerRecord struct {
	samples  []sample
	rtt      string // "1.2 ms", "no reply", "" before the first ping
	pinged   time.Time
	inflight bool
	seen     time.Time
}

// peerHistory keeps the samples and pings. mu guards peers.
type peerHistory struct {
	s     *Server
	mu    sync.Mutex
	peers map[string]*peerRecord // by public key
}

func newPeerHistory(s *Server) *peerHistory {
	return &peerHistory{s: s, peers: map[string]*peerRecord{}}
}

// peerRow is one row of the peers table.
type peerRow struct {
	adminapi.Peer
	RTT    string
	Rate   string // bytes/s over the last sample interval
	Points string // SVG polyline points of the rate graph
}

// observe records the peers' counters and starts the pings that are due;
// it returns the table's rows.
func (h *peerHistory) observe(peers []adminapi.Peer) []peerRow {
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	rows := make([]peerRow, 0, len(peers))
	for _, p := range peers {
		rec := h.peers[p.PublicKey]
		if rec == nil {
			if len(h.peers) >= maxHistory {
				h.evictLocked()
			}
			rec = &peerRecord{}
			h.peers[p.PublicKey] = rec
		}
		rec.seen = now
		if n := len(rec.samples); n == 0 || now.Sub(rec.samples[n-1].at) >= sampleInterval {
			rec.samples = append(rec.samples, sample{now, p.RxBytes, p.TxBytes})
			if len(rec.samples) > historyLen {
				rec.samples = rec.samples[len(rec.samples)-historyLen:]
			}
		}
		if p.Up && !rec.inflight && now.Sub(rec.pinged) >= pingInterval {
			rec.inflight, rec.pinged = true, now
			h.s.wg.Add(1)
			go h.ping(p.PublicKey, p.Address)
		}
		row := peerRow{Peer: p, RTT: rec.rtt}
		row.Rate, row.Points = rates(rec.samples)
		rows = append(rows, row)
	}
	return rows
}

func (h *peerHistory) evictLocked() {
	var stalest string
	var at time.Time
	for k, r := range h.peers {
		if at.IsZero() || r.seen.Before(at) {
			stalest, at = k, r.seen
		}
	}
	delete(h.peers, stalest)
}

// ping sends one echo request through the admin API and keeps its RTT.
func (h *peerHistory) ping(key, addr string) {
	defer h.s.wg.Done()
	ctx, cancel := context.WithTimeout(h.s.ctx, pingTimeout+time.Second)
	defer cancel()
	var resp adminapi.PingResponse
	rtt := "no reply"
	err := h.s.post(ctx, "/v1/ping", adminapi.PingRequest{Address: addr, TimeoutMs: int(pingTimeout / time.Millisecond)}, &resp)
	if err == nil && resp.Error == "" {
		rtt = fmt.Sprintf("%.1f ms", resp.RTTMs)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if rec := h.peers[key]; rec != nil {
		rec.rtt, rec.inflight = rtt, false
	}
}

// rates returns the latest rate (rx+tx bytes/s) and the graph's points
// (100 x 20, the highest rate at the top).
func rates(ss []sample) (string, string) {
	if len(ss) < 2 {
		return "", ""
	}
	rs := make([]float64, len(ss)-1)
	top := 1.0
	for i := 1; i < len(ss); i++ {
		dt := ss[i].at.Sub(ss[i-1].at).Seconds()
		d := float64((ss[i].rx - ss[i-1].rx) + (ss[i].tx - ss[i-1].tx))
		if ss[i].rx < ss[i-1].rx || ss[i].tx < ss[i-1].tx || dt <= 0 {
			d = 0 // counters restart with a new device peer
		}
		rs[i-1] = d / dt
		top = max(top, rs[i-1])
	}
	var pts strings.Builder
	step := 100.0 / float64(historyLen-1)
	x0 := 100 - step*float64(len(rs)-1)
	for i, r := range rs {
		fmt.Fprintf(&pts, "%.1f,%.1f ", x0+step*float64(i), 19-18*r/top)
	}
	return units.Bytes(uint64(rs[len(rs)-1])) + "/s", strings.TrimSpace(pts.String())
}

func (s *Server) readPeers(ctx context.Context) ([]peerRow, error) {
	var ps []adminapi.Peer
	if err := s.get(ctx, "/v1/peers", &ps); err != nil {
		return nil, err
	}
	return s.peers.observe(ps), nil
}

func (s *Server) peersPage(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	d := pageData{Title: "Peers"}
	rows, err := s.readPeers(r.Context())
	if err != nil {
		d.Error = err.Error()
	}
	d.Data = rows
	s.render(w, "peers", sess, d)
}

// peerRows is the peers table's body alone: the page's script fetches it
// when an event says a peer changed, and every few seconds.
func (s *Server) peerRows(w http.ResponseWriter, r *http.Request, _ *session.Session) {
	rows, err := s.readPeers(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := templates["peers"].ExecuteTemplate(w, "rows", rows); err != nil {
		s.log.Error("web UI template", "page", "peers rows", "err", err)
	}
}
