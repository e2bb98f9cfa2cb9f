package statefile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type state struct {
	Version int      `json:"version"`
	Items   []string `json:"items"`
}

func TestSaveLoad(t *testing.T) {
	f := File{Path: filepath.Join(t.TempDir(), "sub", "s.json"), What: "test state", Forget: "the items"}
	var st state
	if found, err := f.Load(&st, &st.Version); found || err != nil {
		t.Fatalf("missing file: found %v, err %v", found, err)
	}
	if err := f.Save(state{Version: Version, Items: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(f.Path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, err %v", fi.Mode(), err)
	}
	if found, err := f.Load(&st, &st.Version); !found || err != nil || len(st.Items) != 1 {
		t.Fatalf("load: %v %v %+v", found, err, st)
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(f.Path), ".*tmp"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	for _, bad := range []string{"{", `{"version": 2}`} {
		os.WriteFile(f.Path, []byte(bad), 0o600)
		_, err := f.Load(&st, &st.Version)
		if err == nil || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), "the items") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
