package changes

import (
	"context"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/tomoe-net/tomoe/internal/config"
	"github.com/tomoe-net/tomoe/internal/policy"
	"github.com/tomoe-net/tomoe/internal/services"
	"github.com/tomoe-net/tomoe/internal/statefile"
)

// TestChangesOutliveRestart: changes recorded by one Store apply, latest
// per item, over the config's lists when the file is opened again; a
// removal takes away even an item the config file lists.
func TestChangesOutliveRestart(t *testing.T) {
	f := statefile.File{Path: filepath.Join(t.TempDir(), "services.json"), What: "test state"}
	log := slog.New(slog.DiscardHandler)
	s, err := Open(f, log)
	if err != nil {
		t.Fatal(err)
	}
	lan, dmz := netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("172.16.0.0/16")
	id, _ := policy.ParseIdentity("*")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.RecordOffer(lan, false, true))  // withdraw the file's offer
	must(s.RecordOffer(dmz, false, false)) // offer a new one...
	must(s.RecordOffer(dmz, true, false))  // ...then change its masquerade
	must(s.RecordAccept(id, dmz, false))
	must(s.RecordExpose("tcp", 80, "127.0.0.1:8080", false))
	must(s.RecordExpose("udp", 53, "", true))

	s2, err := Open(f, log)
	if err != nil {
		t.Fatal(err)
	}
	off, err := s2.Offers([]config.Offer{{Prefix: lan}})
	must(err)
	if len(off) != 1 || off[0].Prefix != dmz || !off[0].Masquerade {
		t.Fatalf("offers after restart: %+v", off)
	}
	acc, err := s2.Accepts(nil)
	must(err)
	if len(acc) != 1 || acc[0].Prefix != dmz || !acc[0].From.Any {
		t.Fatalf("accepts after restart: %+v", acc)
	}
	exp, err := s2.Exposed([]services.Service{{Proto: "udp", Port: 53, Target: "127.0.0.1:53"}})
	must(err)
	if len(exp) != 1 || exp[0].Proto != "tcp" || exp[0].Port != 80 {
		t.Fatalf("exposed after restart: %+v", exp)
	}
}

// TestL2MembersOutliveRestart: members added and removed through the API
// apply over the file's segments after the file is opened again, latest
// per member; the file's own list is not changed in place.
func TestL2MembersOutliveRestart(t *testing.T) {
	f := statefile.File{Path: filepath.Join(t.TempDir(), "services.json"), What: "test state"}
	log := slog.New(slog.DiscardHandler)
	s, err := Open(f, log)
	if err != nil {
		t.Fatal(err)
	}
	id := func(s string) policy.Identity {
		i, err := policy.ParseIdentity(s)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	a, b, c := id("fc00::a"), id("fc00::b"), id("fc00::c")
	file := []config.L2Segment{{Name: "office", Members: []policy.Identity{a, b}}, {Name: "lab", Members: []policy.Identity{a}}}
	for _, ch := range []struct {
		seg     string
		m       policy.Identity
		removed bool
	}{{"office", b, true}, {"office", c, false}, {"office", c, true}, {"office", c, false}, {"gone", c, false}} {
		if err := s.RecordL2Member(ch.seg, ch.m, ch.removed); err != nil {
			t.Fatal(err)
		}
	}
	s2, err := Open(f, log)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s2.L2(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || len(got[0].Members) != 2 || !got[0].Members[0].Same(a) || !got[0].Members[1].Same(c) || len(got[1].Members) != 1 {
		t.Errorf("segments: %+v", got)
	}
	if len(file[0].Members) != 2 || !file[0].Members[1].Same(b) {
		t.Errorf("the file's list changed: %+v", file[0].Members)
	}
}

// countWarns counts the warnings logged through it.
type countWarns struct {
	slog.Handler
	n *int
}

func (h countWarns) Enabled(context.Context, slog.Level) bool { return true }

func (h countWarns) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		*h.n++
	}
	return nil
}

// TestL2RemovedConfigMemberWarnsOnce: a config member removed through the
// API is warned about once, not at each L2 call (the node calls it after
// every new organisation directory, i.e. every peer's certificate).
func TestL2RemovedConfigMemberWarnsOnce(t *testing.T) {
	f := statefile.File{Path: filepath.Join(t.TempDir(), "services.json"), What: "test state"}
	var warns int
	s, err := Open(f, slog.New(countWarns{Handler: slog.DiscardHandler, n: &warns}))
	if err != nil {
		t.Fatal(err)
	}
	b, err := policy.ParseIdentity("fc00::b")
	if err != nil {
		t.Fatal(err)
	}
	file := []config.L2Segment{{Name: "office", Members: []policy.Identity{b}}}
	if err := s.RecordL2Member("office", b, true); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if _, err := s.L2(file); err != nil {
			t.Fatal(err)
		}
	}
	if warns != 1 {
		t.Errorf("%d warnings over 100 directory updates, want 1", warns)
	}
}
