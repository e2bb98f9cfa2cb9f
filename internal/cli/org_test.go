package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/org"
)

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(args, strings.NewReader(stdin), &out, &errb)
	return result{code, out.String(), errb.String()}
}

func (r result) want(t *testing.T, code int, args ...string) result {
	t.Helper()
	if r.code != code {
		t.Fatalf("tomoe %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, code, r.stdout, r.stderr)
	}
	return r
}

// privateKeyOf returns the base64 seed in an organisation key file.
func privateKeyOf(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "private_key = "); ok {
			return strings.Trim(v, `"`)
		}
	}
	t.Fatal("no private_key line")
	return ""
}

func nodePub(t *testing.T) identity.PublicKey {
	k, err := identity.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

func TestOrgAndCertCommands(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "acme.key")
	var seen []result
	run := func(code int, stdin string, args ...string) result {
		t.Helper()
		r := runCLI(t, stdin, args...).want(t, code, args...)
		seen = append(seen, r)
		return r
	}

	// org init: public key on stdout, hint on stderr, 0600 key file.
	r := run(0, "", "org", "init", "--name", "acme", "--out", key)
	pub, err := org.ParsePublicKey(r.stdout)
	if err != nil || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("org init printed %q: %v", r.stdout, err)
	}
	if !strings.Contains(r.stderr, "tomoe cert sign --org-key "+key) {
		t.Errorf("no signing hint: %s", r.stderr)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	secret := privateKeyOf(t, key)
	run(1, "", "org", "init", "--name", "acme", "--out", key) // refuses to overwrite
	run(2, "", "org", "init", "--name", "Acme!", "--out", filepath.Join(dir, "x.key"))
	run(2, "", "org", "init", "--name", "acme")

	// org public, from a file and from stdin.
	keyText, _ := os.ReadFile(key)
	for _, args := range [][]string{{"org", "public", key}, {"org", "public"}, {"org", "public", "-"}} {
		if r := run(0, string(keyText), args...); strings.TrimSpace(r.stdout) != pub.String() {
			t.Errorf("%v printed %q, want %s", args, r.stdout, pub)
		}
	}
	run(2, "not a key file", "org", "public")
	run(1, "", "org", "public", filepath.Join(dir, "missing.key"))

	// cert sign to stdout and to a file.
	node := nodePub(t)
	r = run(0, "", "cert", "sign", "--org-key", key, "--node", node.String(), "--name", "alice@sales.acme",
		"--groups", "sales,staff", "--ipv4", "100.64.0.7", "--ttl", "2w")
	cert, err := org.ParseCert(r.stdout)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Node != node || cert.Name != "alice@sales.acme" || len(cert.Groups) != 2 || cert.NotAfter.Sub(cert.NotBefore) != 14*24*3600e9 {
		t.Fatalf("signed %+v", cert)
	}
	certFile := filepath.Join(dir, "alice.cert")
	run(0, "", "cert", "sign", "--org-key", key, "--node", node.String(), "--name", "web1.acme", "--out", certFile)
	if fi, err := os.Stat(certFile); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("cert file: %v %v", fi, err)
	}
	for _, bad := range [][]string{
		{"--node", "nope", "--name", "a.acme"},
		{"--node", node.String(), "--name", "a.other"},
		{"--node", node.String(), "--name", "a.acme", "--groups", "Bad"},
		{"--node", node.String(), "--name", "a.acme", "--ipv4", "fd00::1"},
		{"--node", node.String(), "--name", "a.acme", "--ttl", "0d"},
		{"--node", node.String(), "--name", "a.acme", "--ttl", "soon"},
		{"--node", node.String()},
	} {
		run(2, "", append([]string{"cert", "sign", "--org-key", key}, bad...)...)
	}
	run(1, "", "cert", "sign", "--org-key", filepath.Join(dir, "missing.key"), "--node", node.String(), "--name", "a.acme")

	// cert show: text, JSON, verification.
	r = run(0, "", "cert", "show", certFile, "--org", pub.String())
	for _, want := range []string{"name:         web1.acme", "org name:     acme", node.Address().String(), cert.Org.String(), "status:       valid", "verified:     yes"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("cert show lacks %q:\n%s", want, r.stdout)
		}
	}
	r = run(0, cert.Text(), "cert", "show", "--json", "--org", pub.String())
	var j map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &j); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"org", "org_name", "node", "address", "name", "groups", "ipv4", "serial", "not_before", "not_after", "fingerprint", "verified"} {
		if _, ok := j[f]; !ok {
			t.Errorf("cert show --json lacks %q: %s", f, r.stdout)
		}
	}
	if j["verified"] != true || j["serial"] != cert.SerialString() {
		t.Errorf("json %s", r.stdout)
	}
	other := filepath.Join(dir, "other.key")
	otherPub := strings.TrimSpace(run(0, "", "org", "init", "--name", "acme", "--out", other).stdout)
	r = run(1, cert.Text(), "cert", "show", "-", "--org", otherPub)
	if !strings.Contains(r.stdout, "verified:     no:") {
		t.Errorf("wrong org: %s", r.stdout)
	}
	r = run(1, cert.Text(), "cert", "show", "--json", "--org", otherPub)
	if err := json.Unmarshal([]byte(r.stdout), &j); err != nil || j["verified"] != false || !strings.Contains(j["error"].(string), "another organisation") {
		t.Errorf("wrong org json: %s", r.stdout)
	}
	run(0, cert.Text(), "cert", "show") // no --org: no verification
	run(2, "tomoe-cert:AAAA", "cert", "show")
	run(2, cert.Text(), "cert", "show", "--org", node.String())
	run(1, "", "cert", "show", filepath.Join(dir, "missing.cert"))

	// cert revoke and org crl show.
	crlFile := filepath.Join(dir, "acme.crl")
	r = run(0, "", "cert", "revoke", "--org-key", key, "--out", crlFile, cert.SerialString())
	if !strings.Contains(r.stderr, "version 1: 1 serials, 0 node keys") {
		t.Errorf("revoke stderr: %s", r.stderr)
	}
	k2 := nodePub(t)
	r = run(0, "", "cert", "revoke", "--org-key", key, k2.String())
	l, err := org.ParseCRL(r.stdout)
	if err != nil || l.Version != 2 || !l.Revokes(cert) || !l.RevokesKey(k2) {
		t.Fatalf("second list %+v, %v", l, err)
	}
	run(2, "", "cert", "revoke", "--org-key", key, "xyz")
	run(2, "", "cert", "revoke", "--org-key", key, "tomoe-org:"+strings.Repeat("A", 43)+"=")
	run(2, "", "cert", "revoke", "1")

	r = run(0, "", "org", "crl", "show", crlFile, "--org", pub.String())
	for _, want := range []string{"version:   1", "1 serials, 0 node keys", "serial   " + cert.SerialString(), "verified:  yes"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("crl show lacks %q:\n%s", want, r.stdout)
		}
	}
	r = run(0, l.Text(), "org", "crl", "show", "--json")
	var cj struct {
		Version uint64
		Serials []string
		Keys    []string
	}
	if err := json.Unmarshal([]byte(r.stdout), &cj); err != nil || cj.Version != 2 || len(cj.Serials) != 1 || cj.Keys[0] != k2.String() {
		t.Errorf("crl json %s (%v)", r.stdout, err)
	}
	run(1, l.Text(), "org", "crl", "show", "--org", otherPub)
	run(2, "tomoe-crl:!!", "org", "crl", "show")

	for _, r := range seen {
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Fatalf("the organisation's private key appeared in output: %q %q", r.stdout, r.stderr)
		}
	}
}
