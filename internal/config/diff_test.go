package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// reloadBase is a node's file before a reload; tests edit a copy.
const reloadBase = `
key_file = "node.key"
[tun]
mode = "kernel"
[listen]
udp = "0.0.0.0:4610"
[admin]
socket = "run/admin.sock"
[[peers]]
public_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
endpoint = "192.0.2.7:4610"
name = "bob"
[[policy.allow]]
from = "*"
proto = "tcp"
ports = "22"
[[routes.offer]]
prefix = "192.168.10.0/24"
[[expose]]
port = 80
target = "127.0.0.1:8080"
`

func mustParse(t *testing.T, doc string) *Config {
	t.Helper()
	c, err := ParseReload([]byte(doc), "node.toml", "/etc/tomoe")
	if err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	return c
}

func TestCompareUnchanged(t *testing.T) {
	a, b := mustParse(t, reloadBase), mustParse(t, reloadBase)
	d := Compare(a, b)
	if !d.Empty() || d.Live() {
		t.Errorf("the same file: %+v", d)
	}
	// Comments, order of tables and spelling of the same values change
	// nothing either.
	moved := strings.Replace(reloadBase, `[[policy.allow]]
from = "*"
proto = "tcp"
ports = "22"
`, "", 1) + "# a comment\n[[policy.allow]]\nfrom = \"*\"\nproto = \"tcp\"\nports = \"22\"\n"
	if d := Compare(a, mustParse(t, moved)); !d.Empty() {
		t.Errorf("the same rules elsewhere in the file: %+v", d)
	}
}

