// Package joins is a node's requests to join organisations (enrolment by
// request, issue 12). A node asks to join an organisation (Join): it
// remembers the request (its host keeps it in the node's state) and
// leaves it at its bridges, sending it again each time it registers with
// one and every minute while it waits. The organisation's key holder,
// through its own node, lists the requests (List) with a query the
// organisation signed, and approves one (Approve) by handing over the
// certificate it signed, or rejects one (Reject). A bridge passes the
// certificate on to the node that asked; that node takes it (Deliver)
// only if it is for its own key, for an organisation it asked to join,
// and verifies against that organisation's key; its host (the
// organisation engine, package orgs) then installs it: the node is a
// member at once, as if the certificate were in its config.
//
// The bridges carry; they decide nothing. A bridge that lies can drop or
// delay a request, an answer or a certificate, never forge one.
//
// Locks: mu guards the requests and the waiters; it is never held while
// calling the host.
package joins

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/clock"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/orgsync"
)

// Host is what the requests need of the node's organisation engine. Its
// methods are called without the Requests' lock held.
type Host interface {
	// SendBridge sends one encoded orgsync message to a bridge this node
	// is registered with; Bridges lists those bridges.
	SendBridge(bridge identity.PublicKey, payload []byte) error
	Bridges() []identity.PublicKey
	// Trusted returns the name of the organisation with key k if this
	// node trusts it, and the config file of its certificate if the
	// config gives it one ("" if none, or joined by request).
	Trusted(k org.PublicKey) (name, configCert string, ok bool)
	// Install makes c, verified and asked for, this node's certificate of
	// its organisation, or says why it cannot (a certificate from the
	// config, a name the config gives another key, revoked, older).
	Install(c *org.Cert) error
	// Holds reports whether c is this node's certificate already (the
	// same approval delivered by a second bridge).
	Holds(c *org.Cert) bool
	// Save writes the node's organisation state, which holds Saved().
	Save() error
	// Event publishes an event for the admin API's stream.
	Event(kind, peer, detail string)
}

// Requests is a node's pending requests to join organisations, and the
// admin calls waiting for bridges' answers. Safe for concurrent use.
type Requests struct {
	self  identity.PublicKey
	host  Host
	log   *slog.Logger
	clock clock.Clock
	done  <-chan struct{}

	wait time.Duration // JoinWait; tests shorten it

	mu         sync.Mutex // guards the fields below
	joins      map[org.PublicKey]*pendingJoin
	waits      map[waitKey]*waiter
	sent       time.Time // requests last sent again
	refusedLog time.Time // a refused certificate last logged
}

// New returns the requests of the node with key self; done ends the
// waits of admin calls.
func New(self identity.PublicKey, host Host, log *slog.Logger, clk clock.Clock, done <-chan struct{}) *Requests {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Requests{self: self, host: host, log: log, clock: clock.Or(clk), done: done, wait: JoinWait,
		joins: make(map[org.PublicKey]*pendingJoin), waits: make(map[waitKey]*waiter)}
}

// Saved is a pending request as the node's state file keeps it.
type Saved struct {
	Org     org.PublicKey      `json:"org"`
	Name    string             `json:"name"`
	Groups  []string           `json:"groups"`
	Created time.Time          `json:"created"`
	Bridge  identity.PublicKey `json:"bridge,omitzero"`
}

// Saved returns the pending requests, to be kept.
func (r *Requests) Saved() []Saved {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Saved, 0, len(r.joins))
	for _, j := range r.joins {
		out = append(out, Saved{Org: j.org, Name: j.name, Groups: j.groups, Created: j.created, Bridge: j.bridge})
	}
	slices.SortFunc(out, func(a, b Saved) int { return strings.Compare(a.Org.String(), b.Org.String()) })
	return out
}

// Load takes the requests kept in the state file.
func (r *Requests) Load(saved []Saved) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range saved {
		if s.Org.IsZero() || s.Name == "" {
			continue
		}
		r.joins[s.Org] = &pendingJoin{org: s.Org, name: s.Name, groups: s.Groups, created: s.Created.UTC(), bridge: s.Bridge, answers: map[identity.PublicKey]adminapi.OrgBridgeAnswer{}}
	}
}

