package peers

import (
	"net/netip"
	"time"
)

// The wildcard quota. A key that only a "*" rule lets in is the cheap way
// to make a node hold state: anyone can make keys. Such peers get their
// own quota (Limits.MaxWildcard, at most Limits.MaxWildcardPerSource from
// one source, at most Limits.WildcardRate new ones per second). When it is
// full, the node makes room by removing the oldest peer that never
// answered (Unanswered), or refuses the newcomer. Peers the config or a
// rule names, and peers the node wants itself, never count against it.

// Refusal says why a wildcard peer cannot be admitted; "" admits it.
type Refusal string

// Refusals of AdmitWildcard.
const (
	RefusedDynamic   Refusal = "too many peers admitted by policy"
	RefusedSource    Refusal = "too many peers that only a \"*\" rule admits from one source"
	RefusedRate      Refusal = "too many new peers that only a \"*\" rule admits per second"
	RefusedQuotaFull Refusal = "the quota of peers that only a \"*\" rule admits is full of peers with live sessions"
)

// AdmitWildcard decides whether one more wildcard peer from source fits,
// spending a token of the rate. The rate comes before the quota: a
// newcomer over the rate must not make room by removing a peer, or a
// flood above the rate would push out, one per initiation, the peers
// still in their first handshake. RefusedQuotaFull comes last, its token
// spent: the caller may then make room (Unanswered, Remove) and admit the
// newcomer without asking again (removing a peer never fills the
// source's share or the dynamic limit).
func (t *Table) AdmitWildcard(source netip.Addr, now time.Time) Refusal {
	switch {
	case t.DynamicFull():
		return RefusedDynamic
	case source.IsValid() && t.wildBy[source] >= t.limits.MaxWildcardPerSource:
		return RefusedSource
	case !t.wildRate.AllowN(now, 1):
		return RefusedRate
	case t.wildCount >= t.limits.MaxWildcard:
		return RefusedQuotaFull
	}
	return ""
}

// Mark counts p against the wildcard quota under source and appends it to
// the unanswered list.
func (t *Table) Mark(p *Peer, source netip.Addr) {
	if p.wildcard {
		return
	}
	p.wildcard, p.source = true, source
	t.wildCount++
	if source.IsValid() {
		t.wildBy[source]++
	}
	p.unanswered = t.unanswered.PushBack(p)
}

// Unmark takes p out of the wildcard quota: it is removed, or the node
// wants it now.
func (t *Table) Unmark(p *Peer) {
	if !p.wildcard {
		return
	}
	p.wildcard = false
	t.wildCount--
	if p.source.IsValid() {
		if t.wildBy[p.source]--; t.wildBy[p.source] <= 0 {
			delete(t.wildBy, p.source)
		}
	}
	t.Answered(p)
}

// Answered takes p off the unanswered list; it keeps counting against the
// quota. Each peer leaves the list once, so making room is O(1) amortised.
func (t *Table) Answered(p *Peer) {
	if p.unanswered != nil {
		t.unanswered.Remove(p.unanswered)
		p.unanswered = nil
	}
}

// Unanswered returns the oldest wildcard peer still on the unanswered
// list, or nil.
func (t *Table) Unanswered() *Peer {
	if e := t.unanswered.Front(); e != nil {
		return e.Value.(*Peer)
	}
	return nil
}

// WildcardCount is the number of peers counting against the quota, and
// WildcardFrom those of them from source.
func (t *Table) WildcardCount() int                 { return t.wildCount }
func (t *Table) WildcardFrom(source netip.Addr) int { return t.wildBy[source] }
