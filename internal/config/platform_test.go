package config

import (
	"fmt"
	"strings"
	"testing"
)

// TestPlatform: off Linux, what needs Linux is refused with the key that
// asks for it, and what works there passes; on Linux nothing changes.
func TestPlatform(t *testing.T) {
	for _, tc := range []struct {
		name, goos, doc string
		want            []string // keys refused, in order; none: valid
	}{
		{"linux kernel, everything", "linux", "allowed_local_users = [\"0\"]\n[listen]\nstealth = true\n[[routes.offer]]\nprefix = \"192.168.10.0/24\"\n[proxy]\nsocks5 = \"127.0.0.1:1080\"", nil},
		{"darwin kernel, plain", "darwin", "[tun]\nname = \"utun\"\ndns = false", nil},
		{"darwin utun7", "darwin", "[tun]\nname = \"utun7\"\ndns = false", nil},
		{"darwin tomoe0", "darwin", "[tun]\nname = \"tomoe0\"\ndns = false", []string{"tun.name"}},
		{"darwin dns", "darwin", "[tun]\nname = \"utun\"\ndns = true", []string{"tun.dns"}},
		{"windows kernel, Linux features", "windows", "allowed_local_users = [\"0\"]\n[tun]\ndns = false\n[listen]\nstealth = true\n[[routes.offer]]\nprefix = \"192.168.10.0/24\"\n[[routes.accept]]\nfrom = \"*\"\nprefix = \"10.0.0.0/8\"",
			[]string{"listen.stealth", "routes.offer", "routes.accept", "allowed_local_users"}},
		{"freebsd kernel", "freebsd", "[tun]\nmode = \"kernel\"", []string{"tun.mode"}},
		{"freebsd userspace, proxies for every user", "freebsd", "[tun]\nmode = \"userspace\"\n[proxy]\nsocks5 = \"127.0.0.1:1080\"\nhttp = \"127.0.0.1:8118\"\nusers = [\"*\"]", nil},
		{"darwin userspace, proxy for this user only", "darwin", "[tun]\nmode = \"userspace\"\n[proxy]\nsocks5 = \"127.0.0.1:1080\"\n[[connect]]\nlocal = \"/tmp/c.sock\"\nremote = \"[fc00::1]:80\"", []string{"proxy.socks5"}},
		{"darwin userspace, Unix sockets for some users", "darwin", "[tun]\nmode = \"userspace\"\n[proxy]\nsocks5 = \"/tmp/s.sock\"\nusers = [\"0\"]", nil},
		{"windows userspace, users by name", "windows", "[tun]\nmode = \"userspace\"\n[proxy]\nhttp = \"/tmp/h.sock\"\nusers = [\"0\", \"*\"]", []string{"proxy.users", "proxy.http"}},
		{"darwin run.user", "darwin", "[tun]\nmode = \"userspace\"\n[run]\nuser = \"daemon\"", []string{"run.user"}},
		{"darwin l2", "darwin", "[tun]\nname = \"utun\"\ndns = false\n[[l2]]\nname = \"office\"\nmembers = [\"fc00::1\"]", []string{"l2"}},
		{"darwin run.user root", "darwin", "[tun]\nmode = \"userspace\"\n[run]\nuser = \"root\"", nil},
		{"windows userspace, Unix socket for this user", "windows", "[tun]\nmode = \"userspace\"\n[proxy]\nsocks5 = \"/tmp/s.sock\"", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.doc), "c.toml", "/x")
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			c.validatePlatform(tc.goos, func(key, format string, args ...any) {
				got = append(got, key)
				t.Logf("%s: %s", key, fmt.Sprintf(format, args...))
			})
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("refused %v, want %v", got, tc.want)
			}
		})
	}
}

// TestPlatformDefaults: a config that sets nothing is valid on every
// system tomoe builds for, and kernel mode is the default where it exists.
func TestPlatformDefaults(t *testing.T) {
	for _, goos := range []string{"linux", "darwin", "windows", "freebsd"} {
		c := Default()
		c.TUN.Mode, c.TUN.Name, c.TUN.DNS = defaultMode(goos), defaultTUNName(goos), defaultDNS(goos)
		var got []string
		c.validatePlatform(goos, func(key, format string, args ...any) { got = append(got, key) })
		if len(got) > 0 {
			t.Errorf("%s: defaults refused: %v", goos, got)
		}
		if kernel := c.TUN.Mode == ModeKernel; kernel != (goos != "freebsd") {
			t.Errorf("%s: default mode %v", goos, c.TUN.Mode)
		}
	}
}
