package policy

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/packet"
)

// REVIEW (adversarial): AllowsToHosted takes any allow rule whose `to`
// is a prefix holding the device's address. An exit node's rule for its
// default route (`to = "::/0"`: "these peers may use my exit") is such a
// prefix: on a home that is also an exit, it opens every hosted device
// (a phone with no firewall of its own) to those peers on those ports.
func TestReviewExitRuleOpensHostedDevices(t *testing.T) {
	me, bob, dev := mustKey(t), mustKey(t), mustKey(t)
	D := dev.Address()
	r, err := ParseRuleSpec(RuleSpec{From: "*", To: "::/0"})
	if err != nil {
		t.Fatal(err)
	}
	m := CompileAt([]Entry{{Rule: r}}, nil, Self{Addr: me.Address(), Hosted: []netip.Addr{D}}, time.Now())
	if m.AllowsToHosted(bob.Address(), D, packet.ProtoTCP, 22, true) {
		t.Fatal(`an exit's rule (to = "::/0") lets anyone reach the hosted device's port 22`)
	}
}
