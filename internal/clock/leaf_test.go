package clock

import (
	"go/build"
	"strings"
	"testing"
)

// The package imports only the standard library, so that every package
// of the module may take a Clock without an import cycle.
func TestImportsOnlyTheStandardLibrary(t *testing.T) {
	p, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range p.Imports {
		if first, _, _ := strings.Cut(imp, "/"); strings.Contains(first, ".") {
			t.Errorf("imports %s: the clock package must stay a leaf of the standard library", imp)
		}
	}
}
