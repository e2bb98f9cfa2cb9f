// Package l2held remembers, across restarts of the node, which far end
// held each of its virtual Ethernet tunnels (by segment and VXLAN ID).
//
// Two tunnels of a node with one VXLAN ID cannot both exist, and a
// member named by certificate can grind its key (2^24 tries) until its
// tunnel's ID is a running tunnel's. The node's planner settles such a
// clash for the far end that held the tunnel. While the node runs, that
// is its running plan. After a restart the planner starts with no
// certificates (peers present theirs again after their handshakes, in
// any order), so the far ends remembered here are awaited: each keeps
// its VXLAN ID, against any member not named by key, until it is back
// (a member again, it takes its tunnel), until the node holds its
// certificate and it is not a member, or for Await after the start.
// Without this, the first of the two to greet the node after a restart,
// or the lower address, would take the ID.
//
// The memory never gives a tunnel: the planner looks up the far ends it
// has resolved from the config and the directory now, and an awaited
// far end that is not a member only holds its ID out of others' reach.
// A missing, corrupt or oversized file is an empty memory, with a
// warning: the node starts as it did before this file existed.
package l2held

import (
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/tomoe-net/tomoe/internal/l2"
	"github.com/tomoe-net/tomoe/internal/statefile"
)

// Held gives, by segment name, the far ends of the tunnels that ran.
type Held map[string]map[netip.Addr]bool

// Of returns the far ends of segs' tunnels: segment names to Remotes.
func Of(segs []l2.Segment) Held {
	h := make(Held, len(segs))
	for _, s := range segs {
		m := make(map[netip.Addr]bool, len(s.Remotes))
		for _, r := range s.Remotes {
			m[r] = true
		}
		h[s.Name] = m
	}
	return h
}

func (h Held) equal(o Held) bool {
	return maps.EqualFunc(h, o, func(x, y map[netip.Addr]bool) bool { return maps.Equal(x, y) })
}

// file is the state file's content.
type file struct {
	Version int `json:"version"`
	// Self is this node's address: the IDs are its tunnels'.
	Self     netip.Addr `json:"self"`
	Segments []segment  `json:"segments"`
}

type segment struct {
	Name    string   `json:"name"`
	Tunnels []tunnel `json:"tunnels"`
}

type tunnel struct {
	VNI    uint32     `json:"vni"`
	Remote netip.Addr `json:"remote"`
}

// entryBytes bounds one tunnel's entry as Save indents it (about 70
// bytes: "vni", the longest IPv6 address, the indentation), with room;
// a segment's name and brackets fit in another.
const entryBytes = 128

// Path is where a node whose key file is keyFile keeps the memory:
// beside it, as services.json.
func Path(keyFile string) string { return filepath.Join(filepath.Dir(keyFile), "l2-tunnels.json") }

// Await is how long after a start the node keeps the VXLAN ID of a far
// end it remembers and has not met again: a member that is away when
// the node restarts (a laptop asleep) finds its tunnel's ID free when it
// comes back, within this time. Keeping an ID holds out only a member
// whose tunnel would have the same one: by chance 1 pair in 2^24, else
// one that ground its key for it.
const Await = 24 * time.Hour

// Memory is the memory of one node, in its file. It is not safe for
// concurrent use (the node calls it under its reload lock).
type Memory struct {
	file statefile.File
	self netip.Addr
	last Held // what the file holds (nil: unknown, the next Save writes)
	// awaited are the far ends remembered at Open not back yet; until
	// is when the wait ends.
	awaited Held
	until   time.Time
}

