package uicmd

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/webui"
)

// A node's admin API on a real socket, with or without the web UI.
func serve(t *testing.T, withUI bool) func() *adminapi.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "a.sock")
	ln, err := adminapi.Listen(sock, "")
	if err != nil {
		t.Fatal(err)
	}
	var ui *webui.Server
	if withUI {
		uln, err := webui.Listen(netip.MustParseAddrPort("127.0.0.1:0"))
		if err != nil {
			t.Fatal(err)
		}
		ui = webui.New(uln, nil)
		t.Cleanup(func() { ui.Close() })
	}
	srv := adminapi.Serve(ln, nil, webui.Area{Server: ui})
	t.Cleanup(func() { srv.Close() })
	return func() *adminapi.Client { return adminapi.NewClient(sock) }
}

func runUI(t *testing.T, client func() *adminapi.Client, opener func(string) error, args ...string) (string, error) {
	var out bytes.Buffer
	c := Command(&out, client, opener)
	c.SetArgs(args)
	c.SetOut(&out)
	c.SetErr(&out)
	err := c.ExecuteContext(context.Background())
	return out.String(), err
}

func TestUIPrintsAndOpens(t *testing.T) {
	client := serve(t, true)
	var opened []string
	open := func(u string) error { opened = append(opened, u); return nil }
	out, err := runUI(t, client, open)
	if err != nil || !strings.HasPrefix(out, "http://127.0.0.1:") || !strings.Contains(out, "/login?token=") || len(opened) != 0 {
		t.Fatalf("tomoe ui: %q %v (opened %v)", out, err, opened)
	}
	out, err = runUI(t, client, open, "--open")
	if err != nil || len(opened) != 1 || opened[0] != strings.TrimSpace(out) {
		t.Fatalf("tomoe ui --open: %q %v (opened %v)", out, err, opened)
	}
	_, err = runUI(t, client, func(string) error { return errors.New("no display") }, "--open")
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 1 || !strings.Contains(err.Error(), "cannot open a browser") {
		t.Fatalf("tomoe ui --open without a browser: %v", err)
	}
	if _, err := runUI(t, client, open, "extra"); !errors.As(err, &ee) || ee.Code != 2 {
		t.Fatalf("tomoe ui extra: %v", err)
	}
}

func TestUIOff(t *testing.T) {
	_, err := runUI(t, serve(t, false), nil)
	var ae *adminapi.APIError
	if !errors.As(err, &ae) || ae.Code != 409 || !strings.Contains(err.Error(), "[admin]") {
		t.Fatalf("tomoe ui with the UI off: %v", err)
	}
}
