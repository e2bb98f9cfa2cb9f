//go:build linux

package firewall

import (
	"net/netip"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	nodeAddr = netip.MustParseAddr("fc12:3456:789a::1")
	site     = netip.MustParsePrefix("312:3456:789a:bcde::/64")
)

func TestConfigValidate(t *testing.T) {
	good := Config{TUN: "tomoe0", NodeAddr: nodeAddr, Site: site}
	tests := []struct {
		name string
		edit func(*Config)
		want string // "" for valid
	}{
		{"minimal", func(*Config) {}, ""},
		{"no site", func(c *Config) { c.Site = netip.Prefix{} }, ""},
		{"everything", func(c *Config) {
			c.Masquerade = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"), netip.MustParsePrefix("10.0.0.0/20")}
			c.ClampMSS, c.Stealth, c.UDPPort, c.TCPPorts = true, true, 4610, []uint16{443}
		}, ""},
		{"no TUN", func(c *Config) { c.TUN = "" }, "TUN"},
		{"long TUN", func(c *Config) { c.TUN = "abcdefghijklmnop" }, "TUN"},
		{"TUN is lo", func(c *Config) { c.TUN = "lo" }, "lo"},
		{"no node address", func(c *Config) { c.NodeAddr = netip.Addr{} }, "node address"},
		{"node address outside fc00::/8", func(c *Config) { c.NodeAddr = netip.MustParseAddr("fd00::1") }, "node address"},
		{"site not /64", func(c *Config) { c.Site = netip.MustParsePrefix("312::/48") }, "site prefix"},
		{"site outside 0300::/8", func(c *Config) { c.Site = netip.MustParsePrefix("2001:db8::/64") }, "site prefix"},
		{"site not masked", func(c *Config) { c.Site = netip.MustParsePrefix("312:3456:789a:bcde::1/64") }, "site prefix"},
		{"bad masquerade", func(c *Config) { c.Masquerade = []netip.Prefix{{}} }, "masquerade"},
		{"mapped masquerade", func(c *Config) { c.Masquerade = []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")} }, "masquerade"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			tt.edit(&c)
			err := c.validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("validate: %v", err)
			case tt.want != "" && err == nil:
				t.Fatalf("validate accepted %+v", c)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Fatalf("validate: %v; want it to name %q", err, tt.want)
			}
		})
	}
}

// Open checks the config before it touches the host.
func TestOpenRejectsBadConfig(t *testing.T) {
	if _, err := Open(Config{TUN: "tomoe0"}); err == nil || !strings.Contains(err.Error(), "node address") {
		t.Fatalf("Open with no node address: %v", err)
	}
}

// Only the chains a config needs are made.
func TestChainsFollowConfig(t *testing.T) {
	names := func(cfg Config) string {
		var out []string
		for _, c := range chains(cfg) {
			out = append(out, c.chain.Name)
		}
		return strings.Join(out, " ")
	}
	base := Config{TUN: "tomoe0", NodeAddr: nodeAddr}
	if got := names(base); got != "prerouting input" {
		t.Errorf("minimal config: chains %q, want prerouting and input", got)
	}
	full := base
	full.Masquerade = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	full.ClampMSS, full.Stealth = true, true
	if got := names(full); got != "prerouting postrouting forward input" {
		t.Errorf("full config: chains %q", got)
	}
}