// Open reads the memory at path of the node with address self, whose
// config has segments (their names), at time now. It always returns a
// Memory, awaiting what the file held of those segments (each at most
// l2.MaxTunnels far ends) until now+Await; err, if not nil, is a
// warning: the file could not be read or made no sense, and the memory
// is empty. Entries of other segments, for another node address or with
// a VXLAN ID that is not their tunnel's are dropped.
func Open(path string, self netip.Addr, segments []string, now time.Time) (*Memory, error) {
	m := &Memory{self: self, awaited: Held{}, until: now.Add(Await), file: statefile.File{Path: path, What: "virtual Ethernet tunnel memory",
		Forget: "which member held each VXLAN ID (a member whose tunnel's ID clashes with another's may then take it at this start)",
		// Save writes at most len(segments) x l2.MaxTunnels entries;
		// allow for segments removed from the config since.
		MaxBytes: int64(max(len(segments), 16)+1) * (l2.MaxTunnels + 1) * entryBytes}}
	var st file
	found, err := m.file.Load(&st, &st.Version)
	if err != nil || !found {
		return m, err
	}
	if st.Self != self {
		// Another key's tunnels: their IDs are not this node's.
		return m, nil
	}
	want := map[string]bool{}
	for _, s := range segments {
		want[s] = true
	}
	for _, s := range st.Segments {
		if !want[s.Name] || m.awaited[s.Name] != nil {
			continue
		}
		got := map[netip.Addr]bool{}
		for _, t := range s.Tunnels {
			if len(got) == l2.MaxTunnels {
				break
			}
			if !t.Remote.Is6() || t.Remote == self || t.VNI != l2.VNI(s.Name, self, t.Remote) {
				continue
			}
			got[t.Remote] = true
		}
		m.awaited[s.Name] = got
	}
	m.last = clone(m.awaited)
	return m, nil
}

// Awaited returns the far ends remembered at Open that are not back, by
// segment; none once the wait ended (Until).
func (m *Memory) Awaited(now time.Time) Held {
	if !now.Before(m.until) {
		return nil
	}
	return m.awaited
}

// Until is when the wait for the remembered far ends ends.
func (m *Memory) Until() time.Time { return m.until }

// Save records the plan in force at time now: running are its far ends
// (Of its segments; a segment it lacks is gone from the config), and
// settled reports whether the node now knows what an awaited far end is
// in a segment: a member (with or without a tunnel) or, its certificate
// held, not one. Those, the far ends of segments gone and, once the wait
// ended, all, are awaited no more. It writes the running far ends and
// those still awaited (at most l2.MaxTunnels a segment, the running
// first) if that differs from what the file holds.
func (m *Memory) Save(running Held, settled func(seg string, a netip.Addr) bool, now time.Time) error {
	if !now.Before(m.until) {
		m.awaited = Held{}
	}
	for seg, as := range m.awaited {
		if _, ok := running[seg]; !ok {
			delete(m.awaited, seg)
			continue
		}
		for a := range as {
			if running[seg][a] || settled(seg, a) {
				delete(as, a)
			}
		}
		if len(as) == 0 {
			delete(m.awaited, seg)
		}
	}
	keep := clone(running)
	for seg, as := range m.awaited {
		for _, a := range slices.SortedFunc(maps.Keys(as), netip.Addr.Compare) {
			if len(keep[seg]) == l2.MaxTunnels {
				break
			}
			keep[seg][a] = true
		}
	}
	if m.last != nil && m.last.equal(keep) {
		return nil
	}
	st := file{Version: statefile.Version, Self: m.self, Segments: []segment{}}
	for _, name := range slices.Sorted(maps.Keys(keep)) {
		s := segment{Name: name, Tunnels: []tunnel{}}
		for _, r := range slices.SortedFunc(maps.Keys(keep[name]), netip.Addr.Compare) {
			s.Tunnels = append(s.Tunnels, tunnel{VNI: l2.VNI(name, m.self, r), Remote: r})
		}
		st.Segments = append(st.Segments, s)
	}
	if err := m.file.Save(&st); err != nil {
		m.last = nil
		return err
	}
	m.last = keep
	return nil
}

func clone(h Held) Held {
	c := make(Held, len(h))
	for seg, as := range h {
		c[seg] = maps.Clone(as)
		if c[seg] == nil {
			c[seg] = map[netip.Addr]bool{}
		}
	}
	return c
}
