package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tomoe-net/tomoe/internal/org"
)

// Org is one organisation this node trusts ([[orgs]]): its certificates
// admit members by name and group, its revocation lists cut them.
type Org struct {
	// Name is how this node's rules name the organisation (group:NAME/G,
	// org:NAME); it must equal the name its key was made with, which its
	// certificates carry.
	Name string `toml:"name"`
	// PublicKey is the organisation's key ("tomoe-org:...", from
	// `tomoe org init` or `tomoe org public`).
	PublicKey org.PublicKey `toml:"public_key"`
	// Cert is this node's own certificate in the organisation (a file
	// holding the "tomoe-cert:..." line); optional for nodes that only
	// verify others.
	Cert string `toml:"cert"`
	// CRLMaxAge, if set, refuses the organisation's certificates while the
	// newest revocation list held is older (fail closed), e.g. "24h".
	CRLMaxAge Duration `toml:"crl_max_age"`
	// AcceptPolicy applies the organisation's signed policy documents.
	AcceptPolicy bool `toml:"accept_policy"`
}

// Duration is a length of time written as text: Go's form ("90m",
// "24h") or whole days and weeks ("7d", "2w").
type Duration time.Duration

// ParseDuration parses Go durations and the d and w suffixes.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			var v int64
			if _, err := fmt.Sscanf(n, "%d", &v); err != nil || v <= 0 || fmt.Sprint(v) != n || v > 100*365 {
				return 0, fmt.Errorf("%q: a whole number of days or weeks, e.g. \"7d\"", s)
			}
			return time.Duration(v) * unit, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q: a duration such as \"24h\", \"90m\" or \"7d\"", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q: must be positive", s)
	}
	return d, nil
}

// UnmarshalText parses a duration as ParseDuration does.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText gives Go's form.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// validateOrgs checks [[orgs]]: names and keys unique and set, and this
// node's own certificates readable, for this node's key and signed by
// the organisation (expiry is the node's to report: it may be renewed
// while the node runs).
func (c *Config) validateOrgs(bad func(key, format string, args ...any)) {
	names := map[string]bool{}
	keys := map[org.PublicKey]bool{}
	for i, o := range c.Orgs {
		key := fmt.Sprintf("orgs[%d]", i)
		if err := org.ValidOrgName(o.Name); err != nil {
			bad(key+".name", "%v", err)
		} else if names[o.Name] {
			bad(key+".name", "%q is listed twice", o.Name)
		}
		names[o.Name] = true
		if o.PublicKey.IsZero() {
			bad(key+".public_key", "missing: the organisation's key, \"tomoe-org:...\" (`tomoe org public < ORGKEY`)")
		} else if keys[o.PublicKey] {
			bad(key+".public_key", "this organisation key is listed twice")
		}
		keys[o.PublicKey] = true
		if o.Cert != "" && !c.reload {
			if _, err := c.OrgCert(o); err != nil {
				bad(key+".cert", "%v", err)
			}
		}
	}
}

// OrgCert reads and checks this node's own certificate in o: its
// organisation and signature. That it is for this node's key, the node
// checks when it has loaded the key.
func (c *Config) OrgCert(o Org) (*org.Cert, error) {
	if o.Cert == "" {
		return nil, nil
	}
	b, err := os.ReadFile(o.Cert)
	if err != nil {
		return nil, fmt.Errorf("%v (make one with `tomoe cert sign --org-key ORGKEY --node $(tomoe key public) --name NAME --out %s`)", err, o.Cert)
	}
	cert, err := org.ParseCert(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %v", o.Cert, err)
	}
	if cert.Org != o.PublicKey {
		return nil, fmt.Errorf("%s: certificate of organisation %s, not of this [[orgs]] entry's public_key", o.Cert, cert.Org)
	}
	if cert.OrgName != o.Name {
		return nil, fmt.Errorf("%s: certificate of organisation %q, but this entry's name is %q (use the organisation's own name)", o.Cert, cert.OrgName, o.Name)
	}
	if err := cert.Verify(o.PublicKey, cert.NotBefore); err != nil {
		return nil, fmt.Errorf("%s: %v", o.Cert, err)
	}
	return cert, nil
}

// orgPaths makes the certificates' paths absolute.
func (c *Config) orgPaths() {
	for i := range c.Orgs {
		if p := c.Orgs[i].Cert; p != "" && !filepath.IsAbs(p) && c.dir != "" {
			c.Orgs[i].Cert = filepath.Join(c.dir, p)
		}
	}
}
