package localsvc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/node/changes"
	"github.com/tomoe-net/tomoe/internal/services"
	"github.com/tomoe-net/tomoe/internal/statefile"
)

// TestExposeThroughTheArea: the area's changes reach the exposer, are
// refused with the right status, and persist for the next start.
func TestExposeThroughTheArea(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	file := statefile.File{Path: filepath.Join(t.TempDir(), "services.json"), What: "test state"}
	open := func() *changes.Store {
		st, err := changes.Open(file, log)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	var listened []string
	cfg := Config{Log: log, Addr: netip.MustParseAddr("fc00::1"), Changes: open(),
		Expose: []services.Service{{Proto: "tcp", Port: 80, Target: "127.0.0.1:8080"}},
		Listen: func(proto string, port uint16) (io.Closer, error) {
			listened = append(listened, proto)
			if proto == "udp" {
				return net.ListenPacket("udp", "127.0.0.1:0")
			}
			return net.Listen("tcp", "127.0.0.1:0")
		}}
	s, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	code := func(err error) int {
		var re *adminapi.RequestError
		if errors.As(err, &re) {
			return re.Code
		}
		return 0
	}
	for _, c := range []struct {
		req  adminapi.ExposeChange
		want int
	}{
		{adminapi.ExposeChange{Proto: "sctp", Port: 1, Target: "127.0.0.1:1"}, 400},
		{adminapi.ExposeChange{Proto: "tcp", Port: 0, Target: "127.0.0.1:1"}, 400},
		{adminapi.ExposeChange{Proto: "tcp", Port: 81, Target: "nowhere"}, 400},
		{adminapi.ExposeChange{Proto: "tcp", Port: 80, Target: "127.0.0.1:9"}, 409},
		{adminapi.ExposeChange{Remove: true, Proto: "udp", Port: 99}, 404},
	} {
		if _, err := s.ChangeExpose(ctx, c.req); code(err) != c.want {
			t.Errorf("%+v: %v, want %d", c.req, err, c.want)
		}
	}
	if _, err := s.ChangeExpose(ctx, adminapi.ExposeChange{Proto: "udp", Port: 53, Target: "127.0.0.1:5353"}); err != nil {
		t.Fatal(err)
	}
	st, err := s.ChangeExpose(ctx, adminapi.ExposeChange{Remove: true, Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Expose) != 1 || st.Expose[0].Proto != "udp" || st.Expose[0].Address != "[fc00::1]:53" {
		t.Fatalf("after the changes: %+v", st.Expose)
	}
	s.Close()

	cfg.Changes = open()
	s2, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	st, _ = s2.Services(ctx)
	if len(st.Expose) != 1 || st.Expose[0].Port != 53 {
		t.Fatalf("after a restart: %+v", st.Expose)
	}
	if st.Connect == nil || st.Proxies == nil {
		t.Fatal("empty lists must be [] in JSON, not null")
	}
}
