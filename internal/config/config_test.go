package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tomoe-net/tomoe/internal/policy"
)

const full = `
key_file = "node.key"
[tun]
mode = "userspace"
name = "tomoe7"
mtu = 1380
[listen]
udp = "[::]:0"
[admin]
socket = "run/admin.sock"
metrics = "127.0.0.1:9610"
[[peers]]
public_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
endpoint = "192.0.2.7:4610"
persistent_keepalive = 25
name = "bob"
[[peers]]
public_key = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
endpoint = "peer.example.com:4610"
[[policy.allow]]
from = "*"
proto = "tcp"
ports = "22,8000-8080"
[[policy.allow]]
from = "fcff:805b:1683:9242:1948:aa5b:d63a:3561"
[log]
level = "debug"
format = "json"
`

func TestParseFull(t *testing.T) {
	c, err := Parse([]byte(full), "test.toml", "/etc/tomoe")
	if err != nil {
		t.Fatal(err)
	}
	if c.KeyFile != "/etc/tomoe/node.key" || c.Admin.Socket != "/etc/tomoe/run/admin.sock" {
		t.Errorf("relative paths: %q %q", c.KeyFile, c.Admin.Socket)
	}
	if c.StateFile() != "/etc/tomoe/policy.json" {
		t.Errorf("state file %q", c.StateFile())
	}
	if c.TUN.Mode != ModeUserspace || c.TUN.MTU != 1380 || len(c.Peers) != 2 || c.Peers[0].Keepalive().Seconds() != 25 {
		t.Errorf("decoded %+v", c)
	}
	if p := c.Listen.UDP.Port; p != 0 {
		t.Errorf("port %d", p)
	}
	if len(c.PolicyRules()) != 2 {
		t.Errorf("rules %v", c.PolicyRules())
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse(nil, "empty.toml", "/x")
	if err != nil {
		t.Fatal(err)
	}
	if c.TUN.Mode.String() != "kernel" || c.TUN.Name != "tomoe0" || c.TUN.MTU != DefaultMTU || c.Listen.UDP.String() != "0.0.0.0:4610" {
		t.Errorf("defaults %+v", c)
	}
	if p := c.Listen.UDP.Port; p != 4610 {
		t.Errorf("port %d", p)
	}
}

// Each bad config must fail naming the key, and the message must say how to fix it.
func TestValidationErrorsNameTheKey(t *testing.T) {
	cases := []struct{ doc, key, hint string }{
		{`[tun]` + "\n" + `mode = "tap"`, "tun.mode", "userspace"},
		{`[tun]` + "\n" + `mtu = 1000`, "tun.mtu", "1280"},
		{`[tun]` + "\n" + `name = "a/b"`, "tun.name", "'/'"},
		{`[listen]` + "\n" + `udp = "4610"`, "listen.udp", "0.0.0.0:PORT"},
		{`[listen]` + "\n" + `udp = "10.0.0.1:4610"`, "listen.udp", "every IPv4 and IPv6"},
		{`[listen]` + "\n" + `udp = "0.0.0.0:70000"`, "listen.udp", "0..65535"},
		{`[[peers]]` + "\n" + `public_key = "nope"` + "\n" + `endpoint = "1.2.3.4:1"`, "peers[0].public_key", "tomoe key public"},
		{`[[peers]]` + "\n" + `public_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="`, "peers[0].endpoint", "host:port"},
		{`[[peers]]` + "\n" + `public_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="` + "\n" + `endpoint = "[fc00::1]:4610"`, "peers[0].endpoint", "underlay"},
		{`[[peers]]` + "\n" + `public_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="` + "\n" + `endpoint = "1.2.3.4:0"`, "peers[0].endpoint", "1..65535"},
		{`[[policy.allow]]` + "\n" + `from = "bob"`, "policy.allow[0]", "public key"},
		{`[[policy.allow]]` + "\n" + `from = "*"` + "\n" + `ports = "99999"`, "policy.allow[0]", "1-65535"},
		{`[[policy.allow]]` + "\n" + `from = "*"` + "\n" + `proto = "gre"`, "policy.allow[0]", "tcp, udp, icmp, l2"},
		{`[[policy.allow]]` + "\n" + `from = "*"` + "\n" + `until = "tomorrow"`, "policy.allow[0].until", "RFC 3339"},
		{`[[policy.deny]]` + "\n" + `from = "group:acme"`, "policy.deny[0]", "group:ORG/GROUP"},
		{`[[policy.deny]]` + "\n" + `from = "*"` + "\n" + `to = "*"`, "policy.deny[0]", "leave \"to\" out"},
		{`[[policy.deny]]` + "\n" + `from = "*"` + "\n" + `action = "x"`, "policy.deny", "action"},
		{`[[routes.accept]]` + "\n" + `from = "org:acme"` + "\n" + `prefix = "10.0.0.0/8"`, "routes.accept[0].from", "only for policy rules"},
		{`[admin]` + "\n" + `socket = "/` + strings.Repeat("x", 120) + `"`, "admin.socket", "107"},
		{`[admin]` + "\n" + `group = "no-such-group-tomoe"`, "admin.group", "groupadd"},
		{`[log]` + "\n" + `level = "loud"`, "log.level", "debug"},
		{`[bridge]` + "\n" + `tcp = "0.0.0.0:4610"`, "bridge.enable", "enable = true"},
		{`[bridge]` + "\n" + `enable = true` + "\n" + `tcp = "4610"`, "bridge.tcp", "IP:PORT"},
		{`[bridge]` + "\n" + `enable = true` + "\n" + `relay_mbit = -1`, "bridge.relay_mbit", "0 for none"},
		{`[[bridge.allow]]` + "\n" + `public_key = "x"`, "bridge.allow[0].public_key", "tomoe status"},
		{`[[bridges]]` + "\n" + `public_key = "KEY"`, "bridges[0].endpoint", "host:port"},
		{`[[bridges]]` + "\n" + `endpoint = "1.2.3.4:4610"` + "\n" + `public_key = "x"`, "bridges[0].public_key", "tomoe status"},
		{`[bridge]` + "\n" + `enable = true` + "\n" + `[[bridges]]` + "\n" + `endpoint = "1.2.3.4:4610"` + "\n" + `public_key = "KEY"`, "bridges", "federation"},
	}
	for _, tc := range cases {
		tc.doc = strings.ReplaceAll(tc.doc, "KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
		_, err := Parse([]byte(tc.doc), "c.toml", "/x")
		if err == nil {
			t.Errorf("accepted:\n%s", tc.doc)
			continue
		}
		if !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("error for %s lacks key or hint %q:\n%v", tc.key, tc.hint, err)
		}
	}
}

// The metrics name every peer and its traffic: they stay on loopback
// unless metrics_public says otherwise.
func TestMetricsAddress(t *testing.T) {
	for _, tc := range []struct {
		doc     string
		wantErr string // "" = accepted
	}{
		{`metrics = "127.0.0.1:9610"`, ""},
		{`metrics = "127.0.0.2:9610"`, ""},
		{`metrics = "[::1]:9610"`, ""},
		{`metrics = "[::ffff:127.0.0.1]:9610"`, ""},
		{`metrics = "0.0.0.0:9610"`, "admin.metrics: \"0.0.0.0:9610\" is not a loopback address"},
		{`metrics = "[::]:9610"`, "metrics_public = true"},
		{`metrics = "192.0.2.10:9610"`, "metrics_public = true"},
		{`metrics = "[fc00::1]:9610"`, "metrics_public = true"},
		{"metrics = \"0.0.0.0:9610\"\nmetrics_public = true", ""},
		{"metrics = \"192.0.2.10:9610\"\nmetrics_public = true", ""},
		{`metrics_public = true`, "admin.metrics_public: set, but admin.metrics is empty"},
		{`metrics = "localhost:9610"`, "admin.metrics"},
	} {
		_, err := Parse([]byte("[admin]\n"+tc.doc+"\n"), "c.toml", "/x")
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.doc, err)
		case tc.wantErr != "" && err == nil:
			t.Errorf("%s: accepted, want an error containing %q", tc.doc, tc.wantErr)
		case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
			t.Errorf("%s: %v, want an error containing %q", tc.doc, err, tc.wantErr)
		}
	}
}

