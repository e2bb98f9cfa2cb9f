package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/l2"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// clashingKeys grinds two node keys whose tunnels to the node at self
// in segment seg would have one VXLAN ID, as a member holding a group
// certificate can (a birthday search here: some thousands of keys),
// and returns them lower address first.
func clashingKeys(t *testing.T, self identity.PublicKey, seg string) (low, high identity.PrivateKey) {
	t.Helper()
	seen := map[uint32]identity.PrivateKey{}
	for range 1 << 16 {
		k, err := identity.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		v := l2.VNI(seg, self.Address(), k.Public().Address())
		if o, ok := seen[v]; ok {
			if k.Public().Address().Less(o.Public().Address()) {
				return k, o
			}
			return o, k
		}
		seen[v] = k
	}
	t.Fatal("no clash in 65536 keys")
	return
}

// setKey gives n the key k (before its first start).
func (n *nodeDir) setKey(t *testing.T, k identity.PrivateKey) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(n.dir, "node.key"), []byte(k.Base64()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.key = k
}

// TestL2VNIClashRestart: a member of group:acme/office ground its key
// until its tunnel to s would have the VXLAN ID of victim's, with a
// lower address too. While s runs, victim keeps the tunnel (it held it
// first); after s restarts it still does, because s remembers who held
// each tunnel (l2-tunnels.json beside its key). Without that file the
// lower address wins at the start: the clash is real.
func TestL2VNIClashRestart(t *testing.T) {
	testnet.RequireRoot(t)
	lan := testnet.NewLAN(t, "s", "victim", "mallory")
	s := newL2Site(t, lan, "s", "")
	victim := newL2Site(t, lan, "victim", "")
	mallory := newL2Site(t, lan, "mallory", "")
	low, high := clashingKeys(t, s.pub(), "office")
	mallory.setKey(t, low)
	victim.setKey(t, high)
	acme := newOrgKey(t, t.TempDir(), "acme")
	segment := "[[l2]]\nname = \"office\"\nmembers = [\"group:acme/office\"]\n"
	s.body = peerBlock(victim.nodeDir, victim.endpoint()) + peerBlock(mallory.nodeDir, mallory.endpoint()) +
		acme.block(acme.sign(t, s.nodeDir, "s.acme", "office"), "") + segment
	for _, m := range []*l2Site{victim, mallory} {
		m.body = peerBlock(s.nodeDir, s.endpoint()) + acme.block(acme.sign(t, m.nodeDir, m.name+".acme", "office"), "") + segment
	}
	t.Cleanup(func() {
		if t.Failed() && s.proc != nil && !s.proc.Exited() {
			t.Logf("s: l2 %s\npeers %s", s.cli(t, "l2", "--json"), s.cli(t, "peers"))
		}
	})
	office := func() adminapi.L2Segment {
		t.Helper()
		st := s.l2(t)
		if len(st.Segments) != 1 {
			t.Fatalf("s has %d segments", len(st.Segments))
		}
		return st.Segments[0]
	}
	holds := func(who *l2Site) bool {
		seg := office()
		return len(seg.Members) == 1 && seg.Members[0].Address == who.addr() && seg.LeftOut == 1
	}
	knows := func(who *l2Site) bool {
		p, ok := s.peerOf(t, who.addr())
		return ok && p.CertName == who.name+".acme"
	}

	// victim first: the tunnel is its.
	s.launch(t)
	victim.launch(t)
	s.ready(t)
	victim.ready(t)
	testnet.WaitFor(t, 30*time.Second, "s has a tunnel to victim", func() bool {
		seg := office()
		return len(seg.Members) == 1 && seg.Members[0].Address == victim.addr()
	})
	vni := office().Members[0].VNI
	// mallory comes, greets s (its mesh names members by certificate),
	// and s holds its certificate: the clash leaves mallory out.
	mallory.start(t)
	testnet.WaitFor(t, 30*time.Second, "s knows mallory's certificate and leaves it out", func() bool { return knows(mallory) && holds(victim) })

	// s restarts: victim keeps the tunnel at once, and once both greeted
	// s again.
	s.stop(t)
	mem := filepath.Join(s.dir, "l2-tunnels.json")
	if fi, err := os.Stat(mem); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("s's tunnel memory: %v, %v", fi, err)
	}
	if b, _ := os.ReadFile(mem); !strings.Contains(string(b), victim.addr()) || strings.Contains(string(b), mallory.addr()) {
		t.Fatalf("s's tunnel memory names the wrong far end:\n%s", b)
	}
	s.start(t)
	if !holds(victim) {
		t.Fatalf("after s restarted: %+v (victim %s, mallory %s)", office(), victim.addr(), mallory.addr())
	}
	testnet.WaitFor(t, 30*time.Second, "s greeted both again", func() bool { return knows(victim) && knows(mallory) })
	if !holds(victim) || office().Members[0].VNI != vni {
		t.Fatalf("after s met both again: %+v", office())
	}

	// The control: without the memory, mallory's lower address wins.
	s.stop(t)
	if err := os.Remove(mem); err != nil {
		t.Fatal(err)
	}
	s.start(t)
	if !holds(mallory) {
		t.Errorf("without the memory: %+v: the clash did not favour the lower address, so this test shows nothing", office())
	}
}
