package node

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/clock"
	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/node/l2held"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// l2Restarts plans one node's segments across restarts: each start is a
// new Node with the same key directory (where the memory is kept),
// planning as startL2 and applyL2 do (planL2Held) with the directory it
// has at that moment. Only the planning: no host is set up.
type l2Restarts struct {
	t    *testing.T
	dir  string
	pub  identity.PublicKey
	clk  *clock.Manual
	segs []config.L2Segment
	logs *logLines

	n    *Node
	plan *l2Plan
}

func newL2Restarts(t *testing.T, segs []config.L2Segment) *l2Restarts {
	k, err := identity.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return &l2Restarts{t: t, dir: t.TempDir(), pub: k.Public(), clk: clock.NewManual(time.Unix(1_800_000_000, 0)), segs: segs}
}

// start makes a new process: no plan, no directory yet.
func (r *l2Restarts) start() {
	cfg := &config.Config{KeyFile: filepath.Join(r.dir, "node.key")}
	cfg.TUN.MTU = 1400
	r.logs = &logLines{}
	r.n = &Node{cfg: cfg, pub: r.pub, clock: r.clk, l2Sync: make(chan struct{}, 1),
		log: slog.New(slog.NewTextHandler(testWriter{r.t, "node", r.logs}, nil))}
	r.plan = nil
	r.meet(policy.Directory{})
}

// meet plans with the directory d (the certificates the node holds now).
func (r *l2Restarts) meet(d policy.Directory) []netip.Addr {
	r.n.dir.Store(&d)
	prev := r.plan
	r.plan = r.n.planL2Held(r.segs, prev)
	r.n.logLeftOut(prev, r.plan)
	return r.plan.segs[0].Remotes
}

func (r *l2Restarts) file() string { return l2held.Path(r.n.cfg.KeyFile) }

func office(name string) []policy.Member {
	return []policy.Member{{Org: "acme", Name: name, Groups: []string{"office"}}}
}

// TestL2RestartKeepsTheHolder: a node restarts with the file it wrote:
// victim, which held the tunnel, keeps its VXLAN ID whichever of the two
// greets the node first, though the attacker ground both the clash and
// the lower address. Once victim turns out not to be a member (its
// certificate held, in another group), or the wait ends, the ID is free.
func TestL2RestartKeepsTheHolder(t *testing.T) {
	segs := []config.L2Segment{{Name: "office", Members: []policy.Identity{mustIdentity(t, "group:acme/office")}}}
	r := newL2Restarts(t, segs)
	attacker, victim := vniClash(t, r.pub.Address(), "office", "office")
	var both policy.Directory
	dirs := func() { both = policy.Directory{victim: office("alice.acme"), attacker: office("mallory.acme")} }
	dirs()
	r.start()
	if got := r.meet(policy.Directory{victim: both[victim]}); !slices.Equal(got, []netip.Addr{victim}) {
		t.Fatalf("first run, victim: %v", got)
	}
	if got := r.meet(both); !slices.Equal(got, []netip.Addr{victim}) {
		t.Fatalf("first run, then the attacker: %v", got)
	}
	if fi, err := os.Stat(r.file()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the memory file: %v, %v", fi, err)
	}

	// Restart; the attacker greets first, then victim.
	r.start()
	if got := r.meet(policy.Directory{attacker: both[attacker]}); len(got) != 0 {
		t.Fatalf("after a restart, the attacker first: %v took victim's ID", got)
	}
	if _, ok := r.logs.find("a tunnel left out", "awaited"); !ok {
		t.Error("no warning that the attacker was left out for an awaited far end")
	}
	if got := r.meet(both); !slices.Equal(got, []netip.Addr{victim}) {
		t.Fatalf("after a restart, then victim: %v", got)
	}
	// Restart; both greet at once.
	r.start()
	if got := r.meet(both); !slices.Equal(got, []netip.Addr{victim}) {
		t.Fatalf("after a restart, both at once: %v", got)
	}

	// Restart; victim's new certificate is for another group: not a
	// member, so nothing is kept for it.
	r.start()
	moved := policy.Directory{victim: {{Org: "acme", Name: "alice.acme", Groups: []string{"sales"}}}, attacker: both[attacker]}
	if got := r.meet(moved); !slices.Equal(got, []netip.Addr{attacker}) {
		t.Fatalf("victim no longer a member: %v", got)
	}
	if b, _ := os.ReadFile(r.file()); strings.Contains(string(b), victim.String()) {
		t.Errorf("the memory still names victim, no longer a member:\n%s", b)
	}

	// Another node: victim held the tunnel; after a restart it never
	// greets. The attacker gets the ID when the wait ends, and the node
	// replans then by itself (l2Sync).
	r = newL2Restarts(t, segs)
	attacker, victim = vniClash(t, r.pub.Address(), "office", "office")
	dirs()
	r.start()
	if got := r.meet(policy.Directory{victim: both[victim]}); !slices.Equal(got, []netip.Addr{victim}) {
		t.Fatalf("second node, victim: %v", got)
	}
	r.start()
	if got := r.meet(policy.Directory{attacker: both[attacker]}); len(got) != 0 {
		t.Fatalf("victim awaited: %v", got)
	}
	select {
	case <-r.n.l2Sync:
		t.Fatal("a replan asked for before the wait ended")
	default:
	}
	r.clk.Advance(l2held.Await)
	select {
	case <-r.n.l2Sync:
	default:
		t.Fatal("no replan asked for when the wait ended")
	}
	if got := r.meet(policy.Directory{attacker: both[attacker]}); !slices.Equal(got, []netip.Addr{attacker}) {
		t.Fatalf("after the wait: %v", got)
	}
}

// TestL2RestartBadMemory: a corrupt or oversized memory file is a
// warning and an empty memory at start (the lower address wins, as
// before the file existed), never a failed start or a panic; the node
// writes a good file at once.
func TestL2RestartBadMemory(t *testing.T) {
	segs := []config.L2Segment{{Name: "office", Members: []policy.Identity{mustIdentity(t, "group:acme/office")}}}
	for name, body := range map[string][]byte{
		"corrupt":   []byte(`{"version": 1, "self": "fc00::1", "segments": [{"name": "office", "tunnels": [{"vni": 5, "rem`),
		"oversized": append([]byte(`{"version": 1, "segments": [], "pad": "`), append([]byte(strings.Repeat("x", 4<<20)), `"}`...)...),
		"garbage":   {0xff, 0x00, 0x7b},
	} {
		t.Run(name, func(t *testing.T) {
			r := newL2Restarts(t, segs)
			attacker, victim := vniClash(t, r.pub.Address(), "office", "office")
			both := policy.Directory{victim: office("alice.acme"), attacker: office("mallory.acme")}
			if err := os.WriteFile(l2held.Path(filepath.Join(r.dir, "node.key")), body, 0o600); err != nil {
				t.Fatal(err)
			}
			r.start()
			if _, ok := r.logs.find("level=WARN", "starting without the memory", "corrupt"); !ok {
				t.Error("no warning")
			}
			if got := r.meet(both); !slices.Equal(got, []netip.Addr{attacker}) {
				t.Errorf("with no memory: %v", got)
			}
			if b, err := os.ReadFile(r.file()); err != nil || len(b) > 1024 || !strings.Contains(string(b), attacker.String()) {
				t.Errorf("the file was not rewritten: %v\n%.200s", err, b)
			}
		})
	}
}
