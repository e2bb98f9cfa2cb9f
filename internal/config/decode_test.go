package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/pelletier/go-toml/v2"
)

const testKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

// A bad value of each typed key is reported by the decoder, with the file,
// the line and column of the value, the key (with the index of its array
// element) and the fix.
func TestBadValueNamesKeyAndLine(t *testing.T) {
	for _, tc := range []struct{ doc, want, hint string }{
		{"[tun]\nmode = \"tap\"", `c.toml:2:8: tun.mode: "tap": use "kernel"`, "userspace"},
		{"[tun]\nipv4 = \"10.0.0.1/24\"", `c.toml:2:8: tun.ipv4: "10.0.0.1/24"`, "without a prefix length"},
		{"[tun]\nipv4_prefix = \"10.99.0.1/24\"", `c.toml:2:15: tun.ipv4_prefix: 10.99.0.1/24 has host bits`, "10.99.0.0/24"},
		{"[listen]\nudp = \"4610\"", `c.toml:2:7: listen.udp: "4610"`, "0.0.0.0:PORT"},
		{"[admin]\nmetrics = \"localhost:9610\"", `c.toml:2:11: admin.metrics: "localhost:9610": want IP:PORT`, "127.0.0.1:9610"},
		{"[[peers]]\npublic_key = \"" + testKey + "\"\nendpoint = \"1.2.3.4:5\"\n[[peers]]\npublic_key = \"nope\"", `c.toml:5:14: peers[1].public_key: public key: "nope"`, "tomoe key public"},
		{"[[peers]]\npublic_key = \"" + testKey + "\"\nendpoint = \"1.2.3.4:0\"", `c.toml:3:12: peers[0].endpoint: "1.2.3.4:0"`, "1..65535"},
		{"[[policy.allow]]\nfrom = \"*\"\n[[policy.allow]]\nfrom = \"bob\"", `c.toml:4:8: policy.allow[1].from: identity "bob"`, "public key"},
		{"[[policy.allow]]\nfrom = \"*\"\nproto = \"gre\"", `c.toml:3:9: policy.allow[0].proto: protocol "gre"`, "tcp, udp, icmp, l2"},
		{"[[policy.allow]]\nfrom = \"*\"\nports = \"99999\"", `c.toml:3:9: policy.allow[0].ports: ports "99999"`, "1-65535"},
		{"[bridge]\nenable = true\ntcp = \"4610\"", `c.toml:3:7: bridge.tcp: "4610": want IP:PORT`, "the same port as listen.udp"},
		{"[bridge]\nenable = true\n[[bridge.allow]]\npublic_key = \"x\"", `c.toml:4:14: bridge.allow[0].public_key: public key: "x"`, "the node prints its key with `tomoe status`"},
		{"[[bridges]]\nendpoint = \"-x:4610\"\npublic_key = \"" + testKey + "\"", `c.toml:2:12: bridges[0].endpoint: "-x:4610"`, "neither an IP address nor a host name"},
		{"[[bridges]]\nendpoint = \"1.2.3.4:4610\"\npublic_key = \"x\"", `c.toml:3:14: bridges[0].public_key: public key: "x"`, "the bridge prints its key with `tomoe status`"},
		{"[[routes.offer]]\nprefix = \"fc00::/7\"", `c.toml:2:10: routes.offer[0].prefix: "fc00::/7" overlaps`, "by key"},
		{"[[routes.accept]]\nfrom = \"*\"\nprefix = \"10.0.0.1/8\"", `c.toml:3:10: routes.accept[0].prefix: "10.0.0.1/8" has host bits`, "10.0.0.0/8"},
		{"[[routes.accept]]\nfrom = \"fd00::1\"\nprefix = \"::/0\"", `c.toml:2:8: routes.accept[0].from: identity "fd00::1"`, "fc00::/8"},
		{"[[expose]]\nport = 80\nproto = \"sctp\"\ntarget = \"127.0.0.1:1\"", `c.toml:3:9: expose[0].proto: "sctp"`, `"tcp" or "udp"`},
		{"[[expose]]\nport = 80\ntarget = \"0.0.0.0:80\"", `c.toml:3:10: expose[0].target: "0.0.0.0:80"`, "127.0.0.1:8080"},
		{"[[connect]]\nlocal = \"0.0.0.0:80\"\nremote = \"[fc00::1]:80\"", `c.toml:2:9: connect[0].local: "0.0.0.0:80"`, "only loopback"},
		{"[[connect]]\nlocal = \"127.0.0.1:80\"\nremote = \"fc00::1\"", `c.toml:3:10: connect[0].remote: "fc00::1"`, "name:port"},
		{"[proxy]\nsocks5 = \"/run/../x.sock\"", `c.toml:2:10: proxy.socks5: "/run/../x.sock"`, "clean form"},
		{"[log]\nlevel = \"loud\"", `c.toml:2:9: log.level: "loud"`, "debug, info, warn or error"},
		{"[log]\nformat = \"xml\"", `c.toml:2:10: log.format: "xml"`, "text or json"},
		// Inline tables and arrays of them name the element too.
		{"peers = [{public_key = \"" + testKey + "\", endpoint = \"1.2.3.4:5\"}, {public_key = \"x\"}]", `c.toml:1:111: peers[1].public_key: public key: "x"`, "tomoe key public"},
		{"tun = {mode = \"tap\"}", `c.toml:1:15: tun.mode: "tap"`, "userspace"},
	} {
		_, err := Parse([]byte(tc.doc), "c.toml", "/x")
		if err == nil {
			t.Errorf("accepted:\n%s", tc.doc)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("%s\ngot:  %v\nwant: %s ... %s", tc.doc, err, tc.want, tc.hint)
		}
	}
}