// Join timing.
const (
	// JoinWait bounds how long the admin API waits for the bridges'
	// answers.
	JoinWait = 3 * time.Second
	// joinTTL is how long a request stays (the bridges keep it as long).
	joinTTL    = 7 * 24 * time.Hour
	joinResend = time.Minute
	// maxListItems bounds the requests taken from one bridge's answer
	// (a bridge holds at most 256 per organisation).
	maxListItems = 1024
)

// pendingJoin is this node's request to join one organisation.
type pendingJoin struct {
	org     org.PublicKey
	name    string
	groups  []string
	created time.Time          // second precision: the request's identity at the bridges
	bridge  identity.PublicKey // zero: every bridge
	// answers: what each bridge last said of it (not kept on disk).
	answers map[identity.PublicKey]adminapi.OrgBridgeAnswer
}

func (j *pendingJoin) msg() *orgsync.Msg {
	return &orgsync.Msg{Type: orgsync.TypeJoin, Org: j.org, Join: orgsync.Join{Created: j.created.Unix(), Name: j.name, Groups: j.groups}}
}

// to reports whether j goes to bridge b.
func (j *pendingJoin) to(b identity.PublicKey) bool { return j.bridge.IsZero() || j.bridge == b }

// waitKey names what a waiter waits for: the answers about one
// organisation's request (Echo: its Created), approval (the certificate's
// serial) or query (its nonce).
type waitKey struct {
	org  [32]byte
	echo uint64
}

// waiter collects the answers of the bridges asked.
type waiter struct {
	list    bool
	answers map[identity.PublicKey]*answer
	done    chan struct{}
	closed  bool
}

type answer struct {
	got    bool
	status orgsync.JoinStatus
	text   string
	total  int
	items  map[uint16]orgsync.Join
}

func (a *answer) complete(list bool) bool {
	if !list || a.status != 0 {
		return a.got
	}
	return a.got && len(a.items) >= a.total
}

// ask sends m to each bridge in targets and waits, up to JoinWait, for
// their answers to key. It returns what each said; a bridge that could not
// be sent to, or did not answer in time, says so.
func (e *Requests) ask(ctx context.Context, key waitKey, list bool, targets []identity.PublicKey, m *orgsync.Msg) ([]identity.PublicKey, map[identity.PublicKey]*answer, map[identity.PublicKey]error) {
	b, err := m.Marshal()
	if err != nil {
		errs := map[identity.PublicKey]error{}
		for _, t := range targets {
			errs[t] = err
		}
		return targets, nil, errs
	}
	w := &waiter{list: list, answers: map[identity.PublicKey]*answer{}, done: make(chan struct{})}
	for _, t := range targets {
		w.answers[t] = &answer{}
	}
	e.mu.Lock()
	e.waits[key] = w
	e.mu.Unlock()
	errs := map[identity.PublicKey]error{}
	for _, t := range targets {
		if err := e.host.SendBridge(t, b); err != nil {
			errs[t] = err
			e.mu.Lock()
			delete(w.answers, t)
			e.checkDoneLocked(w)
			e.mu.Unlock()
		}
	}
	e.mu.Lock()
	e.checkDoneLocked(w)
	e.mu.Unlock()
	timer := time.NewTimer(e.wait)
	defer timer.Stop()
	select {
	case <-w.done:
	case <-timer.C:
	case <-ctx.Done():
	case <-e.done:
	}
	e.mu.Lock()
	delete(e.waits, key)
	out := make(map[identity.PublicKey]*answer, len(w.answers))
	for k, a := range w.answers {
		c := *a
		c.items = make(map[uint16]orgsync.Join, len(a.items))
		for i, it := range a.items {
			c.items[i] = it
		}
		out[k] = &c
	}
	e.mu.Unlock()
	return targets, out, errs
}

func (e *Requests) checkDoneLocked(w *waiter) {
	if w.closed {
		return
	}
	for _, a := range w.answers {
		if !a.complete(w.list) {
			return
		}
	}
	w.closed = true
	close(w.done)
}

