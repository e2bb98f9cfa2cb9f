package policy

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/packet"
)

// Expectation is one policy test: traffic from a subject to a destination
// and whether the rules should allow it (`tomoe policy test`).
//
// From is a key or node address (its memberships come from the Directory
// the rules are evaluated with), or a hypothetical member:
// "name:alice@sales.acme" (its organisation is the name's last label, after
// the last '.' or '@'), "group:acme/sales" (a member of acme in group
// sales), or "org:acme". Groups adds more groups of that member in its
// organisation. To is "" or "self" (this node), an IP address (a forwarded
// destination), or, for organisation documents only, the destination node:
// a key, node address, or "name:"/"group:"/"org:" member as for From.
type Expectation struct {
	From   string   `json:"from" toml:"from"`
	To     string   `json:"to,omitempty" toml:"to"`
	Groups []string `json:"groups,omitempty" toml:"groups"`
	Proto  string   `json:"proto" toml:"proto"`
	Port   int      `json:"port,omitempty" toml:"port"`
	Expect string   `json:"expect" toml:"expect"`    // "allow" or "deny"
	Line   int      `json:"line,omitempty" toml:"-"` // of its [[test]] header in the file; 0 if unknown
}

// Result is an evaluated Expectation.
type Result struct {
	Expectation
	Got Decision
	Err error // the test could not be evaluated (Got is zero)
	OK  bool  // Got matches Expect
}

// Name identifies the test in messages: "test 3 (line 12)".
func (t Expectation) Name(i int) string {
	if t.Line > 0 {
		return fmt.Sprintf("test %d (line %d)", i+1, t.Line)
	}
	return fmt.Sprintf("test %d", i+1)
}

type testsFile struct {
	Test []Expectation `toml:"test"`
}

// ParseTests parses a policy tests file: [[test]] tables with from, to
// (optional), groups (optional), proto, port and expect = "allow"|"deny".
// Unknown keys are refused; errors name the test.
func ParseTests(data []byte) ([]Expectation, error) {
	var f testsFile
	if err := decodeStrict(data, &f); err != nil {
		return nil, err
	}
	if err := checkTests(data, f.Test); err != nil {
		return nil, err
	}
	return f.Test, nil
}

type orgPolicyFile struct {
	Allow []ruleTOML    `toml:"allow"`
	Deny  []ruleTOML    `toml:"deny"`
	Test  []Expectation `toml:"test"`
}

type ruleTOML struct {
	From  string `toml:"from"`
	To    string `toml:"to"`
	Proto string `toml:"proto"`
	Ports string `toml:"ports"`
	Until string `toml:"until"`
}

// ParseOrgPolicyTOML parses the source of an organisation's policy
// document: [[allow]] and [[deny]] tables (from, to, proto, ports, until)
// and [[test]] tables as ParseTests reads them. Every rule is checked with
// ParseRuleSpec; allow rules come first in rules, then deny rules.
func ParseOrgPolicyTOML(data []byte) (rules []RuleSpec, tests []Expectation, err error) {
	var f orgPolicyFile
	if err := decodeStrict(data, &f); err != nil {
		return nil, nil, err
	}
	for _, part := range []struct {
		name  string
		deny  bool
		rules []ruleTOML
	}{{"allow", false, f.Allow}, {"deny", true, f.Deny}} {
		for i, r := range part.rules {
			s := RuleSpec{Deny: part.deny, From: r.From, To: r.To, Proto: r.Proto, Ports: r.Ports, Until: r.Until}
			if _, err := ParseRuleSpec(s); err != nil {
				return nil, nil, fmt.Errorf("%s[%d]: %v", part.name, i, err)
			}
			rules = append(rules, s)
		}
	}
	if err := checkTests(data, f.Test); err != nil {
		return nil, nil, err
	}
	return rules, f.Test, nil
}

