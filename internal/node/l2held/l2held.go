// Package l2held remembers, across restarts of the node, which far end
// held each of its virtual Ethernet tunnels (by segment and VXLAN ID).
//
// Two tunnels of a node with one VXLAN ID cannot both exist, and a
// member named by certificate can grind its key (2^24 tries) until its
// tunnel's ID is a running tunnel's. The node's planner settles such a
// clash for the far end that held the tunnel; while the node runs that
// is its running plan, and after a restart it is this memory: without
// it the newcomer, which can grind a lower address too, would take the
// ID at the next start.
//
// The memory only ranks members: the planner looks up the far ends it
// has resolved from the config and the directory now, so an entry for
// anything that is not a member now gives it nothing, and the next write
// drops it. A missing, corrupt or oversized file is an empty memory, with
// a warning: the node starts as it did before this file existed.
package l2held

import (
	"maps"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/tomoe-net/tomoe/internal/l2"
	"github.com/tomoe-net/tomoe/internal/statefile"
)

// Held gives, by segment name, the far ends of the tunnels that ran.
type Held map[string]map[netip.Addr]bool

// Has reports whether a held a tunnel of segment seg.
func (h Held) Has(seg string, a netip.Addr) bool { return h[seg][a] }

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

// Memory is the memory of one node, in its file. It is not safe for
// concurrent use (the node calls it under its reload lock).
type Memory struct {
	file statefile.File
	self netip.Addr
	last Held // what the file holds (nil: unknown, the next Save writes)
}

// Open reads the memory at path of the node with address self whose
// config has segments (their names). It always returns a Memory and
// what it held of those segments (each at most l2.MaxTunnels far ends);
// err, if not nil, is a warning: the file could not be read or made no
// sense, and the memory is empty. Entries of other segments, for another
// node address or with a VXLAN ID that is not their tunnel's are dropped.
func Open(path string, self netip.Addr, segments []string) (*Memory, Held, error) {
	m := &Memory{self: self, file: statefile.File{Path: path, What: "virtual Ethernet tunnel memory",
		Forget: "which member held each VXLAN ID (a member whose tunnel's ID clashes with another's may then take it at this start)",
		// Save writes at most len(segments) x l2.MaxTunnels entries;
		// allow for segments removed from the config since.
		MaxBytes: int64(max(len(segments), 16)+1) * (l2.MaxTunnels + 1) * entryBytes}}
	var st file
	found, err := m.file.Load(&st, &st.Version)
	if err != nil || !found {
		return m, Held{}, err
	}
	held := Held{}
	if st.Self != self {
		// Another key's tunnels: their IDs are not this node's.
		return m, held, nil
	}
	want := map[string]bool{}
	for _, s := range segments {
		want[s] = true
	}
	for _, s := range st.Segments {
		if !want[s.Name] || held[s.Name] != nil {
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
		held[s.Name] = got
	}
	m.last = held
	return m, held, nil
}

// Save writes held (Of the plan in force) if it differs from what the
// file holds.
func (m *Memory) Save(held Held) error {
	if m.last != nil && m.last.equal(held) {
		return nil
	}
	st := file{Version: statefile.Version, Self: m.self, Segments: []segment{}}
	for _, name := range slices.Sorted(maps.Keys(held)) {
		s := segment{Name: name, Tunnels: []tunnel{}}
		for _, r := range slices.SortedFunc(maps.Keys(held[name]), netip.Addr.Compare) {
			s.Tunnels = append(s.Tunnels, tunnel{VNI: l2.VNI(name, m.self, r), Remote: r})
		}
		st.Segments = append(st.Segments, s)
	}
	if err := m.file.Save(&st); err != nil {
		m.last = nil
		return err
	}
	m.last = make(Held, len(held))
	for name, rs := range held {
		m.last[name] = maps.Clone(rs)
	}
	return nil
}
