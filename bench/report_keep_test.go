package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tomoe-net/tomoe/bench/internal/mdsection"
)

// Re-rendering the report keeps the sections that bench/sim and the A/B
// tests wrote into it.
func TestRenderKeepsSimulation(t *testing.T) {
	out := filepath.Join(t.TempDir(), "RESULTS.md")
	sim := mdsection.Set("# old report\n", "simulation", "## Simulation\n\n| N | 100 |\n")
	sim = mdsection.Set(sim, "kept-changes", "## Kept changes\n\n| before | after |\n")
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
	for _, name := range keptSections {
		if mdsection.Get(got, name) != mdsection.Get(sim, name) {
			t.Fatalf("the %s section was lost:\n%s", name, got[max(0, len(got)-400):])
		}
	}
}