// The web UI listens on loopback only: [admin] web elsewhere is refused.
func TestWebAddress(t *testing.T) {
	for _, tc := range []struct {
		doc     string
		wantErr string // "" = accepted
	}{
		{``, ""},
		{`web = "127.0.0.1:4680"`, ""},
		{`web = "[::1]:4680"`, ""},
		{`web = "127.0.0.1:0"`, ""},
		{`web = "0.0.0.0:4680"`, "admin.web: \"0.0.0.0:4680\" is not a loopback address"},
		{`web = "[::]:4680"`, "not a loopback address"},
		{`web = "192.0.2.10:4680"`, "127.0.0.1:4680"},
		{`web = "localhost:4680"`, "admin.web"},
		{`web = "127.0.0.1"`, "admin.web"},
	} {
		c, err := Parse([]byte("[admin]\n"+tc.doc+"\n"), "c.toml", "/x")
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.doc, err)
		case tc.wantErr != "" && err == nil:
			t.Errorf("%s: accepted, want an error containing %q", tc.doc, tc.wantErr)
		case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
			t.Errorf("%s: %v, want an error containing %q", tc.doc, err, tc.wantErr)
		case tc.doc == "" && c.Admin.Web.IsValid():
			t.Errorf("web UI on by default: %v", c.Admin.Web)
		}
	}
}

