package orgs

import (
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/clock"
	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/orgsync"
	"github.com/tomoe-net/tomoe/internal/packet"
	"github.com/tomoe-net/tomoe/internal/policy"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// recorder is the node as a unit test sees it: it counts the chunks sent
// to each peer and knows every address as a peer.
type recorder struct {
	mu     sync.Mutex
	chunks map[netip.Addr]int
}

func (r *recorder) Inject(pkt []byte) {
	var p packet.Parsed
	if p.Decode(pkt) != nil || !p.HasPorts {
		return
	}
	m, err := orgsync.Unmarshal(pkt[p.L4Offset+8:])
	if err != nil || m.Type != orgsync.TypeChunk {
		return
	}
	r.mu.Lock()
	r.chunks[p.Dst]++
	r.mu.Unlock()
}

func (r *recorder) sent(a netip.Addr) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.chunks[a]
}

func (r *recorder) PeerKey(netip.Addr) (identity.PublicKey, bool)    { return identity.PublicKey{1}, true }
func (r *recorder) SessionPeers() []netip.Addr                       { return nil }
func (r *recorder) Cut([]identity.PublicKey, string)                 {}
func (r *recorder) MembersChanged(policy.Directory, []policy.Member) {}
func (r *recorder) OrgRules(string, uint64, []policy.Rule)           {}
func (r *recorder) SendBridge(identity.PublicKey, []byte) error      { return nil }
func (r *recorder) Bridges() []identity.PublicKey                    { return nil }
func (r *recorder) Event(string, string, string)                     {}

// A peer that asks for the same chunks again and again gets at most its
// chunk budget (a burst, then a trickle), and another peer's answers are
// not spent by it.
func TestGetFloodIsBounded(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	s, err := org.Init("acme", filepath.Join(t.TempDir(), "acme.key"))
	if err != nil {
		t.Fatal(err)
	}
	serials := make([]uint64, 2000) // 16 KB: 16 chunks
	for i := range serials {
		serials[i] = uint64(i + 1)
	}
	crl, err := s.Revoke(serials, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	defer close(done)
	rec := &recorder{chunks: map[netip.Addr]int{}}
	clk := clock.NewManual(now)
	e, err := New(Config{Orgs: []Org{{Name: "acme", Key: s.Public()}}, Self: identity.PublicKey{9}, Clock: clk, Done: done, ControlPort: 4611}, rec)
	if err != nil {
		t.Fatal(err)
	}
	go e.Run()
	if _, err := e.Push(crl.Text()); err != nil {
		t.Fatal(err)
	}
	id := orgsync.DocID{Kind: orgsync.KindCRL, Org: s.Public(), Version: crl.Version}
	get, err := (&orgsync.Msg{Type: orgsync.TypeGet, Doc: id, Index: 0, Count: orgsync.ChunksPerGet}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	flooder, other := netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")
	const gets = 200 // 3,200 chunks asked for
	for range gets {
		e.OnControl(flooder, get)
	}
	e.OnControl(other, get)
	// The engine handles its queue in order: once the other peer's 16
	// chunks went out, the flood was handled too.
	testnet.WaitFor(t, 5*time.Second, "the other peer's answer", func() bool { return rec.sent(other) == 16 })
	if got := rec.sent(flooder); got > peerChunkBurst {
		t.Fatalf("a flood of %d Gets was answered with %d chunks; the budget is %d", gets, got, peerChunkBurst)
	}
	if e.Counters().Limited == 0 {
		t.Fatal("nothing counted as limited")
	}
	// A second later the budget has refilled by the rate, no more.
	clk.Advance(time.Second)
	before := rec.sent(flooder)
	for range gets {
		e.OnControl(flooder, get)
	}
	e.OnControl(other, get)
	testnet.WaitFor(t, 5*time.Second, "the other peer's second answer", func() bool { return rec.sent(other) == 32 })
	if got := rec.sent(flooder) - before; got > peerChunkRate+1 {
		t.Fatalf("a second after the burst, the flood got %d more chunks; the rate is %d a second", got, peerChunkRate)
	}
}

func (r *recorder) Settled(identity.PublicKey, bool) {}
