package config

import (
	"strings"
	"testing"
)

// tun.dns is on unless switched off, and takes only a boolean.
func TestTUNDNS(t *testing.T) {
	for doc, want := range map[string]bool{"": true, "[tun]\ndns = true\n": true, "[tun]\ndns = false\n": false} {
		c, err := Parse([]byte(doc), "c.toml", "/x")
		if err != nil {
			t.Fatalf("%q: %v", doc, err)
		}
		if c.TUN.DNS != want {
			t.Errorf("%q: tun.dns = %v, want %v", doc, c.TUN.DNS, want)
		}
	}
	_, err := Parse([]byte("[tun]\ndns = \"fc00::53\"\n"), "c.toml", "/x")
	if err == nil || !strings.Contains(err.Error(), "tun.dns") {
		t.Fatalf("a string for tun.dns: %v", err)
	}
}