// bridgeAnswers turns what ask collected into the API's form, in the
// order of targets.
func (e *Requests) bridgeAnswers(targets []identity.PublicKey, got map[identity.PublicKey]*answer, errs map[identity.PublicKey]error, list bool) []adminapi.OrgBridgeAnswer {
	out := make([]adminapi.OrgBridgeAnswer, 0, len(targets))
	for _, t := range targets {
		r := adminapi.OrgBridgeAnswer{Bridge: t.String()}
		a := got[t]
		switch {
		case errs[t] != nil:
			r.State, r.Error = "not_sent", errs[t].Error()
		case a == nil || !a.got:
			r.State, r.Error = "no_answer", fmt.Sprintf("no answer within %s", e.wait)
		case a.status != 0:
			r.State, r.Error = a.status.String(), a.text
		case list && len(a.items) < a.total:
			r.State, r.Count = "partial", a.total
			r.Error = fmt.Sprintf("%d of %d requests arrived within %s", len(a.items), a.total, e.wait)
		case list:
			r.State, r.Count = "answered", a.total
		}
		out = append(out, r)
	}
	return out
}

// targets returns the bridges to send to: the one named (it must be one
// this node is registered with now) or all of them.
func (e *Requests) targets(only identity.PublicKey) ([]identity.PublicKey, error) {
	reg := e.host.Bridges()
	if !only.IsZero() {
		if !slices.Contains(reg, only) {
			return nil, fmt.Errorf("this node is not registered with bridge %s now (see `tomoe status`)", only)
		}
		return []identity.PublicKey{only}, nil
	}
	if len(reg) == 0 {
		return nil, errors.New("this node is registered with no bridge now: requests travel through bridges ([[bridges]] in the config; see `tomoe status`)")
	}
	return reg, nil
}

// JoinParams is a request to join an organisation.
type JoinParams struct {
	Org    org.PublicKey
	Name   string
	Groups []string
	Bridge identity.PublicKey // zero: every bridge
}

// checkJoinName checks the name asked for as a certificate of the
// organisation would have it: if the organisation is known, its name;
// else the name's last label stands for it.
func checkJoinName(orgName, name string) error {
	if orgName == "" {
		orgName = name
		if i := strings.LastIndexAny(name, ".@"); i >= 0 {
			orgName = name[i+1:]
		}
	}
	return org.ValidCertName(orgName, name)
}

// Join asks to join an organisation: the request is kept (replacing an
// earlier one for the same organisation) and sent to the bridges, whose
// answers it waits for up to JoinWait.
func (e *Requests) Join(ctx context.Context, p JoinParams) (adminapi.OrgJoinResponse, error) {
	var res adminapi.OrgJoinResponse
	if p.Org.IsZero() {
		return res, errors.New("organisation key missing: --org tomoe-org:... (`tomoe org public` prints it)")
	}
	orgName, configCert, _ := e.host.Trusted(p.Org)
	if configCert != "" {
		return res, fmt.Errorf("this node has a certificate of %s from its config already (%s): renew that file, or remove cert from [[orgs]] to join by request", orgName, configCert)
	}
	if err := checkJoinName(orgName, p.Name); err != nil {
		return res, err
	}
	groups := slices.Compact(slices.Sorted(slices.Values(p.Groups)))
	total := 0
	for _, g := range groups {
		if err := org.ValidGroup(g); err != nil {
			return res, err
		}
		total += len(g)
	}
	if len(groups) > org.MaxGroups || total > org.MaxGroupsBytes {
		return res, fmt.Errorf("%d groups of %d characters: at most %d groups of %d characters in all", len(groups), total, org.MaxGroups, org.MaxGroupsBytes)
	}
	targets, err := e.targets(p.Bridge)
	if err != nil {
		return res, err
	}
	now := e.clock.Now().UTC().Truncate(time.Second)
	e.mu.Lock()
	if old := e.joins[p.Org]; old != nil && !now.After(old.created) {
		now = old.created.Add(time.Second) // newer than the one it replaces
	}
	j := &pendingJoin{org: p.Org, name: p.Name, groups: groups, created: now, bridge: p.Bridge, answers: map[identity.PublicKey]adminapi.OrgBridgeAnswer{}}
	e.joins[p.Org] = j
	e.mu.Unlock()
	if err := e.host.Save(); err != nil {
		return res, err
	}
	e.log.Info("join request sent", "org", p.Org.String(), "name", p.Name, "groups", strings.Join(groups, ","), "bridges", len(targets))
	e.host.Event("org_join_requested", "", fmt.Sprintf("asked to join %s as %s", p.Org, p.Name))
	tg, got, errs := e.ask(ctx, waitKey{p.Org, uint64(now.Unix())}, false, targets, j.msg())
	if groups == nil {
		groups = []string{}
	}
	res = adminapi.OrgJoinResponse{Org: p.Org.String(), Name: p.Name, Groups: groups, Requested: now.Format(time.RFC3339), Node: e.self.String(),
		Bridges: e.bridgeAnswers(tg, got, errs, false)}
	return res, nil
}