func decodeStrict(data []byte, v any) error {
	err := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields().Decode(v)
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) && len(strict.Errors) > 0 {
		e := strict.Errors[0]
		line, _ := e.Position()
		return fmt.Errorf("line %d: unknown key %q", line, strings.Join(e.Key(), "."))
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, col := de.Position()
		return fmt.Errorf("line %d, column %d: %v", line, col, strings.TrimPrefix(de.Error(), "toml: "))
	}
	return err
}

// checkTests sets each test's Line (the n-th "[[test]]" header) and
// validates it.
func checkTests(data []byte, tests []Expectation) error {
	var lines []int
	for i, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "[[test]]") {
			lines = append(lines, i+1)
		}
	}
	for i := range tests {
		if i < len(lines) && len(lines) == len(tests) {
			tests[i].Line = lines[i]
		}
		if err := tests[i].check(); err != nil {
			return fmt.Errorf("%s: %v", tests[i].Name(i), err)
		}
	}
	return nil
}

func (t Expectation) check() error {
	if t.Expect != "allow" && t.Expect != "deny" {
		return fmt.Errorf(`expect = %q: write "allow" or "deny"`, t.Expect)
	}
	if _, _, _, err := t.packet(); err != nil {
		return err
	}
	if _, err := subject(t.From, nil, nil); err != nil {
		return fmt.Errorf("from: %v", err)
	}
	for _, g := range t.Groups {
		if err := checkName(g, "group", 63, "a-z 0-9 . _ -", isGroupChar); err != nil {
			return fmt.Errorf("groups: %v", err)
		}
	}
	return nil
}

// packet gives the test's IP protocol and port.
func (t Expectation) packet() (ipProto uint8, port uint16, hasPorts bool, err error) {
	switch strings.ToLower(t.Proto) {
	case "tcp":
		ipProto = packet.ProtoTCP
	case "udp":
		ipProto = packet.ProtoUDP
	case "icmp":
		if t.Port != 0 {
			return 0, 0, false, errors.New("port makes no sense with proto icmp: drop it")
		}
		return packet.ProtoICMPv6, 0, false, nil
	default:
		return 0, 0, false, fmt.Errorf(`proto = %q: write "tcp", "udp" or "icmp"`, t.Proto)
	}
	if t.Port < 1 || t.Port > 65535 {
		return 0, 0, false, fmt.Errorf("port = %d: give the destination port (1-65535)", t.Port)
	}
	return ipProto, uint16(t.Port), true, nil
}

// Addresses given to hypothetical test subjects and destination nodes.
// They are in fc00::/8 like node addresses; a real node's address (a hash
// of its key) is one of them with negligible probability.
var (
	testSubjectAddr = netip.MustParseAddr("fc00::7e57:1")
	testDestAddr    = netip.MustParseAddr("fc00::7e57:2")
)

// party is a test's source or destination node.
type party struct {
	addr         netip.Addr
	members      []Member
	hypothetical bool // not from the directory: add it before compiling
}

// subject resolves a test's From (or an organisation test's To) into a
// node: a key or node address with its memberships from dir, or a
// hypothetical member.
func subject(s string, groups []string, dir Directory) (party, error) {
	id, err := ParseIdentity(s)
	if err != nil {
		return party{}, err
	}
	var m Member
	switch id.kind() {
	case KindNode:
		p := party{addr: id.Addr, members: dir[id.Addr]}
		if len(groups) > 0 {
			if len(p.members) != 1 {
				return party{}, fmt.Errorf("groups needs a subject with exactly one membership (%s has %d); write from = \"name:...\" or \"group:ORG/GROUP\"", s, len(p.members))
			}
			m := p.members[0]
			m.Groups = append(append([]string(nil), m.Groups...), groups...)
			p.members, p.hypothetical = []Member{m}, true
		}
		return p, nil
	case KindAny:
		return party{}, errors.New(`"*" is not a subject: name a node (key or address) or a member (name:, group:, org:)`)
	case KindName:
		if strings.Contains(id.Glob, "*") {
			return party{}, fmt.Errorf("%s: a test subject has one name, without *", s)
		}
		cut := strings.LastIndexAny(id.Glob, ".@")
		if cut < 0 || cut == len(id.Glob)-1 {
			return party{}, fmt.Errorf("%s: the organisation is the name's last label (alice@sales.acme is in acme); this name has none", s)
		}
		m = Member{Org: id.Glob[cut+1:], Name: id.Glob}
	case KindGroup:
		m = Member{Org: id.Org, Groups: []string{id.Group}}
	case KindOrg:
		m = Member{Org: id.Org}
	}
	for _, g := range groups {
		if err := checkName(g, "group", 63, "a-z 0-9 . _ -", isGroupChar); err != nil {
			return party{}, fmt.Errorf("groups: %v", err)
		}
	}
	m.Groups = append(m.Groups, groups...)
	return party{addr: testSubjectAddr, members: []Member{m}, hypothetical: true}, nil
}

