package org

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newSigner(t *testing.T, name string) *Signer {
	t.Helper()
	s, err := Init(name, filepath.Join(t.TempDir(), name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func nodeKey(t *testing.T) identity.PublicKey {
	t.Helper()
	k, err := identity.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

func signCert(t *testing.T, s *Signer) *Cert {
	t.Helper()
	c, err := s.SignCert(CertRequest{
		Node:   nodeKey(t),
		Name:   "alice@sales." + s.Name(),
		Groups: []string{"sales", "admins", "sales"},
		IPv4:   []netip.Addr{netip.MustParseAddr("100.64.0.9"), netip.MustParseAddr("100.64.0.2")},
		TTL:    24 * time.Hour,
	}, t0.Add(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPublicKeyText(t *testing.T) {
	s := newSigner(t, "acme")
	k := s.Public()
	if !strings.HasPrefix(k.String(), "tomoe-org:") || len(k.String()) != len("tomoe-org:")+44 {
		t.Fatalf("String = %q", k)
	}
	got, err := ParsePublicKey("  " + k.String() + "\n")
	if err != nil || got != k {
		t.Fatalf("ParsePublicKey = %v, %v", got, err)
	}
	var u PublicKey
	if err := u.UnmarshalText([]byte(k.String())); err != nil || u != k {
		t.Fatalf("UnmarshalText = %v, %v", u, err)
	}
	_, err = ParsePublicKey(nodeKey(t).String())
	if err == nil || !strings.Contains(err.Error(), "node's WireGuard key") {
		t.Errorf("bare node key: err = %v, want a hint that it is a node key", err)
	}
	for _, bad := range []string{"", "tomoe-org:", "tomoe-org:abc", "tomoe-org:" + strings.Repeat("A", 43) + "=", "acme"} {
		if _, err := ParsePublicKey(bad); err == nil || !strings.Contains(err.Error(), "organisation key") {
			t.Errorf("ParsePublicKey(%q) err = %v", bad, err)
		}
	}
}

func TestNames(t *testing.T) {
	for _, ok := range []string{"acme", "a", "0day", "my-org", strings.Repeat("a", 63)} {
		if err := ValidOrgName(ok); err != nil {
			t.Errorf("ValidOrgName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-acme", "Acme", "ac.me", "ac_me", strings.Repeat("a", 64)} {
		if ValidOrgName(bad) == nil {
			t.Errorf("ValidOrgName(%q) = nil", bad)
		}
	}
	for _, ok := range []string{"sales", "a.b_c-d", "0"} {
		if err := ValidGroup(ok); err != nil {
			t.Errorf("ValidGroup(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "Sales", "a b", "a@b", strings.Repeat("g", 64)} {
		if ValidGroup(bad) == nil {
			t.Errorf("ValidGroup(%q) = nil", bad)
		}
	}
	for _, ok := range []string{"alice@sales.acme", "web1.acme", "a+b@acme", "x_y-z.acme", "a.b.c@d.acme"} {
		if err := ValidCertName("acme", ok); err != nil {
			t.Errorf("ValidCertName(acme, %q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"acme", ".acme", "@acme", "web1.other", "web1.acme.com", "Web1.acme", "a..acme", "a.@acme", "a..b.acme", "a@@b.acme", "@b.acme", "web1acme", strings.Repeat("a", 124) + ".acme"} {
		if ValidCertName("acme", bad) == nil {
			t.Errorf("ValidCertName(acme, %q) = nil", bad)
		}
	}
}

func TestCertRoundTrip(t *testing.T) {
	s := newSigner(t, "acme")
	c := signCert(t, s)
	if c.Serial == 0 || len(c.SerialString()) != 16 {
		t.Errorf("serial %d %q", c.Serial, c.SerialString())
	}
	if got, want := strings.Join(c.Groups, ","), "admins,sales"; got != want {
		t.Errorf("groups %q, want %q", got, want)
	}
	if c.IPv4[0] != netip.MustParseAddr("100.64.0.2") || len(c.IPv4) != 2 {
		t.Errorf("ipv4 %v", c.IPv4)
	}
	if !c.NotBefore.Equal(t0) || !c.NotAfter.Equal(t0.Add(24*time.Hour)) {
		t.Errorf("validity %s .. %s", c.NotBefore, c.NotAfter)
	}
	text := c.Text()
	if strings.ContainsAny(text, "\n =") {
		t.Errorf("text form %q is not one unpadded line", text)
	}
	p, err := ParseCert(" " + text + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.Binary(), c.Binary()) || p.Fingerprint() != c.Fingerprint() || p.Text() != text {
		t.Fatal("round trip changed the certificate")
	}
	if p.Name != c.Name || p.OrgName != "acme" || p.Node != c.Node || p.Serial != c.Serial || p.Org != s.Public() {
		t.Fatalf("parsed %+v", p)
	}
	if err := p.Verify(s.Public(), t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if sn, err := ParseSerial(c.SerialString()); err != nil || sn != c.Serial {
		t.Errorf("ParseSerial = %x, %v", sn, err)
	}
}

func TestCertTamperingFailsVerify(t *testing.T) {
	s := newSigner(t, "acme")
	c := signCert(t, s)
	b := c.Binary()
	for i := range b {
		for _, flip := range []byte{0x01, 0x80} {
			m := bytes.Clone(b)
			m[i] ^= flip
			d, err := DecodeCert(m)
			if err != nil {
				continue // rejected by the decoder: also fine
			}
			if err := d.Verify(s.Public(), t0); err == nil {
				t.Fatalf("byte %d ^ %#x: tampered certificate verifies", i, flip)
			} else if !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrWrongOrg) {
				t.Fatalf("byte %d: err = %v", i, err)
			}
		}
	}
	// Changing a decoded certificate's fields breaks it too.
	d, _ := ParseCert(c.Text())
	d.Groups = append(d.Groups, "zzz")
	if err := d.Verify(s.Public(), t0); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("mutated groups: err = %v", err)
	}
}

func TestCertVerifyOrgAndTime(t *testing.T) {
	s := newSigner(t, "acme")
	other := newSigner(t, "acme") // same name, another key
	c := signCert(t, s)
	if err := c.Verify(other.Public(), t0); !errors.Is(err, ErrWrongOrg) {
		t.Errorf("other org: %v", err)
	}
	// A certificate claiming another org's key but signed by s: bad signature.
	forged := *c
	forged.Org = other.Public()
	if err := forged.Verify(other.Public(), t0); !errors.Is(err, ErrBadSignature) {
		t.Errorf("forged org field: %v", err)
	}
	for _, tc := range []struct {
		now  time.Time
		want error
	}{
		{t0.Add(-ClockSkew), nil},
		{t0.Add(-ClockSkew - time.Second), ErrNotYetValid},
		{t0.Add(24*time.Hour + ClockSkew), nil},
		{t0.Add(24*time.Hour + ClockSkew + time.Second), ErrExpired},
	} {
		err := c.Verify(s.Public(), tc.now)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("at %s: err = %v, want %v", tc.now, err, tc.want)
		}
	}
	if err := c.Verify(s.Public(), t0.Add(48*time.Hour)); err == nil || !strings.Contains(err.Error(), "2026-03-02T12:00:00Z") {
		t.Errorf("expired error %v does not say when", err)
	}
}

func TestSignCertRefuses(t *testing.T) {
	s := newSigner(t, "acme")
	node := nodeKey(t)
	many := make([]string, MaxGroups+1)
	for i := range many {
		many[i] = string(rune('a'+i%26)) + string(rune('a'+i/26))
	}
	long := make([]string, 9)
	for i := range long {
		long[i] = strings.Repeat(string(rune('a'+i)), 63)
	}
	var ips []netip.Addr
	for i := range 9 {
		ips = append(ips, netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}))
	}
	for name, req := range map[string]CertRequest{
		"no node":      {Name: "a.acme", TTL: time.Hour},
		"bad name":     {Node: node, Name: "a.other", TTL: time.Hour},
		"bad group":    {Node: node, Name: "a.acme", Groups: []string{"Bad"}, TTL: time.Hour},
		"many groups":  {Node: node, Name: "a.acme", Groups: many, TTL: time.Hour},
		"group bytes":  {Node: node, Name: "a.acme", Groups: long, TTL: time.Hour},
		"ipv6":         {Node: node, Name: "a.acme", IPv4: []netip.Addr{netip.MustParseAddr("fd00::1")}, TTL: time.Hour},
		"many ipv4":    {Node: node, Name: "a.acme", IPv4: ips, TTL: time.Hour},
		"zero ttl":     {Node: node, Name: "a.acme"},
		"negative ttl": {Node: node, Name: "a.acme", TTL: -time.Hour},
		"long ttl":     {Node: node, Name: "a.acme", TTL: MaxTTL + time.Hour},
	} {
		if _, err := s.SignCert(req, t0); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
}

// TestCertWorstCaseSize: a certificate with every field at its limit fits
// one UDP datagram with room to spare.
func TestCertWorstCaseSize(t *testing.T) {
	org := strings.Repeat("o", MaxOrgNameLen)
	s := newSigner(t, org)
	var groups []string
	for i := range MaxGroups {
		groups = append(groups, strings.Repeat(string(rune('a'+i%26)), 14)+string(rune('a'+i/26)))
	}
	var ips []netip.Addr
	for i := range MaxIPv4 {
		ips = append(ips, netip.AddrFrom4([4]byte{100, 64, 0, byte(i + 1)}))
	}
	name := strings.Repeat("n", MaxCertNameLen-len(org)-1) + "." + org
	c, err := s.SignCert(CertRequest{Node: nodeKey(t), Name: name, Groups: groups, IPv4: ips, TTL: MaxTTL}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(c.Binary()); n != MaxCertBinary || n > 1000 {
		t.Fatalf("worst-case certificate is %d bytes (MaxCertBinary %d), want <= 1000", n, MaxCertBinary)
	}
}

func TestParseCertErrors(t *testing.T) {
	s := newSigner(t, "acme")
	c := signCert(t, s)
	text := c.Text()
	for in, want := range map[string]string{
		"":                  "expected text starting with \"tomoe-cert:\"",
		"tomoe-crl:AAAA":    "expected text starting with \"tomoe-cert:\"",
		"tomoe-cert:***":    "base64url",
		text[:len(text)-10]: "",
		text + "AA":         "",
		"tomoe-cert:" + strings.Repeat("A", 4000): "longer than any valid certificate",
	} {
		_, err := ParseCert(in)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "certificate") {
			t.Errorf("ParseCert(%.30q) err = %v, want one containing %q", in, err, want)
		}
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "acme.key")
	s, err := Init("acme", path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", fi.Mode(), err)
	}
	if _, err := Init("acme", path); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second Init: %v", err)
	}
	l, err := LoadSigner(path)
	if err != nil || l.Public() != s.Public() || l.Name() != "acme" {
		t.Fatalf("LoadSigner = %v, %v", l, err)
	}
	f, _ := os.Open(path)
	defer f.Close()
	r, err := ReadSigner(f)
	if err != nil || r.Public() != s.Public() {
		t.Fatalf("ReadSigner = %v, %v", r, err)
	}
	raw, _ := os.ReadFile(path)
	seedLine := ""
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "private_key") {
			seedLine = strings.Trim(strings.TrimSpace(strings.SplitN(line, "=", 2)[1]), `"`)
		}
	}
	if seedLine == "" {
		t.Fatal("no private_key line")
	}
	for _, shown := range []string{s.String(), s.GoString(), fmtAll(s)} {
		if strings.Contains(shown, seedLine) {
			t.Fatalf("signer printed its key: %s", shown)
		}
	}
	if _, err := Init("acme", filepath.Join(dir, "missing", "k")); err == nil {
		t.Error("Init into a missing directory succeeded")
	}
	if _, err := Init("Bad Name", filepath.Join(dir, "b.key")); err == nil {
		t.Error("Init with a bad name succeeded")
	}
	for in, want := range map[string]string{
		"":                                       "no name",
		"name = \"acme\"\n":                      "no private_key",
		"name = acme\n":                          "double-quoted",
		"name = \"acme\"\nfoo = \"x\"\n":         "unknown key",
		"name = \"acme\"\nname = \"acme\"\n":     "twice",
		"name = \"acme\"\nprivate_key = \"x\"\n": "base64",
		"garbage\n":                              "expected key",
	} {
		if _, err := ReadSigner(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ReadSigner(%q) = %v, want %q", in, err, want)
		}
	}
}

func fmtAll(s *Signer) string {
	var b strings.Builder
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		b.WriteString(sprintf(f, s))
	}
	return b.String()
}

func TestRevoke(t *testing.T) {
	s := newSigner(t, "acme")
	c := signCert(t, s)
	other := signCert(t, s)
	k := nodeKey(t)
	l1, err := s.Revoke([]uint64{c.Serial}, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	if l1.Version != 1 || !l1.Revokes(c) || l1.Revokes(other) {
		t.Fatalf("first list: version %d, revokes c %v, other %v", l1.Version, l1.Revokes(c), l1.Revokes(other))
	}
	fi, err := os.Stat(s.path + ".state")
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v, %v", fi, err)
	}
	// A fresh load of the key sees the same state.
	s2, err := LoadSigner(s.path)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := s2.Revoke(nil, []identity.PublicKey{k, other.Node}, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if l2.Version != 2 || !l2.Revokes(c) || !l2.Revokes(other) || !l2.RevokesKey(k) || len(l2.Serials) != 1 || len(l2.Keys) != 2 {
		t.Fatalf("second list %+v", l2)
	}
	l3, err := s2.Revoke(nil, nil, t0.Add(2*time.Hour))
	if err != nil || l3.Version != 3 || len(l3.Serials)+len(l3.Keys) != 3 {
		t.Fatalf("refresh: %+v, %v", l3, err)
	}
	p, err := ParseCRL(l3.Text() + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.Binary(), l3.Binary()) {
		t.Fatal("round trip changed the list")
	}
	if err := p.Verify(s.Public()); err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(newSigner(t, "acme").Public()); !errors.Is(err, ErrWrongOrg) {
		t.Errorf("wrong org: %v", err)
	}
	b := p.Binary()
	for i := range b {
		m := bytes.Clone(b)
		m[i] ^= 0x01
		if d, err := DecodeCRL(m); err == nil && d.Verify(s.Public()) == nil {
			t.Fatalf("byte %d flipped: list verifies", i)
		}
	}
	if _, err := (&Signer{name: "x", key: s.key}).Revoke(nil, nil, t0); err == nil || !strings.Contains(err.Error(), "no state file") {
		t.Errorf("revoke without a key path: %v", err)
	}
	if _, err := s.Revoke([]uint64{0}, nil, t0); err == nil {
		t.Error("revoked serial 0")
	}
}

func TestDecodeCRLBounds(t *testing.T) {
	s := newSigner(t, "acme")
	l, err := s.Revoke([]uint64{1, 2}, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	b := l.Binary()
	// Claim 2^32-1 serials: refused before allocating.
	off := len(crlMagic) + 32 + 8 + 8
	m := bytes.Clone(b)
	copy(m[off:], []byte{0xff, 0xff, 0xff, 0xff})
	if _, err := DecodeCRL(m); err == nil || !strings.Contains(err.Error(), "serial count") {
		t.Errorf("huge count: %v", err)
	}
	// Unsorted serials are refused.
	m = bytes.Clone(b)
	m[off+4+7], m[off+4+15] = 2, 1
	if _, err := DecodeCRL(m); err == nil || !strings.Contains(err.Error(), "sorted") {
		t.Errorf("unsorted: %v", err)
	}
}

func TestPolicyDoc(t *testing.T) {
	s := newSigner(t, "acme")
	rules := []PolicyRule{{Action: "allow", From: "group:sales", To: "web1.acme", Proto: "tcp", Ports: "443"}, {Action: "deny", From: "*"}}
	tests := []PolicyTest{{From: "alice@sales.acme", To: "web1.acme", Groups: []string{"sales"}, Proto: "tcp", Port: 443, Expect: "allow"}}
	d1, err := s.SignPolicy(rules, tests, t0)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := s.SignPolicy(nil, nil, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if d1.Version != 1 || d2.Version != 2 {
		t.Fatalf("versions %d, %d", d1.Version, d2.Version)
	}
	for _, d := range []*PolicyDoc{d1, d2} {
		p, err := ParsePolicyDoc(d.Text() + "\n")
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p.Binary(), d.Binary()) || len(p.Rules) != len(d.Rules) || len(p.Tests) != len(d.Tests) {
			t.Fatalf("round trip: %+v vs %+v", p, d)
		}
		if err := p.Verify(s.Public()); err != nil {
			t.Fatal(err)
		}
	}
	p, _ := ParsePolicyDoc(d1.Text())
	if p.Rules[0] != rules[0] || p.Tests[0].Port != 443 || p.Tests[0].Groups[0] != "sales" {
		t.Fatalf("decoded %+v", p)
	}
	p.Rules[1].Action = "allow"
	if err := p.Verify(s.Public()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("mutated rule: %v", err)
	}
	b := d1.Binary()
	for i := range b {
		m := bytes.Clone(b)
		m[i] ^= 0x01
		if d, err := DecodePolicyDoc(m); err == nil && d.Verify(s.Public()) == nil {
			t.Fatalf("byte %d flipped: document verifies", i)
		}
	}
	if _, err := s.SignPolicy([]PolicyRule{{Action: "permit", From: "*"}}, nil, t0); err == nil {
		t.Error("signed an unknown action")
	}
	big := make([]PolicyRule, 3000)
	for i := range big {
		big[i] = PolicyRule{Action: "allow", From: "group:" + strings.Repeat("x", 20)}
	}
	if _, err := s.SignPolicy(big, nil, t0); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("over MaxPolicyBytes: %v", err)
	}
}

func TestPolicyDocRefusesNonCanonicalJSON(t *testing.T) {
	s := newSigner(t, "acme")
	d, err := s.SignPolicy([]PolicyRule{{Action: "allow", From: "*"}}, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, js := range []string{
		`{"rules":[{"action":"allow","from":"*"}],"tests":[]} `,
		`{"tests":[],"rules":[{"action":"allow","from":"*"}]}`,
		`{"rules":[{"action":"allow","from":"*"}],"tests":null}`,
		`{"rules":[{"action":"allow","from":"*","x":1}],"tests":[]}`,
	} {
		body := bytes.Clone(d.body[:policyFixed-4])
		body = append(body, byte(len(js)>>24), byte(len(js)>>16), byte(len(js)>>8), byte(len(js)))
		body = append(body, js...)
		if _, err := DecodePolicyDoc(append(body, d.sig...)); err == nil {
			t.Errorf("accepted %s", js)
		}
	}
}

func TestSignCertUnmapsIPv4(t *testing.T) {
	s := newSigner(t, "acme")
	c, err := s.SignCert(CertRequest{Node: nodeKey(t), Name: "a.acme", TTL: time.Hour,
		IPv4: []netip.Addr{netip.MustParseAddr("::ffff:100.64.0.3"), netip.MustParseAddr("100.64.0.3")}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.IPv4) != 1 || c.IPv4[0] != netip.MustParseAddr("100.64.0.3") {
		t.Fatalf("ipv4 %v, want [100.64.0.3]", c.IPv4)
	}
}