// parseQuery reads a signed query for op and checks it is for this node
// and fresh, so that the admin sees a clear error before the bridges do.
func (e *Requests) parseQuery(text string, op org.JoinOp) (*org.JoinQuery, error) {
	q, err := org.ParseJoinQuery(text)
	if err != nil {
		return nil, err
	}
	if q.Op != op {
		return nil, fmt.Errorf("join query asks to %s, not to %s", q.Op, op)
	}
	if q.Via != e.self {
		return nil, fmt.Errorf("join query signed for node %s to forward; this node is %s", q.Via, e.self)
	}
	if err := q.Verify(e.clock.Now()); err != nil {
		return nil, err
	}
	return q, nil
}

// List forwards a list query the organisation signed to this node's
// bridges and merges their answers.
func (e *Requests) List(ctx context.Context, text string) (adminapi.OrgRequestsResponse, error) {
	var res adminapi.OrgRequestsResponse
	q, err := e.parseQuery(text, org.JoinList)
	if err != nil {
		return res, err
	}
	targets, err := e.targets(identity.PublicKey{})
	if err != nil {
		return res, err
	}
	tg, got, errs := e.ask(ctx, waitKey{q.Org, q.Nonce}, true, targets, &orgsync.Msg{Type: orgsync.TypeJoinQuery, Data: q.Binary()})
	res = adminapi.OrgRequestsResponse{Org: q.Org.String(), Requests: []adminapi.OrgJoinItem{}, Bridges: e.bridgeAnswers(tg, got, errs, true)}
	byNode := map[identity.PublicKey]int{}
	for _, t := range tg {
		a := got[t]
		if a == nil {
			continue
		}
		idx := slices.Sorted(func(yield func(uint16) bool) {
			for i := range a.items {
				if !yield(i) {
					return
				}
			}
		})
		for _, i := range idx {
			it := a.items[i]
			node := identity.PublicKey(it.Node)
			if k, ok := byNode[node]; ok {
				res.Requests[k].Bridges = append(res.Requests[k].Bridges, t.String())
				continue
			}
			groups := it.Groups
			if groups == nil {
				groups = []string{}
			}
			byNode[node] = len(res.Requests)
			res.Requests = append(res.Requests, adminapi.OrgJoinItem{Node: node.String(), Address: node.Address().String(), Name: it.Name, Groups: groups,
				Requested: time.Unix(it.Created, 0).UTC().Format(time.RFC3339), State: it.State.String(), Bridges: []string{t.String()}})
		}
	}
	return res, nil
}

// Reject forwards a rejection the organisation signed to the bridges.
func (e *Requests) Reject(ctx context.Context, text string) (adminapi.OrgDecisionResponse, error) {
	var res adminapi.OrgDecisionResponse
	q, err := e.parseQuery(text, org.JoinReject)
	if err != nil {
		return res, err
	}
	targets, err := e.targets(identity.PublicKey{})
	if err != nil {
		return res, err
	}
	tg, got, errs := e.ask(ctx, waitKey{q.Org, q.Nonce}, false, targets, &orgsync.Msg{Type: orgsync.TypeJoinQuery, Data: q.Binary()})
	return adminapi.OrgDecisionResponse{Org: q.Org.String(), Node: q.Node.String(), Bridges: e.bridgeAnswers(tg, got, errs, false)}, nil
}

