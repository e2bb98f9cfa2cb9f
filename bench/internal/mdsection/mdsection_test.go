package mdsection

import "testing"

func TestSetGetKeep(t *testing.T) {
	doc := "# results\n\n## A\n\nfigures\n"
	withSim := Set(doc, "sim", "## Simulation\n\nrow 1")
	want := doc + "\n<!-- begin sim -->\n## Simulation\n\nrow 1\n<!-- end sim -->\n"
	if withSim != want {
		t.Fatalf("Set appended:\n%q\nwant\n%q", withSim, want)
	}
	again := Set(withSim, "sim", "## Simulation\n\nrow 2\n")
	if Get(again, "sim") != "<!-- begin sim -->\n## Simulation\n\nrow 2\n<!-- end sim -->\n" {
		t.Fatalf("Set replaced:\n%q", again)
	}
	if n := len(again) - len(withSim); n != 0 {
		t.Fatalf("Set replaced, length changed by %d:\n%q", n, again)
	}
	// The bench report rewrites the file without the part: Keep brings it back.
	fresh := "# results\n\n## A\n\nnew figures\n"
	kept := Keep(fresh, again, "sim")
	if Get(kept, "sim") != Get(again, "sim") || kept[:len(fresh)] != fresh {
		t.Fatalf("Keep:\n%q", kept)
	}
	if Keep(fresh, "no part here", "sim") != fresh {
		t.Fatal("Keep added a part the old file did not have")
	}
	if Get("<!-- begin sim -->\nunterminated", "sim") != "" {
		t.Fatal("Get took a part without its end marker")
	}
}