// A key whose type parses text takes only a string: the decoder would
// hand a number to UnmarshalText as text, or store it in a type built on
// an integer, and an array of numbers in a key.
func TestTextKeyTakesOnlyAString(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"[tun]\nmode = 1", "c.toml:2:8: tun.mode: got a number"},
		{"[[policy.allow]]\nfrom = \"*\"\nproto = 6", "c.toml:3:9: policy.allow[0].proto: got a number"},
		{"[[policy.allow]]\nfrom = \"*\"\nports = 22", "c.toml:3:9: policy.allow[0].ports: got a number"},
		{"[[peers]]\npublic_key = [1, 2, 3]\nendpoint = \"1.2.3.4:5\"", "c.toml:2:14: peers[0].public_key: got an array"},
		{"[listen]\nudp = 4610", "c.toml:2:7: listen.udp: got a number"},
		{"[tun]\nipv4 = true", "c.toml:2:8: tun.ipv4: got true or false"},
		{"[[expose]]\nport = 80\nproto = \"tcp\"\ntarget = {a = 1}", "c.toml:4:10: expose[0].target: got a table"},
		// Nor a table that would fill the type's fields behind its back.
		{"[tun.ipv4]\nAddr = \"127.0.0.1\"", "c.toml:1:2: tun.ipv4: got a table"},
		{"[[policy.allow]]\nfrom = \"*\"\n[[policy.allow.ports]]\nLo = 9\nHi = 1", "c.toml:3:3: policy.allow[0].ports[0]: got a table"},
		{"[[peers]]\npublic_key = \"" + testKey + "\"\nendpoint.Port = 0", "c.toml:3:17: peers[0].endpoint.Port: peers.endpoint takes a string, not a table"},
		// The decoder matches keys without regard to case.
		{"[TUN]\nMODE = 2", "c.toml:2:8: TUN.MODE: got a number"},
		{"[[Peers]]\nPublic_Key = [1, 2]\nendpoint = \"1.2.3.4:5\"", "c.toml:2:14: Peers[0].Public_Key: got an array"},
	} {
		_, err := Parse([]byte(tc.doc), "c.toml", "/x")
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "value in quotes") {
			t.Errorf("%s\ngot:  %v\nwant: %s", tc.doc, err, tc.want)
		}
	}
}

// config check reports every problem at once, in the file's order: bad
// values (each found by the decoder) and the rules between keys, each with
// its line where the file has one.
func TestEveryProblemAtOnce(t *testing.T) {
	doc := `[tun]
mode = "tap"
mtu = 100
ipv4 = "auto"
[[peers]]
public_key = "nope"
endpoint = "1.2.3.4:5"
[[peers]]
public_key = "` + testKey + `"
[log]
level = "loud"
format = 7
`
	_, err := Parse([]byte(doc), "c.toml", "/x")
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("%T %v", err, err)
	}
	want := []string{
		`c.toml:2:8: tun.mode: "tap"`,
		"c.toml:3: tun.mtu: 100 is outside 1280..9000",
		`c.toml:6:14: peers[0].public_key: public key: "nope"`,
		`c.toml:8: peers[1].endpoint: missing: a static peer needs "host:port"`,
		`c.toml:11:9: log.level: "loud"`,
		"c.toml:12:10: log.format: got a number",
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d problems, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("problem %d: %q, want %q...", i, lines[i], w)
		}
	}
	// The blanked peers[0].public_key is not reported again as missing.
	if strings.Count(err.Error(), "peers[0].public_key") != 1 {
		t.Errorf("peers[0].public_key reported twice:\n%v", err)
	}
}

// A value of the wrong TOML type says what the key takes.
func TestWrongTOMLType(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"[tun]\nmtu = \"big\"", `c.toml:2:7: tun.mtu: got a string, but this key takes a number, without quotes`},
		{"[listen]\nstealth = \"yes\"", `c.toml:2:11: listen.stealth: got a string, but this key takes true or false, without quotes`},
		{"allowed_local_users = \"alice\"", `c.toml:1:23: allowed_local_users: got a string, but this key takes an array of strings, e.g. ["alice", "1000"]`},
		{"tun = 5", `c.toml:1:7: tun: got an integer, but this key takes a table`},
		{"peers = 5", `c.toml:1:9: peers: got an integer, but this key takes an array of tables`},
	} {
		_, err := Parse([]byte(tc.doc), "c.toml", "/x")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s\ngot:  %v\nwant: %s", tc.doc, err, tc.want)
		}
	}
}

