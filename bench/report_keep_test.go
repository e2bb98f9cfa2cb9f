package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tomoe-net/tomoe/bench/internal/mdsection"
)

// Re-rendering the report keeps the section that bench/sim wrote into it.
func TestRenderKeepsSimulation(t *testing.T) {
	out := filepath.Join(t.TempDir(), "RESULTS.md")
	sim := mdsection.Set("# old report\n", "simulation", "## Simulation\n\n| N | 100 |\n")
	if err := os.WriteFile(out, []byte(sim), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := render("results.json", out); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got := string(b)
	if !strings.HasPrefix(got, "# tomoe benchmark results") || strings.Contains(got, "# old report") {
		t.Fatalf("the report was not rewritten:\n%.200s", got)
	}
	if mdsection.Get(got, "simulation") != mdsection.Get(sim, "simulation") {
		t.Fatalf("the simulation section was lost:\n%s", got[max(0, len(got)-400):])
	}
}
