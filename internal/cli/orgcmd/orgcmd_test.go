package orgcmd

import "testing"

func TestParseTTL(t *testing.T) {
	for in, want := range map[string]string{"90d": "2160h0m0s", "2w": "336h0m0s", "12h": "12h0m0s", " 1d ": "24h0m0s"} {
		d, err := parseTTL(in)
		if err != nil || d.String() != want {
			t.Errorf("parseTTL(%q) = %v, %v; want %s", in, d, err, want)
		}
	}
	for _, bad := range []string{"", "0d", "-1d", "d", "1.5d", "-5h", "soon"} {
		if _, err := parseTTL(bad); err == nil {
			t.Errorf("parseTTL(%q) succeeded", bad)
		}
	}
}