// A file full of mistakes costs a bounded number of decoding rounds, and
// says that it stopped.
func TestManyProblems(t *testing.T) {
	for _, doc := range []string{
		strings.Repeat("[[peers]]\npublic_key = \"x\"\nendpoint = \"1.2.3.4:5\"\n", 500),
		strings.Repeat("[[peers]]\npublic_key = 5\nendpoint = \"1.2.3.4:5\"\n", 500),
	} {
		_, err := Parse([]byte(doc), "c.toml", "/x")
		var ve *ValidationError
		if !errors.As(err, &ve) || len(ve.Problems) != maxProblems+1 || !strings.HasSuffix(err.Error(), "stopped after 100 problems") {
			t.Errorf("%T, %d problems: ...%s", err, len(ve.Problems), err.Error()[max(0, len(err.Error())-80):])
		}
	}
}

// Unknown keys are listed with their line, the index of their element and
// the keys their own table has.
func TestUnknownKeyInArrayOfTables(t *testing.T) {
	doc := "[bridge]\nenable = true\n[[bridge.allow]]\npublic_key = \"" + testKey + "\"\n[[bridge.allow]]\nkey = \"x\"\n[[policy.allow]]\nform = \"*\"\n"
	_, err := Parse([]byte(doc), "c.toml", "/x")
	for _, w := range []string{
		`c.toml:6: unknown key "bridge.allow[1].key"; known keys here: public_key`,
		`c.toml:8: unknown key "policy.allow[0].form"; known keys here: from, proto, ports`,
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("got %v\nwant %s", err, w)
		}
	}
}

// A configuration written back out reads the same. (Not with ports:
// go-toml writes a slice type as an array of tables even when it is a
// TextMarshaler, and a text key takes only a string.)
func TestRoundTrip(t *testing.T) {
	doc := `key_file = "node.key"
allowed_local_users = ["0"]
[tun]
name = "tomoe7"
mtu = 1380
ipv4 = "auto"
ipv4_prefix = "10.99.0.0/24"
[listen]
udp = "[::]:0"
[admin]
socket = "run/admin.sock"
metrics = "127.0.0.1:9610"
[[peers]]
public_key = "` + testKey + `"
endpoint = "192.0.2.7:4610"
persistent_keepalive = 25
name = "bob"
[[peers]]
public_key = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
endpoint = "peer.example.com:4610"
[[policy.allow]]
from = "*"
proto = "tcp"
[[policy.allow]]
from = "fcff:805b:1683:9242:1948:aa5b:d63a:3561"
proto = "icmp"
[[bridges]]
endpoint = "[2001:db8::1]:4610"
public_key = "` + testKey + `"
[[routes.accept]]
from = "*"
prefix = "10.99.0.0/24"
[[expose]]
port = 53
proto = "udp"
target = "127.0.0.1:5353"
[[connect]]
local = "127.0.0.1:18080"
remote = "[fc00::1]:80"
[proxy]
socks5 = "/run/user/1000/tomoe/socks.sock"
users = ["*"]
[log]
level = "debug"
format = "json"
`
	c1, err := Parse([]byte(doc), "c.toml", "/etc/tomoe")
	if err != nil {
		t.Fatal(err)
	}
	b1, err := toml.Marshal(c1)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Parse(b1, "again.toml", "/etc/tomoe")
	if err != nil {
		t.Fatalf("%v\n%s", err, b1)
	}
	b2, err := toml.Marshal(c2)
	if err != nil {
		t.Fatal(err)
	}
	if string(b1) != string(b2) {
		t.Errorf("written twice, differs:\n%s\n---\n%s", b1, b2)
	}
	if c2.Peers[1].Endpoint.Name != "peer.example.com" || c2.Bridges[0].Endpoint.Addr.String() != "2001:db8::1" ||
		!c2.TUN.IPv4.Auto || c2.Connect[0].Remote.String() != "[fc00::1]:80" || c2.Log.Level.String() != "debug" {
		t.Errorf("read back: %+v", c2)
	}
}

func TestTextKeys(t *testing.T) {
	for _, k := range []string{"tun.mode", "tun.ipv4", "tun.ipv4_prefix", "listen.udp", "admin.metrics", "peers.public_key", "peers.endpoint",
		"policy.allow.from", "policy.allow.proto", "policy.allow.ports", "bridge.tcp", "bridge.allow.public_key", "bridges.endpoint",
		"bridges.public_key", "routes.offer.prefix", "routes.accept.from", "routes.accept.prefix", "expose.proto", "expose.target",
		"connect.local", "connect.remote", "proxy.socks5", "proxy.http", "log.level", "log.format"} {
		if !textKeys[k] {
			t.Errorf("%s is not a text key", k)
		}
	}
	for _, k := range []string{"key_file", "tun.mtu", "tun.name", "peers", "peers.name", "proxy.users", "allowed_local_users"} {
		if textKeys[k] {
			t.Errorf("%s is a text key", k)
		}
	}
}

func TestDefaultListen(t *testing.T) {
	if got := Default().Listen.UDP.String(); got != DefaultListenUDP {
		t.Errorf("default listen.udp %s, want %s", got, DefaultListenUDP)
	}
}
