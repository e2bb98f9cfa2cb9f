package devices

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
)

func newKey(t *testing.T) identity.PrivateKey {
	t.Helper()
	k, err := identity.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestStorePersists(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state", "devices.json")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.List()) != 0 {
		t.Fatal("a new store has devices")
	}
	k1, k2 := newKey(t), newKey(t)
	d1 := Device{Name: "phone", PublicKey: k1.Public(), Added: time.Unix(1700000000, 0).UTC()}
	if err := s.Add(d1); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(Device{Name: "tablet", PublicKey: k2.Public()}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file %v mode %v", err, fi.Mode())
	}
	b, _ := os.ReadFile(path)
	if strings.Contains(string(b), k1.Base64()) || strings.Contains(string(b), k2.Base64()) {
		t.Fatal("the file holds a private key")
	}
	for _, c := range []struct {
		d    Device
		want error
	}{
		{Device{Name: "PHONE", PublicKey: newKey(t).Public()}, ErrExists},
		{Device{Name: "other", PublicKey: k1.Public()}, ErrExists},
		{Device{Name: "-x", PublicKey: newKey(t).Public()}, ErrBadName},
		{Device{Name: "a b", PublicKey: newKey(t).Public()}, ErrBadName},
		{Device{Name: strings.Repeat("a", 65), PublicKey: newKey(t).Public()}, ErrBadName},
	} {
		if err := s.Add(c.d); !errors.Is(err, c.want) {
			t.Errorf("Add %q: %v, want %v", c.d.Name, err, c.want)
		}
	}

	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	got := s2.List()
	if len(got) != 2 || got[0] != d1 || got[1].Name != "tablet" {
		t.Fatalf("reloaded %+v", got)
	}
	// Remove by name, key or address.
	for _, q := range []string{"phone", k2.Public().String()} {
		if _, err := s2.Remove(q); err != nil {
			t.Fatalf("remove %q: %v", q, err)
		}
	}
	if _, err := s2.Remove("phone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
	s3, err := Open(path)
	if err != nil || len(s3.List()) != 0 {
		t.Fatalf("after removal: %v %+v", err, s3.List())
	}
	if err := s3.Add(Device{Name: "x", PublicKey: k1.Public()}); err != nil {
		t.Fatal(err)
	}
	if _, err := s3.Remove(k1.Public().Address().String()); err != nil {
		t.Fatalf("remove by address: %v", err)
	}
}

func TestStoreBounded(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "devices.json"))
	if err != nil {
		t.Fatal(err)
	}
	s.st.Devices = make([]Device, Max) // as if full
	if err := s.Add(Device{Name: "one-more", PublicKey: newKey(t).Public()}); !errors.Is(err, ErrFull) {
		t.Fatalf("over the bound: %v", err)
	}
}

func TestStoreRefusesCorrupt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "devices.json")
	for _, doc := range []string{
		`{"version":1,"devices":[{"name":"a b","public_key":"` + newKey(t).Public().String() + `"}]}`,
		`{"version":1,"devices":[{"name":"a"}]}`,
		`{"version":9,"devices":[]}`,
		`not json`,
	} {
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "corrupt") {
			t.Errorf("%s: %v", doc, err)
		}
	}
}

func TestWGQuick(t *testing.T) {
	k := newKey(t)
	home := newKey(t).Public()
	p := Profile{Name: "phone", PrivateKey: k, MTU: 1400, Home: home, Endpoint: "198.51.100.7:4610",
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("fc00::/8"), netip.MustParsePrefix("192.168.10.0/24")}, Keepalive: DefaultKeepalive}
	want := "# tomoe device phone: its address is derived from its key\n" +
		"[Interface]\n" +
		"PrivateKey = " + k.Base64() + "\n" +
		"Address = " + k.Public().Address().String() + "/128\n" +
		"MTU = 1400\n" +
		"\n[Peer]\n" +
		"PublicKey = " + home.String() + "\n" +
		"Endpoint = 198.51.100.7:4610\n" +
		"AllowedIPs = fc00::/8, 192.168.10.0/24\n" +
		"PersistentKeepalive = 25\n"
	if got := p.WGQuick(); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	p.DNS = []netip.Addr{netip.MustParseAddr("fc00::53")}
	p.MTU = 0
	got := p.WGQuick()
	if !strings.Contains(got, "DNS = fc00::53\n") || strings.Contains(got, "MTU") {
		t.Fatalf("DNS/MTU:\n%s", got)
	}
}
