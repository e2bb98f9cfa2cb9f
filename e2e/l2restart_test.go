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

// TestL2VNIClashRestart: a member of group:acme/office (mallory) ground
// its key until its tunnel to s would have the VXLAN ID of victim's,
// with a lower address too. While s runs, victim keeps the tunnel (it
// held it first). After s restarts it starts with no certificates, and
// both greet it again in any order: victim keeps the tunnel, because s
// remembers who held each one (l2-tunnels.json beside its key). With
// victim away when s restarts, mallory still does not get the ID (it is
// kept for victim); without the file it does: the clash is real.
func TestL2VNIClashRestart(t *testing.T) {
	parallel(t, 45*time.Second)
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

	// s restarts, victim and mallory both up: victim keeps the tunnel,
	// and mallory never has it meanwhile.
	s.stop(t)
	mem := filepath.Join(s.dir, "l2-tunnels.json")
	if fi, err := os.Stat(mem); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("s's tunnel memory: %v, %v", fi, err)
	}
	if b, _ := os.ReadFile(mem); !strings.Contains(string(b), victim.addr()) || strings.Contains(string(b), mallory.addr()) {
		t.Fatalf("s's tunnel memory names the wrong far end:\n%s", b)
	}
	s.start(t)
	testnet.WaitFor(t, 30*time.Second, "s greeted both again, and victim has the tunnel", func() bool {
		if seg := office(); len(seg.Members) > 0 && seg.Members[0].Address == mallory.addr() {
			t.Fatalf("after s restarted, mallory took victim's VXLAN ID: %+v", seg)
		}
		return knows(victim) && knows(mallory) && holds(victim)
	})
	if office().Members[0].VNI != vni {
		t.Errorf("victim's tunnel has VXLAN ID %d, not %d", office().Members[0].VNI, vni)
	}

	// victim is away when s restarts: its ID is kept for it.
	victim.stop(t)
	s.stop(t)
	s.start(t)
	leftOut := func() bool {
		seg := office()
		return len(seg.Members) == 0 && seg.LeftOut == 1
	}
	testnet.WaitFor(t, 30*time.Second, "s knows mallory's certificate again, and leaves it out", func() bool { return knows(mallory) && leftOut() })
	if out := s.proc.Output(); !strings.Contains(out, "awaited") {
		t.Errorf("s did not say why mallory is left out:\n%s", out)
	}

	// The control: without the memory, mallory takes the ID.
	s.stop(t)
	if err := os.Remove(mem); err != nil {
		t.Fatal(err)
	}
	s.start(t)
	testnet.WaitFor(t, 30*time.Second, "without the memory, mallory has the tunnel", func() bool {
		seg := office()
		return knows(mallory) && len(seg.Members) == 1 && seg.Members[0].Address == mallory.addr() && seg.Members[0].VNI == vni
	})
}