func TestDuplicatePeer(t *testing.T) {
	doc := strings.Repeat("[[peers]]\npublic_key = \"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\nendpoint = \"1.2.3.4:5\"\n", 2)
	if _, err := Parse([]byte(doc), "c.toml", "/x"); err == nil || !strings.Contains(err.Error(), "peers[1].public_key") {
		t.Fatalf("duplicate peer: %v", err)
	}
}

func TestUnknownKeysAndSyntax(t *testing.T) {
	_, err := Parse([]byte("[tun]\nmdoe = \"kernel\"\n"), "c.toml", "/x")
	if err == nil || !strings.Contains(err.Error(), `c.toml:2: unknown key "tun.mdoe"`) || !strings.Contains(err.Error(), "mode") {
		t.Fatalf("unknown key: %v", err)
	}
	_, err = Parse([]byte("[tun]\nmtu = \"big\"\n"), "c.toml", "/x")
	if err == nil || !strings.Contains(err.Error(), "c.toml:2") {
		t.Fatalf("type error: %v", err)
	}
	_, err = Parse([]byte("key_file = \n"), "c.toml", "/x")
	if err == nil || !strings.Contains(err.Error(), "c.toml:1") {
		t.Fatalf("syntax error: %v", err)
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "tomoe.toml")
	os.WriteFile(p, []byte("key_file = \"k\"\n"), 0o600)
	c, err := Load(p)
	if err != nil || c.KeyFile != filepath.Join(dir, "k") {
		t.Fatalf("%v %v", c, err)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml")); err == nil {
		t.Fatal("missing file accepted")
	}
}

// key_passphrase_file is checked when the config is loaded: it must exist
// and be a secret's file (fileperm.Secret), relative to the config's
// directory.
func TestKeyPassphraseFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc")
	os.Mkdir(dir, 0o700)
	p := filepath.Join(dir, "tomoe.toml")
	os.WriteFile(p, []byte("key_file = \"k\"\nkey_passphrase_file = \"pass\"\n"), 0o600)
	pass := filepath.Join(dir, "pass")
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), "tomoe.toml:2: key_passphrase_file") || !strings.Contains(err.Error(), pass) {
		t.Fatalf("missing passphrase file: %v", err)
	}
	os.WriteFile(pass, []byte("pw\n"), 0o644)
	os.Chmod(pass, 0o644)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "chmod 600 "+pass) {
		t.Fatalf("passphrase file 0644: %v", err)
	}
	for _, mode := range []os.FileMode{0o600, 0o400} {
		os.Chmod(pass, mode)
		c, err := Load(p)
		if err != nil || c.KeyPassphraseFile != pass {
			t.Fatalf("mode %04o: %v", mode, err)
		}
	}
	if _, err := Parse([]byte("key_passphrase_fle = \"x\"\n"), "c.toml", "/x"); err == nil || !strings.Contains(err.Error(), "key_passphrase_file") {
		t.Fatalf("misspelt key: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(full))
	f.Add([]byte("[tun]\nmode=1\n"))
	f.Add([]byte("[[peers]]\n[[peers]]\n"))
	f.Add([]byte("peers = [{public_key = 1}, {endpoint = \"x\"}]\n[tun]\nipv4 = true\nmtu = \"big\"\n"))
	f.Add([]byte("[[bridge.allow]]\n[[bridge.allow]]\npublic_key = \"x\"\n[[policy.allow.ports]]\nLo = 1\n"))
	f.Add([]byte("tun = {mode = \"tap\", ipv4 = \"auto\"}\n[TUN.IPV4]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b, "fuzz.toml", "/x")
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("not a list of problems: %T %v", err, err)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "fuzz.toml") || len(line) <= len("fuzz.toml: ") {
					t.Fatalf("a problem without its file or text: %q", line)
				}
			}
			return
		}
		// Whatever is accepted must be usable without further checks.
		var l ListenAddr
		if err := l.UnmarshalText([]byte(c.Listen.UDP.String())); err != nil || l != c.Listen.UDP {
			t.Fatalf("accepted config with bad listen: %v", err)
		}
		for _, p := range c.Peers {
			if p.PublicKey.IsZero() {
				t.Fatal("accepted a peer without a key")
			}
		}
		if len(c.PolicyRules()) != len(c.Policy.Allow) {
			t.Fatal("accepted an unparsable rule")
		}
	})
}