// Approve hands a certificate the organisation signed to the bridges,
// which pass it on to the node that asked.
func (e *Requests) Approve(ctx context.Context, text string) (adminapi.OrgDecisionResponse, error) {
	var res adminapi.OrgDecisionResponse
	c, err := org.ParseCert(text)
	if err != nil {
		return res, err
	}
	if err := c.Verify(c.Org, e.clock.Now()); err != nil {
		return res, err
	}
	targets, err := e.targets(identity.PublicKey{})
	if err != nil {
		return res, err
	}
	tg, got, errs := e.ask(ctx, waitKey{c.Org, c.Serial}, false, targets, &orgsync.Msg{Type: orgsync.TypeJoinCert, Data: c.Binary()})
	e.log.Info("approval sent to the bridges", "org", c.OrgName, "peer", c.Node.ShortString(), "name", c.Name, "serial", c.SerialString())
	return adminapi.OrgDecisionResponse{Org: c.Org.String(), Node: c.Node.String(), Serial: c.SerialString(), Bridges: e.bridgeAnswers(tg, got, errs, false)}, nil
}

// Handle acts on a join message from a bridge (on the engine's
// goroutine); false if m is not one.
func (e *Requests) Handle(bridge identity.PublicKey, m *orgsync.Msg) bool {
	switch m.Type {
	case orgsync.TypeJoinAck:
		e.mu.Lock()
		if j := e.joins[m.Org]; j != nil && uint64(j.created.Unix()) == m.Echo {
			j.answers[bridge] = adminapi.OrgBridgeAnswer{Bridge: bridge.String(), State: m.Status.String(), Error: m.Text}
		}
		if w := e.waits[waitKey{m.Org, m.Echo}]; w != nil {
			if a := w.answers[bridge]; a != nil && !a.got {
				a.got, a.status, a.text = true, m.Status, m.Text
				e.checkDoneLocked(w)
			}
		}
		e.mu.Unlock()
		if m.Status == orgsync.JoinRejected {
			e.log.Info("bridge says the organisation rejected this node's join request", "bridge", bridge.ShortString(), "org", org.PublicKey(m.Org).String())
		}
	case orgsync.TypeJoinItem:
		e.mu.Lock()
		if w := e.waits[waitKey{m.Org, m.Echo}]; w != nil && w.list {
			if a := w.answers[bridge]; a != nil && a.status == 0 {
				a.got, a.total = true, int(m.Total)
				if a.items == nil {
					a.items = map[uint16]orgsync.Join{}
				}
				if m.Total > 0 && len(a.items) < maxListItems {
					a.items[m.Index] = m.Join
				}
				if len(a.items) >= maxListItems {
					a.total = len(a.items)
				}
				e.checkDoneLocked(w)
			}
		}
		e.mu.Unlock()
	case orgsync.TypeJoinCert:
		e.deliver(bridge, m.Data)
	default:
		return false
	}
	return true
}

// deliver takes a certificate a bridge delivered: only one for this
// node's key, of an organisation this node asked to join, that verifies
// against that organisation's key; the host installs it (and refuses it
// if it does not fit what the node trusts, or is revoked). Then the node
// is a member at once and stays one across restarts.
func (e *Requests) deliver(bridge identity.PublicKey, b []byte) {
	c, err := org.DecodeCert(b)
	if err == nil && c.Node != e.self {
		err = fmt.Errorf("certificate %q is for node %s, not this node", c.Name, c.Node.ShortString())
	}
	var j *pendingJoin
	if err == nil {
		e.mu.Lock()
		j = e.joins[c.Org]
		e.mu.Unlock()
		if j == nil {
			if e.host.Holds(c) {
				return
			}
			err = fmt.Errorf("certificate %q of organisation %s: this node did not ask to join it", c.Name, c.Org)
		}
	}
	if err == nil {
		err = c.Verify(c.Org, e.clock.Now())
	}
	if err == nil {
		err = e.host.Install(c)
	}
	if err != nil {
		now := e.clock.Now()
		e.mu.Lock()
		loud := now.Sub(e.refusedLog) > 10*time.Second
		if loud {
			e.refusedLog = now
		}
		e.mu.Unlock()
		if loud {
			e.log.Warn("certificate from a bridge refused", "bridge", bridge.ShortString(), "err", err)
			e.host.Event("org_join_refused", "", err.Error())
		}
		return
	}
	e.mu.Lock()
	delete(e.joins, c.Org)
	e.mu.Unlock()
	if err := e.host.Save(); err != nil {
		e.log.Error("joined organisation, but cannot save the certificate: it is lost at restart", "org", c.OrgName, "err", err)
	}
	e.log.Info("joined organisation: certificate received and installed", "org", c.OrgName, "name", c.Name, "groups", strings.Join(c.Groups, ","), "serial", c.SerialString(), "not_after", c.NotAfter.Format(time.RFC3339), "bridge", bridge.ShortString())
	e.host.Event("org_joined", "", fmt.Sprintf("joined %s as %s (groups %s), certificate %s until %s", c.OrgName, c.Name, strings.Join(c.Groups, ","), c.SerialString(), c.NotAfter.Format(time.RFC3339)))
	// The request is done: the bridges that hold it drop it (one that
	// delivered drops it also when the node presents its certificate).
	withdraw := &orgsync.Msg{Type: orgsync.TypeJoin, Org: c.Org, Join: orgsync.Join{Created: j.created.Unix(), Withdraw: true}}
	if b, err := withdraw.Marshal(); err == nil {
		for _, br := range e.host.Bridges() {
			e.host.SendBridge(br, b)
		}
	}
}

