package l2held

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/l2"
	"github.com/tomoe-net/tomoe/internal/statefile"
)

var (
	self = netip.MustParseAddr("fc00::1")
	b    = netip.MustParseAddr("fc00::2")
	c    = netip.MustParseAddr("fc00::3")
)

func held(segs map[string][]netip.Addr) Held {
	h := Held{}
	for name, rs := range segs {
		h[name] = map[netip.Addr]bool{}
		for _, r := range rs {
			h[name][r] = true
		}
	}
	return h
}

func equal(x, y Held) bool {
	return x.equal(y) && y.equal(x)
}

var t0 = time.Unix(1_800_000_000, 0)

// open opens path at t0 and returns what it awaits.
func open(t *testing.T, path string, segments ...string) (*Memory, Held, error) {
	t.Helper()
	m, err := Open(path, self, segments, t0)
	if m == nil {
		t.Fatal("Open returned no memory")
	}
	return m, m.Awaited(t0), err
}

func never(string, netip.Addr) bool { return false }

// TestSaveOpen: what Save wrote, Open reads back (mode 0600, the VXLAN
// IDs beside their far ends); Save writes only a change.
func TestSaveOpen(t *testing.T) {
	path := Path(filepath.Join(t.TempDir(), "state", "node.key"))
	m, h, err := open(t, path, "office", "lab")
	if err != nil || len(h) != 0 {
		t.Fatalf("no file: %v, %v", h, err)
	}
	want := held(map[string][]netip.Addr{"office": {b, c}, "lab": {c}})
	if err := m.Save(want, never, t0); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, err %v", fi.Mode(), err)
	}
	raw, _ := os.ReadFile(path)
	if !strings.Contains(string(raw), fmt.Sprintf(`"vni": %d`, l2.VNI("office", self, b))) {
		t.Errorf("the file does not name b's VXLAN ID:\n%s", raw)
	}
	_, got, err := open(t, path, "office", "lab")
	if err != nil || !equal(got, want) {
		t.Fatalf("read back %v (%v), want %v", got, err, want)
	}
	// Unchanged: no write (the file's time stays).
	past := fi.ModTime().Add(-time.Hour)
	os.Chtimes(path, past, past)
	if err := m.Save(held(map[string][]netip.Addr{"office": {c, b}, "lab": {c}}), never, t0); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); !fi.ModTime().Equal(past) {
		t.Error("Save wrote an unchanged memory")
	}
	if err := m.Save(held(map[string][]netip.Addr{"office": {b}, "lab": {}}), never, t0); err != nil {
		t.Fatal(err)
	}
	if _, got, _ := open(t, path, "office", "lab"); !equal(got, held(map[string][]netip.Addr{"office": {b}, "lab": {}})) {
		t.Errorf("after a change: %v", got)
	}
}

// TestOpenDrops: entries of segments the config no longer has, for
// another node address, naming this node, or whose VXLAN ID is not
// their tunnel's are dropped; a segment keeps at most l2.MaxTunnels.
func TestOpenDrops(t *testing.T) {
	path := Path(filepath.Join(t.TempDir(), "node.key"))
	st := file{Version: statefile.Version, Self: self, Segments: []segment{
		{Name: "office", Tunnels: []tunnel{
			{VNI: l2.VNI("office", self, b), Remote: b},
			{VNI: l2.VNI("office", self, c) ^ 1, Remote: c}, // edited
			{VNI: l2.VNI("office", self, self), Remote: self},
		}},
		{Name: "gone", Tunnels: []tunnel{{VNI: l2.VNI("gone", self, b), Remote: b}}},
		{Name: "big"},
	}}
	for i := range 3 * l2.MaxTunnels {
		r := netip.MustParseAddr(fmt.Sprintf("fc00::1:%x", i+1))
		st.Segments[2].Tunnels = append(st.Segments[2].Tunnels, tunnel{VNI: l2.VNI("big", self, r), Remote: r})
	}
	write := func(v any) {
		t.Helper()
		if err := (statefile.File{Path: path}).Save(v); err != nil {
			t.Fatal(err)
		}
	}
	write(st)
	_, h, err := open(t, path, "office", "big")
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(h["office"], map[netip.Addr]bool{b: true}) || h["gone"] != nil || len(h["big"]) != l2.MaxTunnels {
		t.Errorf("office %v, gone %v, big %d entries", h["office"], h["gone"], len(h["big"]))
	}
	// Another key's memory (key_file replaced): nothing.
	if m, err := Open(path, netip.MustParseAddr("fc00::5"), []string{"office", "big"}, t0); err != nil || len(m.Awaited(t0)) != 0 {
		t.Errorf("for another address: %v, %v", h, err)
	}
}

