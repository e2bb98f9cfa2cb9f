package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/bench/internal/mdsection"
)

// A small simulation runs end to end: every allowed pair exchanges a
// datagram through real nodes and bridges on the in-memory internet, the
// figures are filled in, revoked clients are refused, and the report
// section lands in the Markdown file without disturbing the rest.
func TestSmallSimulation(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 20 nodes for a few seconds")
	}
	o := defaultOptions()
	o.nodes, o.bridges, o.perNode, o.pairs = 20, 2, 2, 2
	o.settle, o.timeout, o.revoke, o.idle = 0, time.Minute, 3, time.Second
	o.workers, o.parallel = 16, 4
	dir := t.TempDir()
	o.out, o.jsonOut = filepath.Join(dir, "RESULTS.md"), filepath.Join(dir, "results.json")
	res, err := run(context.Background(), o, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + res.text())
	if res.Started != o.nodes || res.Stopped != "" || len(res.Errors) > 0 {
		t.Fatalf("started %d of %d nodes; stopped: %q; errors: %q", res.Started, o.nodes, res.Stopped, res.Errors)
	}
	if res.Pairs != o.nodes*o.pairs || res.PairsOK != res.Pairs {
		t.Fatalf("%d of %d allowed pairs exchanged a datagram (want %d)", res.PairsOK, res.Pairs, o.nodes*o.pairs)
	}
	if res.Lookups < uint64(res.Pairs)/2 || res.Direct+res.Relayed != res.Pairs {
		t.Fatalf("lookups %d, paths %d direct + %d relayed, for %d pairs", res.Lookups, res.Direct, res.Relayed, res.Pairs)
	}
	if res.HeapPerNodeKB <= 0 || res.GoroutinesPerNode <= 0 || res.AllPairsSeconds <= 0 || res.IdleCores <= 0 {
		t.Fatalf("figures missing: %+v", res)
	}
	if res.Revocations != o.revoke || res.RevokedCut != res.Revocations {
		t.Fatalf("%d of %d revoked clients refused", res.RevokedCut, res.Revocations)
	}

	if err := os.WriteFile(o.out, []byte("# tomoe benchmark results\n\n## Bridges\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeReport(o, res); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(o.out)
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	sec := mdsection.Get(md, "simulation")
	if !strings.HasPrefix(md, "# tomoe benchmark results\n\n## Bridges\n") || !strings.Contains(sec, "| N = 20, 2 allowed each |") {
		t.Fatalf("report:\n%s", md)
	}
}

// The crl scenario at N = 100: a revocation list pushed to one member
// reaches every node through the bridge and the peers, the nodes that had
// a session with the revoked member cut it and refuse its next datagram,
// and the figures land in their own table. Times are reported, not
// asserted (the machine is shared).
func TestCRLSpread(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 100 nodes for several seconds")
	}
	o := defaultOptions()
	o.scenario, o.nodes, o.pairs, o.crlPeers = scenarioCRL, 100, 1, 10
	o.timeout, o.crlTimeout, o.workers, o.parallel = 2*time.Minute, 2*time.Minute, 32, 4
	dir := t.TempDir()
	o.out, o.jsonOut = filepath.Join(dir, "RESULTS.md"), filepath.Join(dir, "results.json")
	res, err := run(context.Background(), o, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + res.text())
	if res.Started != o.nodes || res.Stopped != "" || res.CRL == nil {
		t.Fatalf("started %d of %d nodes; stopped: %q; errors: %q", res.Started, o.nodes, res.Stopped, res.Errors)
	}
	c := res.CRL
	if c.Online != o.nodes || c.Reached != c.Online || c.AllSeconds <= 0 {
		t.Fatalf("the list reached %d of %d nodes (all by %.2f s); errors: %q", c.Reached, c.Online, c.AllSeconds, res.Errors)
	}
	// Sessions that did not come up on a loaded machine are reported, not
	// failed; those that did must all be cut.
	if c.Sessions == 0 || c.Cut != c.Sessions || c.Refused != c.Sessions {
		t.Fatalf("sessions with the revoked member: %d live of %d, %d cut, %d refused afterwards", c.Sessions, o.crlPeers, c.Cut, c.Refused)
	}

	// An exchange row and a crl row of the same size live side by side.
	ex := newResult(defaultOptions())
	ex.Nodes, ex.PairsArg, ex.Started = o.nodes, o.pairs, o.nodes
	ex.Scenario = ""
	for _, r := range []*Result{ex, res} {
		if err := writeReport(o, r); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(o.out)
	if err != nil {
		t.Fatal(err)
	}
	sec := mdsection.Get(string(b), "simulation")
	if !strings.Contains(sec, "| N = 100, 1 allowed each |") || !strings.Contains(sec, "### Revocation lists that spread") || !strings.Contains(sec, "| nodes holding the new list | 100 of 100 |") {
		t.Fatalf("report:\n%s", sec)
	}
}
