package config

import (
	"os/user"
	"slices"
	"strings"
	"testing"
)

func TestRunUser(t *testing.T) {
	_, tomoeErr := user.Lookup(DefaultRunUser)
	defaultName := ""
	if tomoeErr == nil {
		defaultName = DefaultRunUser
	}
	for _, tc := range []struct {
		doc      string
		name     string
		explicit bool
		err      string
	}{
		{"", defaultName, false, ""},
		{"[run]\nuser = \"\"", defaultName, false, ""},
		{"[run]\nuser = \"root\"", "", true, ""},
		{"[run]\nuser = \"daemon\"", "daemon", true, ""},
		{"[run]\nuser = \"nobody\"", "", false, `run.user: user "nobody" (uid 65534) is shared with other programs`},
		{"[run]\nuser = \"no-such-user-tomoe\"", "", false, `run.user: user "no-such-user-tomoe" does not exist: create it (useradd --system`},
		{"[run]\nuser = 7", "", false, "run.user"},
		{"[run]\nusr = \"nobody\"", "", false, "run.usr"},
	} {
		c, err := Parse([]byte(tc.doc), "c.toml", "/x")
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want an error with %q", tc.doc, err, tc.err)
			}
			continue
		}
		if err != nil {
			if tc.name == "daemon" && strings.Contains(err.Error(), "does not exist") {
				t.Skip("no user daemon here")
			}
			t.Errorf("%q: %v", tc.doc, err)
			continue
		}
		if name, explicit := c.RunUser(); name != tc.name || explicit != tc.explicit {
			t.Errorf("%q: RunUser() = %q, %v; want %q, %v", tc.doc, name, explicit, tc.name, tc.explicit)
		}
	}
}

func TestStateDirs(t *testing.T) {
	c, err := Parse([]byte(`key_file = "/var/lib/tomoe/node.key"
[admin]
socket = "/run/tomoe/admin.sock"
[policy]
state_file = "/srv/tomoe-policy/policy.json"
`), "c.toml", "/etc/tomoe")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/var/lib/tomoe", "/srv/tomoe-policy", "/run/tomoe"}
	if got := c.StateDirs(); !slices.Equal(got, want) {
		t.Errorf("StateDirs() = %q, want %q", got, want)
	}
}