func TestPolicyRulesV2(t *testing.T) {
	doc := `
[[policy.allow]]
from = "group:acme/sales"
to = "10.1.0.0/16"
proto = "tcp"
until = "2030-01-01T00:00:00Z"

[[policy.deny]]
from = "name:mallory*"
to = "self"
`
	c, err := Parse([]byte(doc), "c.toml", "/x")
	if err != nil {
		t.Fatal(err)
	}
	rules := c.PolicyRules()
	if len(rules) != 2 || rules[0].Deny || !rules[1].Deny || rules[0].Until.IsZero() || rules[0].To.String() != "10.1.0.0/16" || rules[1].To.String() != "self" {
		t.Fatalf("%+v", rules)
	}
}

// [console] org_key and [[admin.allow]]: a missing or open key file, a
// role that is not read or write, a missing role and "*" are refused.
func TestConsoleAndAdminAllow(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etc")
	os.Mkdir(dir, 0o700)
	p := filepath.Join(dir, "tomoe.toml")
	os.WriteFile(p, []byte("key_file = \"k\"\n[console]\norg_key = \"acme.key\"\n"), 0o600)
	key := filepath.Join(dir, "acme.key")
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "console.org_key") {
		t.Fatalf("missing org key: %v", err)
	}
	os.WriteFile(key, []byte("x"), 0o644)
	os.Chmod(key, 0o644)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "chmod 600 "+key) {
		t.Fatalf("org key 0644: %v", err)
	}
	os.Chmod(key, 0o600)
	if c, err := Load(p); err != nil || c.Console.OrgKey != key {
		t.Fatalf("org key 0600: %v", err)
	}
	for _, tc := range []struct{ doc, want string }{
		{"[[admin.allow]]\nfrom = \"*\"\nrole = \"read\"\n", "admin.allow[0].from"},
		{"[[admin.allow]]\nfrom = \"group:acme/ops\"\n", "admin.allow[0].role: missing"},
		{"[[admin.allow]]\nfrom = \"group:acme/ops\"\nrole = \"admin\"\n", "admin.allow[0].role"},
		{"[[admin.allow]]\nrole = \"read\"\n", "admin.allow[0].from: missing"},
	} {
		if _, err := Parse([]byte("key_file = \"/k\"\n"+tc.doc), "c.toml", "/x"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.doc, err, tc.want)
		}
	}
	c, err := Parse([]byte("key_file = \"/k\"\n[[admin.allow]]\nfrom = \"name:*@ops.acme\"\nrole = \"WRITE\"\n"), "c.toml", "/x")
	if err != nil || len(c.Admin.Allow) != 1 || c.Admin.Allow[0].Role != RoleWrite {
		t.Fatalf("a good entry: %+v, %v", c.Admin.Allow, err)
	}
	if r := c.AdminRules(4680); len(r) != 1 || r[0].To.Kind != policy.DestSelf || !r[0].Ports.Contains(4680) {
		t.Fatalf("admin rules: %+v", r)
	}
}