// Registered sends the pending requests that go to bridge b, which
// (again) registered this node.
func (e *Requests) Registered(b identity.PublicKey) {
	e.mu.Lock()
	var msgs []*orgsync.Msg
	for _, j := range e.joins {
		if j.to(b) && j.answers[b].State != orgsync.JoinRejected.String() {
			msgs = append(msgs, j.msg())
		}
	}
	e.mu.Unlock()
	for _, m := range msgs {
		if p, err := m.Marshal(); err == nil {
			e.host.SendBridge(b, p)
		}
	}
}

// Tick drops requests older than joinTTL and sends the others again
// every joinResend (so that a certificate approved while a delivery was
// lost, or a bridge that restarted, catches up).
func (e *Requests) Tick(now time.Time) {
	e.mu.Lock()
	if len(e.joins) == 0 || now.Sub(e.sent) < joinResend {
		e.mu.Unlock()
		return
	}
	e.sent = now
	var expired []org.PublicKey
	for k, j := range e.joins {
		if now.Sub(j.created) > joinTTL {
			delete(e.joins, k)
			expired = append(expired, k)
		}
	}
	e.mu.Unlock()
	for _, k := range expired {
		e.log.Warn("join request expired unanswered", "org", k.String(), "after", joinTTL)
		e.host.Event("org_join_expired", "", fmt.Sprintf("request to join %s expired after %s", k, joinTTL))
	}
	if len(expired) > 0 {
		if err := e.host.Save(); err != nil {
			e.log.Warn("cannot save the organisation state", "err", err)
		}
	}
	for _, b := range e.host.Bridges() {
		e.Registered(b)
	}
}

// Status is this node's request to join organisation k, if any, for
// display.
func (e *Requests) Status(k org.PublicKey) *adminapi.OrgJoin {
	e.mu.Lock()
	defer e.mu.Unlock()
	j := e.joins[k]
	if j == nil {
		return nil
	}
	groups := j.groups
	if groups == nil {
		groups = []string{}
	}
	st := &adminapi.OrgJoin{Name: j.name, Groups: groups, Requested: j.created.Format(time.RFC3339), Bridges: []adminapi.OrgBridgeAnswer{}}
	for _, a := range j.answers {
		st.Bridges = append(st.Bridges, a)
	}
	slices.SortFunc(st.Bridges, func(a, b adminapi.OrgBridgeAnswer) int { return strings.Compare(a.Bridge, b.Bridge) })
	return st
}

// Untrusted lists, as organisations, those this node asked to join but
// does not trust yet (Name: the last label of the name asked for).
func (e *Requests) Untrusted() []adminapi.OrgStatus {
	e.mu.Lock()
	var keys []org.PublicKey
	for k := range e.joins {
		keys = append(keys, k)
	}
	e.mu.Unlock()
	keys = slices.DeleteFunc(keys, func(k org.PublicKey) bool { _, _, ok := e.host.Trusted(k); return ok })
	slices.SortFunc(keys, func(a, b org.PublicKey) int { return strings.Compare(a.String(), b.String()) })
	var out []adminapi.OrgStatus
	for _, k := range keys {
		js := e.Status(k)
		if js == nil {
			continue
		}
		name := js.Name
		if i := strings.LastIndexAny(name, ".@"); i >= 0 {
			name = name[i+1:]
		}
		out = append(out, adminapi.OrgStatus{Name: name, PublicKey: k.String(), Join: js, JoinOnly: true})
	}
	return out
}
