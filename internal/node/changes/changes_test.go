package changes

import (
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
