package policy

import (
	"strings"
	"testing"
	"time"
)

const orgPolicySample = `
[[allow]]
from = "group:acme/sales"
proto = "tcp"
ports = "443"
to = "group:acme/crm"

[[allow]]
from = "org:acme"
proto = "icmp"

[[deny]]
from = "name:mallory*"

[[test]]
from = "name:alice@sales.acme"
groups = ["sales"]
to = "group:acme/crm"
proto = "tcp"
port = 443
expect = "allow"

[[test]]
from = "name:alice@sales.acme"
groups = ["sales"]
to = "group:acme/hr"
proto = "tcp"
port = 443
expect = "deny"

[[test]]
from = "name:mallory@ops.acme"
groups = ["sales"]
to = "group:acme/crm"
proto = "tcp"
port = 443
expect = "deny"

[[test]]
from = "org:acme"
proto = "icmp"
expect = "allow"

[[test]]
from = "org:other"
proto = "icmp"
expect = "allow"  # wrong on purpose
`

func TestOrgPolicyTests(t *testing.T) {
	specs, tests, err := ParseOrgPolicyTOML([]byte(orgPolicySample))
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 3 || !specs[2].Deny || len(tests) != 5 || tests[0].Line != 15 {
		t.Fatalf("specs %+v tests %+v", specs, tests)
	}
	var rules []Rule
	for _, s := range specs {
		rules = append(rules, mustSpec(t, s))
	}
	res := RunTests(tests, func(e Expectation) (Decision, error) { return EvalOrgTest(rules, e) })
	for i, r := range res {
		want := i != 4
		if r.OK != want || r.Err != nil {
			t.Errorf("%s: OK %v (want %v), err %v, got %+v", r.Name(i), r.OK, want, r.Err, r.Got)
		}
	}
	if !strings.Contains(res[2].Got.Reason, "denied by policy document rule") {
		t.Errorf("mallory: %s", res[2].Got.Reason)
	}
}

func TestNodeTests(t *testing.T) {
	alice, _, bob, dir := dirFixture()
	es := entries(t, SourceConfig,
		RuleSpec{From: "group:acme/eng", Proto: "tcp", Ports: "22"},
		RuleSpec{From: bob.String(), To: "10.1.0.0/16", Proto: "udp"})
	self := Self{Addr: alice}
	tests, err := ParseTests([]byte(`
[[test]]
from = "group:acme/eng"
proto = "tcp"
port = 22
expect = "allow"

[[test]]
from = "` + alice.String() + `"
groups = ["eng"]
proto = "tcp"
port = 22
expect = "allow"

[[test]]
from = "` + alice.String() + `"
proto = "tcp"
port = 22
expect = "deny"

[[test]]
from = "` + bob.String() + `"
to = "10.1.2.3"
proto = "udp"
port = 53
expect = "allow"

[[test]]
from = "` + bob.String() + `"
proto = "udp"
port = 53
expect = "deny"
`))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range RunTests(tests, func(e Expectation) (Decision, error) { return EvalTest(es, dir, self, time.Now(), e) }) {
		if !r.OK {
			t.Errorf("%s: %+v err %v", r.Name(i), r.Got, r.Err)
		}
	}
}

func TestParseTestsErrors(t *testing.T) {
	for _, c := range []struct{ doc, want string }{
		{"[[test]]\nfrom = \"*\"\nproto = \"tcp\"\nport = 1\nexpect = \"allow\"", "test 1 (line 1): from:"},
		{"[[test]]\nfrom = \"org:acme\"\nproto = \"tcp\"\nport = 1\nexpect = \"maybe\"", `expect = "maybe"`},
		{"[[test]]\nfrom = \"org:acme\"\nproto = \"tcp\"\nexpect = \"allow\"", "port = 0"},
		{"[[test]]\nfrom = \"org:acme\"\nproto = \"icmp\"\nport = 3\nexpect = \"allow\"", "port makes no sense"},
		{"[[test]]\nfrom = \"org:acme\"\nprot = \"tcp\"", `line 3: unknown key "test.prot"`},
		{"[[test]]\nfrom = \"name:alice\"\nproto = \"tcp\"\nport = 1\nexpect = \"allow\"", "last label"},
		{"[[test]]\nfrom = \"name:a*@x.acme\"\nproto = \"tcp\"\nport = 1\nexpect = \"allow\"", "without *"},
		{"[[test]\n", "line 1"},
	} {
		_, err := ParseTests([]byte(c.doc))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseTests(%q): %v, want %q", c.doc, err, c.want)
		}
	}
	if _, _, err := ParseOrgPolicyTOML([]byte("[[deny]]\nfrom = \"group:x\"")); err == nil || !strings.Contains(err.Error(), "deny[0]") {
		t.Errorf("bad org rule: %v", err)
	}
}

func FuzzParseIdentity(f *testing.F) {
	for _, s := range []string{"*", "fc00::1", "group:acme/sales", "org:acme", "name:*@sales.acme", "name:a**b", "group:/", "", "name:"} {
		f.Add(s, "alice@sales.acme")
	}
	f.Fuzz(func(t *testing.T, s, name string) {
		id, err := ParseIdentity(s)
		if err != nil {
			return
		}
		again, err := ParseIdentity(id.String())
		if err != nil || !again.Same(id) {
			t.Fatalf("%q -> %q does not parse back the same: %v", s, id.String(), err)
		}
		id.Matches(testSubjectAddr, []Member{{Org: "acme", Name: name, Groups: []string{name}}})
		if d, err := ParseDest(s); err == nil {
			if _, err := ParseDest(d.String()); err != nil {
				t.Fatalf("dest %q -> %q: %v", s, d.String(), err)
			}
		}
	})
}

func FuzzParseTests(f *testing.F) {
	f.Add([]byte(orgPolicySample))
	f.Add([]byte("[[test]]\nfrom = \"org:acme\"\nproto = \"tcp\"\nport = 1\nexpect = \"allow\""))
	f.Add([]byte("[[test]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tests, err := ParseTests(data)
		if err == nil {
			for _, e := range tests {
				EvalOrgTest(nil, e)
			}
		}
		specs, tests, err := ParseOrgPolicyTOML(data)
		if err != nil {
			return
		}
		var rules []Rule
		for _, s := range specs {
			r, err := ParseRuleSpec(s)
			if err != nil {
				t.Fatalf("spec %+v accepted then refused: %v", s, err)
			}
			rules = append(rules, r)
		}
		for _, e := range tests {
			EvalOrgTest(rules, e)
		}
	})
}