// TestOpenBadFiles: a corrupt, oversized or unknown-version file is a
// warning and an empty memory, never an error that stops the node nor a
// panic; the next Save writes a good file over it.
func TestOpenBadFiles(t *testing.T) {
	dir := t.TempDir()
	path := Path(filepath.Join(dir, "node.key"))
	// Well-formed, but longer than any Save writes for one segment.
	big := segment{Name: "office"}
	for i := range 10000 {
		r := netip.MustParseAddr(fmt.Sprintf("fc00:1234:5678:9abc:def0:1234:1:%x", i+1))
		big.Tunnels = append(big.Tunnels, tunnel{VNI: l2.VNI("office", self, r), Remote: r})
	}
	huge, _ := json.MarshalIndent(file{Version: 1, Self: self, Segments: []segment{big}}, "", "  ")
	for name, body := range map[string]string{
		"not JSON":        "{",
		"truncated":       `{"version": 1, "self": "fc00::1", "segments": [{"name": "office", "tunnels": [{"vni": 5, "rem`,
		"bad address":     `{"version": 1, "self": "fc00::1", "segments": [{"name": "office", "tunnels": [{"vni": 5, "remote": "nonsense"}]}]}`,
		"bad VNI":         `{"version": 1, "self": "fc00::1", "segments": [{"name": "office", "tunnels": [{"vni": -1, "remote": "fc00::2"}]}]}`,
		"unknown version": `{"version": 9, "self": "fc00::1", "segments": []}`,
		"wrong shape":     `[1, 2, 3]`,
		"oversized":       string(huge),
	} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			m, h, err := open(t, path, "office")
			if err == nil || !strings.Contains(err.Error(), "corrupt") {
				t.Errorf("no warning: %v", err)
			}
			if name == "oversized" && !strings.Contains(err.Error(), "bytes, over the") {
				t.Errorf("oversized: %v", err)
			}
			if m == nil || len(h) != 0 {
				t.Fatalf("memory %v, held %v: want an empty memory", m, h)
			}
			want := held(map[string][]netip.Addr{"office": {b}})
			if err := m.Save(want, never, t0); err != nil {
				t.Fatal(err)
			}
			if _, got, err := open(t, path, "office"); err != nil || !equal(got, want) {
				t.Errorf("after the rewrite: %v, %v", got, err)
			}
		})
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() > 1024 {
		t.Errorf("the rewritten file: %v", err)
	}
}

// FuzzOpen: whatever the file holds, Open neither panics nor returns a
// memory over its bound.
func FuzzOpen(f *testing.F) {
	f.Add([]byte(`{"version": 1, "self": "fc00::1", "segments": [{"name": "office", "tunnels": [{"vni": 5, "remote": "fc00::2"}]}]}`))
	f.Add([]byte(`{"version": 1, "self": "fc00::1", "segments": [{"name": "office"}, {"name": "office"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		path := filepath.Join(t.TempDir(), "l2-tunnels.json")
		if err := os.WriteFile(path, body, 0o600); err != nil {
			t.Fatal(err)
		}
		m, _ := Open(path, self, []string{"office"}, t0)
		if m == nil {
			t.Fatal("no memory")
		}
		h := m.Awaited(t0)
		for name, rs := range h {
			if name != "office" || len(rs) > l2.MaxTunnels {
				t.Fatalf("segment %q with %d far ends", name, len(rs))
			}
		}
	})
}

// TestAwaited: the far ends remembered at Open are awaited (and still
// written) until they are back, settled, their segment is gone, or the
// wait ends; running and awaited together stay within l2.MaxTunnels.
func TestAwaited(t *testing.T) {
	path := Path(filepath.Join(t.TempDir(), "node.key"))
	seed := func() {
		t.Helper()
		m, _, _ := open(t, path, "office", "lab")
		if err := m.Save(held(map[string][]netip.Addr{"office": {b, c}, "lab": {c}}), never, t0); err != nil {
			t.Fatal(err)
		}
	}
	seed()
	m, h, err := open(t, path, "office", "lab")
	if err != nil || !equal(h, held(map[string][]netip.Addr{"office": {b, c}, "lab": {c}})) {
		t.Fatalf("awaited %v, %v", h, err)
	}
	// b is back (a tunnel again), c not yet: c still awaited, and written.
	running := held(map[string][]netip.Addr{"office": {b}, "lab": {}})
	if err := m.Save(running, never, t0); err != nil {
		t.Fatal(err)
	}
	if got := m.Awaited(t0); !equal(got, held(map[string][]netip.Addr{"office": {c}, "lab": {c}})) {
		t.Errorf("after b came back: awaited %v", got)
	}
	if _, got, _ := open(t, path, "office", "lab"); !equal(got, held(map[string][]netip.Addr{"office": {b, c}, "lab": {c}})) {
		t.Errorf("the file after b came back: %v", got)
	}
	// c settles in office (its certificate held, not a member there).
	if err := m.Save(running, func(seg string, a netip.Addr) bool { return seg == "office" && a == c }, t0); err != nil {
		t.Fatal(err)
	}
	if got := m.Awaited(t0); !equal(got, held(map[string][]netip.Addr{"lab": {c}})) {
		t.Errorf("after c settled in office: awaited %v", got)
	}
	// lab leaves the config.
	if err := m.Save(held(map[string][]netip.Addr{"office": {b}}), never, t0); err != nil {
		t.Fatal(err)
	}
	if got := m.Awaited(t0); len(got) != 0 {
		t.Errorf("after lab left the config: awaited %v", got)
	}

	// The wait ends: nothing awaited, nor written.
	seed()
	m, _, _ = open(t, path, "office", "lab")
	if m.Until() != t0.Add(Await) || m.Awaited(t0.Add(Await-time.Second)) == nil || m.Awaited(t0.Add(Await)) != nil {
		t.Errorf("until %v", m.Until())
	}
	if err := m.Save(running, never, t0.Add(Await)); err != nil {
		t.Fatal(err)
	}
	if _, got, _ := open(t, path, "office", "lab"); !equal(got, running) {
		t.Errorf("the file after the wait: %v", got)
	}

	// A full segment keeps its running far ends first.
	seed()
	m, _, _ = open(t, path, "office", "lab")
	full := Held{"office": {}, "lab": {}}
	for i := range l2.MaxTunnels {
		full["office"][netip.MustParseAddr(fmt.Sprintf("fc00::1:%x", i+1))] = true
	}
	if err := m.Save(full, never, t0); err != nil {
		t.Fatal(err)
	}
	if _, got, _ := open(t, path, "office", "lab"); !equal(got, Held{"office": full["office"], "lab": {c: true}}) {
		t.Errorf("a full segment: %d far ends, b %v", len(got["office"]), got["office"][b])
	}
}