func TestCompare(t *testing.T) {
	old := mustParse(t, reloadBase)
	cases := []struct {
		name  string
		edit  func(string) string
		check func(t *testing.T, d Diff)
	}{
		{"peer added and rule added", func(s string) string {
			return s + `
[[peers]]
public_key = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
endpoint = "198.51.100.1:4610"
[[policy.allow]]
from = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
proto = "tcp"
ports = "5001"
[[policy.deny]]
from = "*"
proto = "udp"
`
		}, func(t *testing.T, d Diff) {
			if len(d.PeersAdded) != 1 || len(d.PeersRemoved)+len(d.PeersChanged) != 0 {
				t.Errorf("peers %+v", d)
			}
			if len(d.PolicyAdded) != 2 || len(d.PolicyRemoved) != 0 || !d.PolicyAdded[1].Deny {
				t.Errorf("policy added %v removed %v", d.PolicyAdded, d.PolicyRemoved)
			}
			if len(d.Restart) != 0 {
				t.Errorf("restart %v", d.Restart)
			}
		}},
		{"peer removed, rule ports changed", func(s string) string {
			s = cut(s, "[[peers]]", "name = \"bob\"\n")
			return strings.Replace(s, `ports = "22"`, `ports = "22,80"`, 1)
		}, func(t *testing.T, d Diff) {
			if len(d.PeersRemoved) != 1 || len(d.PeersAdded) != 0 {
				t.Errorf("peers %+v", d)
			}
			if len(d.PolicyAdded) != 1 || len(d.PolicyRemoved) != 1 {
				t.Errorf("policy added %v removed %v", d.PolicyAdded, d.PolicyRemoved)
			}
		}},
		{"peer endpoint, name and keepalive changed", func(s string) string {
			s = strings.Replace(s, `endpoint = "192.0.2.7:4610"`, `endpoint = "192.0.2.8:4610"`, 1)
			return strings.Replace(s, `name = "bob"`, "name = \"bobby\"\npersistent_keepalive = 25", 1)
		}, func(t *testing.T, d Diff) {
			if len(d.PeersChanged) != 1 || d.PeersChanged[0].Name != "bobby" || d.PeersChanged[0].PersistentKeepalive != 25 {
				t.Errorf("peers changed %+v", d.PeersChanged)
			}
		}},
		{"until changed", func(s string) string {
			return strings.Replace(s, `ports = "22"`, "ports = \"22\"\nuntil = \"2099-01-01T00:00:00Z\"", 1)
		}, func(t *testing.T, d Diff) {
			if len(d.PolicyAdded) != 1 || len(d.PolicyRemoved) != 1 {
				t.Errorf("policy added %v removed %v", d.PolicyAdded, d.PolicyRemoved)
			}
		}},
		{"routes and services", func(s string) string {
			s = strings.Replace(s, `prefix = "192.168.10.0/24"`, "prefix = \"192.168.10.0/24\"\nmasquerade = true", 1)
			s = strings.Replace(s, `target = "127.0.0.1:8080"`, `target = "127.0.0.1:8081"`, 1)
			return s + `
[[routes.accept]]
from = "*"
prefix = "10.0.0.0/8"
[[expose]]
port = 53
proto = "udp"
target = "127.0.0.1:5353"
[[connect]]
local = "127.0.0.1:2222"
remote = "bob:22"
[proxy]
socks5 = "127.0.0.1:1080"
`
		}, func(t *testing.T, d Diff) {
			if len(d.OffersAdded) != 1 || len(d.OffersRemoved) != 1 || !d.OffersAdded[0].Masquerade {
				t.Errorf("offers +%v -%v", d.OffersAdded, d.OffersRemoved)
			}
			if len(d.AcceptAdded) != 1 || len(d.AcceptRemoved) != 0 {
				t.Errorf("accept +%v -%v", d.AcceptAdded, d.AcceptRemoved)
			}
			if len(d.ExposeAdded) != 1 || len(d.ExposeChanged) != 1 || len(d.ExposeRemoved) != 0 {
				t.Errorf("expose +%v ~%v -%v", d.ExposeAdded, d.ExposeChanged, d.ExposeRemoved)
			}
			if !d.AccessChanged || d.AccessAdded != 2 || d.AccessRemoved != 0 {
				t.Errorf("access %v +%d -%d", d.AccessChanged, d.AccessAdded, d.AccessRemoved)
			}
		}},
		{"restart-only keys", func(s string) string {
			s = strings.Replace(s, `udp = "0.0.0.0:4610"`, `udp = "0.0.0.0:4611"`, 1)
			s = strings.Replace(s, `mode = "kernel"`, "mode = \"kernel\"\nmtu = 1300\nname = \"tomoe9\"", 1)
			s = strings.Replace(s, `key_file = "node.key"`, "key_file = \"other.key\"\nkey_passphrase_file = \"/nonexistent/pass\"", 1)
			return s + "[log]\nlevel = \"debug\"\n[bridge]\nenable = true\n[run]\nuser = \"root\"\n"
		}, func(t *testing.T, d Diff) {
			want := []string{"key_file", "key_passphrase_file", "tun.name", "tun.mtu", "listen.udp", "log.level", "bridge", "run.user"}
			if !slices.Equal(d.Restart, want) {
				t.Errorf("restart %v, want %v", d.Restart, want)
			}
			if d.Live() {
				t.Errorf("restart-only changes are live: %+v", d)
			}
		}},
		{"admin.allow", func(s string) string {
			return strings.Replace(s, `socket = "run/admin.sock"`, "socket = \"run/admin.sock\"\n[[admin.allow]]\nfrom = \"fcff:805b:1683:9242:1948:aa5b:d63a:3561\"\nrole = \"read\"", 1)
		}, func(t *testing.T, d Diff) {
			if !d.AdminAllowChanged || !d.Live() || len(d.Restart) != 0 {
				t.Errorf("admin.allow: %+v", d)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.check(t, Compare(old, mustParse(t, tc.edit(reloadBase))))
		})
	}
}

// cut removes s's text from the first from up to and including to.
func cut(s, from, to string) string {
	i := strings.Index(s, from)
	j := strings.Index(s[i:], to)
	return s[:i] + s[i+j+len(to):]
}

// TestLoadReload: an invalid file is an error with its line, as Load
// gives; the files only a start reads are not checked (a node that
// dropped root cannot read them).
func TestLoadReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.toml")
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("x\n"), 0o644) // group and others may read it: Load refuses it
	doc := "key_passphrase_file = \"secret\"\n" + strings.TrimPrefix(reloadBase, "\n")
	os.WriteFile(path, []byte(doc), 0o600)
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "key_passphrase_file") {
		t.Fatalf("Load of a file whose passphrase file others read: %v", err)
	}
	if _, err := LoadReload(path); err != nil {
		t.Fatalf("LoadReload checked the passphrase file: %v", err)
	}
	os.Remove(secret)
	if _, err := LoadReload(path); err != nil {
		t.Fatalf("LoadReload of a file whose passphrase file is gone: %v", err)
	}

	os.WriteFile(path, []byte(reloadBase+"[[policy.allow]]\nfrom = \"*\"\nports = \"99999\"\n"), 0o600)
	_, err := LoadReload(path)
	var v *ValidationError
	if !errors.As(err, &v) {
		t.Fatalf("invalid port: %v", err)
	}
	if !strings.Contains(err.Error(), path+":") || v.Problems[0].Line == 0 {
		t.Errorf("the error has no FILE:LINE: %v", err)
	}
	os.WriteFile(path, []byte(reloadBase+"[tun\n"), 0o600)
	if _, err := LoadReload(path); err == nil || !strings.Contains(err.Error(), path+":") {
		t.Errorf("a TOML syntax error: %v", err)
	}
}
