package identity

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The expected addresses below were computed outside Go (Python hashlib) from
// the DESIGN.md formula, so a change to the derivation cannot pass unnoticed.
func TestAddressKnownAnswers(t *testing.T) {
	tests := []struct {
		pub, addr, site string
	}{
		{"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "fcff:805b:1683:9242:1948:aa5b:d63a:3561", "3fc:cfea:9fca:d8c4::/64"},
		{"HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=", "fc15:c34:74e8:280c:c066:9605:dfe9:9eba", "31f:738f:8a12:cdbb::/64"},
		{"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=", "fcfd:afa6:ea26:22b1:92f7:bcda:df3d:6ba8", "3e2:726f:c48e:572::/64"},
	}
	for _, tt := range tests {
		k, err := ParsePublicKey(tt.pub)
		if err != nil {
			t.Fatal(err)
		}
		if got := k.Address().String(); got != tt.addr {
			t.Errorf("Address(%s) = %s, want %s", tt.pub, got, tt.addr)
		}
		if got := k.SitePrefix().String(); got != tt.site {
			t.Errorf("SitePrefix(%s) = %s, want %s", tt.pub, got, tt.site)
		}
		if !IsNodeAddress(k.Address()) || !OverlayPrefix.Contains(k.Address()) {
			t.Errorf("%s not a node address", k.Address())
		}
		if !IsSiteAddress(k.SitePrefix().Addr()) || !SitePrefixSpace.Contains(k.SitePrefix().Addr()) {
			t.Errorf("%s not in site space", k.SitePrefix())
		}
	}
}

// The IPv4 addresses below were computed outside Go (Python hashlib and
// ipaddress) from the DESIGN.md formula: v = H[22:26] big-endian, the
// prefix's network address + 1 + v mod (2^h - 2).
func TestIPv4AddressKnownAnswers(t *testing.T) {
	prefixes := []string{"100.64.0.0/10", "10.99.0.0/24", "192.168.7.0/30", "0.0.0.0/0", "172.16.0.0/12"}
	tests := []struct {
		pub  string
		want []string
	}{
		{"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", []string{"100.118.50.184", "10.99.0.246", "192.168.7.2", "206.54.44.72", "172.22.70.14"}},
		{"HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=", []string{"100.86.20.178", "10.99.0.52", "192.168.7.2", "199.86.14.120", "172.22.39.98"}},
		{"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=", []string{"100.82.248.137", "10.99.0.197", "192.168.7.1", "219.18.241.177", "172.19.13.19"}},
	}
	for _, tt := range tests {
		k, err := ParsePublicKey(tt.pub)
		if err != nil {
			t.Fatal(err)
		}
		for i, ps := range prefixes {
			got, err := k.IPv4Address(netip.MustParsePrefix(ps))
			if err != nil || got.String() != tt.want[i] {
				t.Errorf("IPv4Address(%s, %s) = %v, %v; want %s", tt.pub, ps, got, err, tt.want[i])
			}
		}
	}
	if got, _ := mustKey(t, tests[0].pub).IPv4Address(DefaultIPv4Prefix); got.String() != "100.118.50.184" {
		t.Errorf("in DefaultIPv4Prefix: %v", got)
	}
}

// A derived address is never a prefix's network or broadcast address, and
// prefixes that cannot hold one are refused.
func TestIPv4AddressBounds(t *testing.T) {
	for range 200 {
		k, _ := GeneratePrivateKey()
		for _, ps := range []string{"192.168.7.0/30", "10.0.0.0/29", "100.64.0.0/10"} {
			p := netip.MustParsePrefix(ps)
			a, err := k.Public().IPv4Address(p)
			if err != nil || !p.Contains(a) || a == p.Addr() || a == lastAddr(p) {
				t.Fatalf("IPv4Address(%s) = %v, %v", p, a, err)
			}
		}
	}
	k := mustKey(t, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	for _, ps := range []string{"10.0.0.0/31", "10.0.0.1/32", "10.0.0.1/24", "fd00::/64"} {
		if a, err := k.IPv4Address(netip.MustParsePrefix(ps)); err == nil {
			t.Errorf("IPv4Address(%s) = %v, want an error", ps, a)
		}
	}
	if _, err := k.IPv4Address(netip.Prefix{}); err == nil {
		t.Error("IPv4Address of the zero prefix")
	}
}

func mustKey(t *testing.T, s string) PublicKey {
	t.Helper()
	k, err := ParsePublicKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// RFC 7748 section 6.1: Alice's key pair.
func TestPublicFromPrivateRFC7748(t *testing.T) {
	priv, err := ParsePrivateKey("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := priv.Public().String(), "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="; got != want {
		t.Fatalf("Public = %s, want %s", got, want)
	}
}

func TestGenerateIsClampedAndDistinct(t *testing.T) {
	a, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := GeneratePrivateKey()
	ra := a.Raw()
	if ra[0]&7 != 0 || ra[31]&128 != 0 || ra[31]&64 == 0 {
		t.Fatalf("key not clamped: %x", ra)
	}
	if a.Public() == b.Public() {
		t.Fatal("two generated keys are equal")
	}
	back, err := ParsePrivateKey(a.Base64())
	if err != nil || back.Public() != a.Public() {
		t.Fatalf("round trip: %v", err)
	}
}

func TestPrivateKeyNeverPrints(t *testing.T) {
	k, _ := GeneratePrivateKey()
	secret := k.Base64()
	var sb strings.Builder
	fmt.Fprintf(&sb, "%v %+v %#v %s", k, k, k, k)
	log := slog.New(slog.NewTextHandler(&sb, nil))
	log.Info("x", "key", k)
	if _, err := json.Marshal(struct{ K PrivateKey }{k}); err == nil {
		t.Error("json.Marshal of a private key succeeded")
	}
	if strings.Contains(sb.String(), secret) || strings.Contains(sb.String(), fmt.Sprint(k.Raw())) {
		t.Fatalf("private key leaked: %s", sb.String())
	}
}

func TestParseErrors(t *testing.T) {
	for _, in := range []string{"", "abc", "AAAA", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=AA==", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "!!!!"} {
		if _, err := ParsePublicKey(in); err == nil {
			t.Errorf("ParsePublicKey(%q) accepted", in)
		}
		if _, err := ParsePrivateKey(in); err == nil {
			t.Errorf("ParsePrivateKey(%q) accepted", in)
		}
	}
	// Whitespace around a key is what `wg genkey > f` leaves; accept it.
	if _, err := ParsePublicKey("  AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"); err != nil {
		t.Errorf("trailing newline rejected: %v", err)
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "node.key")
	k1, created, err := LoadOrCreateKeyFile(path)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	info, _ := os.Stat(path)
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %o", info.Mode().Perm())
	}
	dinfo, _ := os.Stat(filepath.Dir(path))
	if dinfo.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %o", dinfo.Mode().Perm())
	}
	k2, created, err := LoadOrCreateKeyFile(path)
	if err != nil || created || k2.Public() != k1.Public() {
		t.Fatalf("reload: %v %v", created, err)
	}
	os.Chmod(path, 0o644)
	if _, _, err := LoadOrCreateKeyFile(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key accepted: %v", err)
	}
	os.Chmod(path, 0o620)
	if _, _, err := LoadOrCreateKeyFile(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("group-writable key accepted: %v", err)
	}
	os.Chmod(path, 0o600)

	// The directory: whoever can write it can replace the key.
	sub := filepath.Dir(path)
	os.Chmod(sub, 0o777)
	if _, _, err := LoadOrCreateKeyFile(path); err == nil || !strings.Contains(err.Error(), "chmod go-w "+sub) {
		t.Fatalf("key in a world-writable directory accepted: %v", err)
	}
	// Nor is a new key created there.
	if _, _, err := LoadOrCreateKeyFile(filepath.Join(sub, "new.key")); err == nil || !strings.Contains(err.Error(), "chmod go-w "+sub) {
		t.Fatalf("key created in a world-writable directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(sub, "new.key")); err == nil {
		t.Fatal("new.key was written")
	}
	os.Chmod(sub, 0o700)

	if os.Geteuid() == 0 {
		os.Chown(path, 65534, 65534)
		if _, _, err := LoadOrCreateKeyFile(path); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") || !strings.Contains(err.Error(), "chown 0 "+path) {
			t.Fatalf("key owned by another user accepted: %v", err)
		}
		os.Chown(path, 0, 0)
	} else {
		t.Log("not root: cannot give the key to another user; ownership not exercised")
	}
	if _, _, err := LoadOrCreateKeyFile(path); err != nil {
		t.Fatalf("back to normal: %v", err)
	}

	os.WriteFile(path, []byte("garbage\n"), 0o600)
	if _, _, err := LoadOrCreateKeyFile(path); err == nil {
		t.Fatal("garbage key accepted")
	}
}

func FuzzParsePublicKey(f *testing.F) {
	f.Add("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParsePublicKey(s)
		if err != nil {
			return
		}
		if !IsNodeAddress(k.Address()) {
			t.Fatal("derived address outside fc00::/8")
		}
		back, err := ParsePublicKey(k.String())
		if err != nil || back != k {
			t.Fatal("round trip failed")
		}
	})
}
