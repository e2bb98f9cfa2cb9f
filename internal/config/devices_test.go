package config

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tomoe-net/tomoe/internal/identity"
)

func TestPeerDevices(t *testing.T) {
	key := func() string {
		k, err := identity.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		return k.Public().String()
	}
	home, other, dev, dev2 := key(), key(), key(), key()
	peer := func(k string, devices ...string) string {
		q := make([]string, len(devices))
		for i, d := range devices {
			q[i] = fmt.Sprintf("%q", d)
		}
		return fmt.Sprintf("[[peers]]\npublic_key = %q\nendpoint = \"192.0.2.1:4610\"\ndevices = [%s]\n", k, strings.Join(q, ", "))
	}
	many := make([]string, MaxDevicesPerPeer+1)
	for i := range many {
		many[i] = key()
	}
	for _, c := range []struct {
		name, doc, want string // want: "" accepted, else in the error
	}{
		{"two devices", peer(home, dev, dev2) + peer(other), ""},
		{"none", peer(home), ""},
		{"listed twice", peer(home, dev, dev), "peers[0].devices[1]: same device as peers[0].devices[0]"},
		{"two homes", peer(home, dev) + peer(other, dev), "peers[1].devices[0]: already hosted by peers[0]"},
		{"a peer's own key", peer(home, home), "peers[0].devices[0]: that is the peer's own key"},
		{"another peer", peer(home, other) + peer(other), "peers[0].devices[0]: that key is peers[1] itself"},
		{"not a key", peer(home, "nope"), "peers[0].devices"},
		{"too many", peer(home, many...), fmt.Sprintf("peers[0].devices: %d devices: a home node hosts at most %d", MaxDevicesPerPeer+1, MaxDevicesPerPeer)},
		{"not a list", fmt.Sprintf("[[peers]]\npublic_key = %q\nendpoint = \"192.0.2.1:4610\"\ndevices = %q\n", home, dev), "peers[0].devices"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := Parse([]byte("key_file = \"k\"\n"+c.doc), "t.toml", "/tmp")
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.name == "two devices" && (len(cfg.Peers[0].Devices) != 2 || cfg.Peers[0].Devices[1].String() != dev2) {
					t.Fatalf("devices %v", cfg.Peers[0].Devices)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
}