func TestL2Config(t *testing.T) {
	k1 := "ZHZ0cnV0aHJ1dGhydXRocnV0aHJ1dGhydXRocnV0aHI="
	ok := "[[l2]]\nname = \"office\"\nmembers = [\"" + k1 + "\", \"fc00::1\"]\nhub = \"fc00::2\"\nattach = \"eth1\"\n"
	c, err := Parse([]byte(ok), "c.toml", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(c.L2) != 1 || len(c.L2[0].Members) != 2 || c.L2[0].BridgeName() != DefaultL2Interface || c.L2[0].Hub.IsZero() {
		t.Fatalf("%+v", c.L2)
	}
	if c.L2[0].MACs() != DefaultL2MACLimit || c.L2[0].Broadcasts() != DefaultL2BroadcastLimit {
		t.Errorf("default limits: %d MACs, %d broadcasts/s", c.L2[0].MACs(), c.L2[0].Broadcasts())
	}
	// Certificate members, and the limits set.
	c, err = Parse([]byte("[[l2]]\nname = \"office\"\nmembers = [\"group:acme/office\", \"org:globex\", \"name:*.lab.acme\", \""+k1+"\"]\nmac_limit = 256\nbroadcast_limit = 50\n"), "c.toml", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if s := c.L2[0]; len(s.Members) != 4 || !s.Members[0].ByCert() || s.Members[1].Kind != policy.KindOrg || s.Members[2].Kind != policy.KindName || s.MACs() != 256 || s.Broadcasts() != 50 {
		t.Fatalf("%+v", c.L2[0])
	}
	for _, bad := range []struct{ body, want string }{
		{"[[l2]]\nmembers = [\"fc00::1\"]\n", "l2[0].name: missing"},
		{"[[l2]]\nname = \"o\"\n", "l2[0].members: missing"},
		{"[[l2]]\nname = \"o\"\nmembers = [\"*\"]\n", "must be named"},
		{"[[l2]]\nname = \"o\"\nmembers = [\"group:acme\"]\n", "l2[0].members"},
		{"[[l2]]\nname = \"o\"\nmembers = [\"fc00::1\"]\nhub = \"group:acme/hubs\"\n", "l2[0].hub"},
		{"[[l2]]\nname = \"o\"\nmembers = [\"fc00::1\"]\nmac_limit = 0\n", "l2[0].mac_limit: 0 is outside 16..65536"},
		{"[[l2]]\nname = \"o\"\nmembers = [\"fc00::1\"]\nmac_limit = 100000\n", "l2[0].mac_limit"},
		{"[[l2]]\nname = \"o\"\nmembers = [\"fc00::1\"]\nbroadcast_limit = 0\n", "l2[0].broadcast_limit: 0 is outside 1..100000"},
		{"[[l2]]\nname = \"o\"\nmembers = [\"fc00::1\"]\nbroadcast_limit = -5\n", "l2[0].broadcast_limit"},
		{"[[l2]]\nname = \"o\"\nmembers = [\"fc00::1\"]\nmac_limit = \"many\"\n", "l2[0].mac_limit"},
		{"[[l2]]\nname = \"o\"\nmembers = [\"fc00::1\"]\nattach = \"l2-p\"\n[[l2]]\nname = \"p\"\ninterface = \"l2-p\"\nmembers = [\"fc00::1\"]\n", "l2[0].attach"},
		{"[[l2]]\nname = \"o\"\nmembers = [\"fc00::1\"]\n[[l2]]\nname = \"p\"\nmembers = [\"fc00::1\"]\n", "l2[1].interface"},
		{"[[l2]]\nname = \"o\"\nmembers = [\"fc00::1\"]\ninterface = \"tomoe0\"\n", "also tun.name"},
		// internal/l2 names its tunnels l2vXXXXXX (the VXLAN ID), inner
		// bridges l2iXXXXXX and veths l2pXXXXXX, l2qXXXXXX, and deletes
		// an interface of that name it finds marked as tomoe's: a bridge
		// so named would be deleted by another segment's tunnel.
		{"[[l2]]\nname = \"o\"\nmembers = [\"fc00::1\"]\ninterface = \"l2v00abcd\"\n", "l2[0].interface"},
		{"[[l2]]\nname = \"o\"\nmembers = [\"fc00::1\"]\ninterface = \"l2i1d607b\"\n", "l2[0].interface"},
		{"[tun]\nmode = \"userspace\"\n[[l2]]\nname = \"o\"\nmembers = [\"fc00::1\"]\n", "needs tun.mode = \"kernel\""},
		{"[[l2]]\nname = \"o\"\nmembers = [\"fc00::1\"]\nattach = \"tomoe-l2\"\n", "l2[0].attach"},
		{"[[l2]]\nname = \"o\"\nmembers = \"fc00::1\"\n", "l2[0].members"},
	} {
		_, err := Parse([]byte(bad.body), "c.toml", t.TempDir())
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: %v, want %q", bad.body, err, bad.want)
		}
	}
}
