package policy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/packet"
)

// Rules about a hosted device: its key, address or /128 in To opens flows
// to it; rules without To, or "self", are about this node only, and a
// wider prefix holding its address (an exit's ::/0) opens nothing on it;
// deny rules without To cover it too.
func TestAllowsToHosted(t *testing.T) {
	gen := func() identity.PublicKey {
		k, err := identity.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		return k.Public()
	}
	me, bob, dev, other := gen(), gen(), gen(), gen()
	D := dev.Address()
	rule := func(spec RuleSpec) Entry {
		r, err := ParseRuleSpec(spec)
		if err != nil {
			t.Fatal(err)
		}
		return Entry{Rule: r}
	}
	self := Self{Addr: me.Address(), Hosted: []netip.Addr{D}}
	for _, c := range []struct {
		name  string
		rules []RuleSpec
		port  uint16
		want  bool
	}{
		{"no rule", nil, 22, false},
		{"rule about this node", []RuleSpec{{From: bob.String(), Proto: "tcp", Ports: "22"}}, 22, false},
		{"self", []RuleSpec{{From: bob.String(), Proto: "tcp", Ports: "22", To: "self"}}, 22, false},
		{"to the device's key", []RuleSpec{{From: bob.String(), Proto: "tcp", Ports: "22", To: dev.String()}}, 22, true},
		{"to the device's address", []RuleSpec{{From: bob.String(), Proto: "tcp", Ports: "22", To: D.String()}}, 22, true},
		{"another port", []RuleSpec{{From: bob.String(), Proto: "tcp", Ports: "22", To: dev.String()}}, 23, false},
		{"to the device's /128", []RuleSpec{{From: "*", Proto: "tcp", Ports: "22", To: D.String() + "/128"}}, 22, true},
		// An exit's rule for its default route ("these peers may use my
		// exit"), or any wider prefix holding the device, is not about it.
		{"to ::/0 (an exit's)", []RuleSpec{{From: "*", Proto: "tcp", Ports: "22", To: "::/0"}}, 22, false},
		{"to fc00::/8", []RuleSpec{{From: bob.String(), To: "fc00::/8"}}, 22, false},
		{"to the device's /64", []RuleSpec{{From: bob.String(), To: netip.PrefixFrom(D, 64).Masked().String()}}, 22, false},
		{"to the device's /127", []RuleSpec{{From: bob.String(), To: netip.PrefixFrom(D, 127).Masked().String()}}, 22, false},
		{"to another node", []RuleSpec{{From: bob.String(), Proto: "tcp", Ports: "22", To: other.String()}}, 22, false},
		{"deny without to", []RuleSpec{{From: bob.String(), Proto: "tcp", Ports: "22", To: dev.String()}, {Deny: true, From: bob.String()}}, 22, false},
	} {
		var es []Entry
		for _, s := range c.rules {
			es = append(es, rule(s))
		}
		m := CompileAt(es, nil, self, time.Now())
		if got := m.AllowsToHosted(bob.Address(), D, packet.ProtoTCP, c.port, true); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
		// A rule naming the device as destination opens nothing on this node.
		if c.want && m.AllowsTo(bob.Address(), me.Address(), true, packet.ProtoTCP, c.port, true) {
			t.Errorf("%s: the device's rule opens this node", c.name)
		}
	}
	// Not hosted: a rule naming the device's key is about another node
	// and is left out.
	m := CompileAt([]Entry{rule(RuleSpec{From: bob.String(), To: dev.String()})}, nil, Self{Addr: me.Address()}, time.Now())
	if m.AllowsToHosted(bob.Address(), D, packet.ProtoTCP, 22, true) || len(m.Entries()) != 0 {
		t.Error("a rule for a device this node does not host applies")
	}
}

// TestHairpinDenyFromDevice: the home's deny rules about a hosted device
// stop what it sends into the overlay, new flows and established ones;
// a deny for one port leaves the rest.
func TestHairpinDenyFromDevice(t *testing.T) {
	me, bob, dev := mustKey(t), mustKey(t), mustKey(t)
	A, B, D := me.Address(), bob.Address(), dev.Address()
	f := NewFilter(Local{Addr: A, Site: me.SitePrefix()}, Compile(nil), NewConntrack(1024), nil)
	f.SetHosted([]netip.Addr{D})
	now := time.Now().UnixNano()
	hairpin := func(what string, p *packet.Parsed, want Verdict) {
		t.Helper()
		v, fwd := f.Hairpin(p, now)
		if !fwd || v != want {
			t.Errorf("%s: %v (forward %v), want %v", what, v, fwd, want)
		}
	}
	hairpin("the device's SYN to bob, no deny", tcpPkt(D, B, 40000, 80, packet.TCPSyn), Accept)
	deny := func(spec RuleSpec) {
		r, err := ParseRuleSpec(spec)
		if err != nil {
			t.Fatal(err)
		}
		f.SetMatcher(CompileAt([]Entry{{Rule: r}}, nil, Self{Addr: A, Hosted: []netip.Addr{D}}, time.Now()))
	}
	deny(RuleSpec{Deny: true, From: "*", Proto: "tcp", Ports: "25"})
	hairpin("the device's SYN to bob's port 25, denied for all", tcpPkt(D, B, 40001, 25, packet.TCPSyn), DropDenied)
	hairpin("the device's SYN to bob's port 80, denied for port 25 only", tcpPkt(D, B, 40002, 80, packet.TCPSyn), Accept)
	deny(RuleSpec{Deny: true, From: dev.String()})
	hairpin("the device's SYN after a deny naming it", tcpPkt(D, B, 40003, 80, packet.TCPSyn), DropDenied)
	hairpin("the device's segment on its established flow", tcpPkt(D, B, 40000, 80, packet.TCPAck), DropDenied)
	hairpin("the device's datagram", udpPkt(D, B, 5353, 53), DropDenied)
	if f.Denied(D) != 4 {
		t.Errorf("denials counted against the device: %d, want 4", f.Denied(D))
	}
	deny(RuleSpec{Deny: true, From: dev.String(), To: "self"})
	hairpin("a deny about the home itself (to = self)", tcpPkt(D, B, 40004, 80, packet.TCPSyn), Accept)
}