// EvalTest evaluates t against a node's rules: entries, dir and self as
// Store.Snapshot gives them, at now. To may be "", "self" or an IP address
// (a node address other than self's, or any other address: a forwarded
// destination).
func EvalTest(entries []Entry, dir Directory, self Self, now time.Time, t Expectation) (Decision, error) {
	ipProto, port, hasPorts, err := t.packet()
	if err != nil {
		return Decision{}, err
	}
	src, err := subject(t.From, t.Groups, dir)
	if err != nil {
		return Decision{}, fmt.Errorf("from: %v", err)
	}
	dst, isSelf := self.Addr, true
	switch to := strings.TrimSpace(t.To); to {
	case "", "self":
	default:
		a, err := netip.ParseAddr(to)
		if err != nil {
			return Decision{}, fmt.Errorf(`to = %q: on a node, write "self" or an IP address (destination nodes by name:/group:/org: are for --org-policy)`, to)
		}
		dst, isSelf = a, a == self.Addr
	}
	if src.hypothetical {
		dir = withParty(dir, src)
	}
	return CompileAt(entries, dir, self, now).Explain(src.addr, dst, isSelf, ipProto, port, hasPorts), nil
}

func withParty(dir Directory, p party) Directory {
	out := make(Directory, len(dir)+1)
	for a, m := range dir {
		out[a] = m
	}
	out[p.addr] = p.members
	return out
}

// EvalOrgTest evaluates t against an organisation document's rules, with no
// node: the destination node is the one To describes (a hypothetical
// member, a key or node address, or "" / "self": a node with no
// membership), or, for another IP address, a node forwarding to it.
func EvalOrgTest(rules []Rule, t Expectation) (Decision, error) {
	entries := make([]Entry, len(rules))
	for i, r := range rules {
		entries[i] = Entry{Rule: r, Source: SourceOrg, Origin: "policy document"}
	}
	self := Self{Addr: testDestAddr}
	tt := t
	to := strings.TrimSpace(t.To)
	switch a, err := netip.ParseAddr(to); {
	case to == "" || to == "self":
	case err == nil && !identity.IsNodeAddress(a):
		// A forwarded destination of a node with no membership.
	default:
		d, err := subject(to, nil, nil)
		if err != nil {
			return Decision{}, fmt.Errorf("to: %v", err)
		}
		self = Self{Addr: d.addr, Members: d.members}
		if d.hypothetical {
			self.Addr = testDestAddr
		}
		tt.To = ""
	}
	return EvalTest(entries, nil, self, time.Now(), tt)
}

// RunTests evaluates every test with eval and compares with its Expect.
func RunTests(tests []Expectation, eval func(Expectation) (Decision, error)) []Result {
	out := make([]Result, len(tests))
	for i, t := range tests {
		d, err := eval(t)
		out[i] = Result{Expectation: t, Got: d, Err: err, OK: err == nil && d.Allowed == (t.Expect == "allow")}
	}
	return out
}
