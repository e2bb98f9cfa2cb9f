package node

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/packet"
	"github.com/tomoe-net/tomoe/internal/policy"
)

// TestRevokeFlushesHostedDeviceFlows: the flows this node opened with a
// device that a peer hosts go when the device's rule or its home's does,
// as a peer's own do, so that no later packet from the device passes as
// their reply. Revoking the device's rule forgets its flows only (the
// home's session and flows stay); revoking the home's forgets those with
// all its devices too.
func TestRevokeFlushesHostedDeviceFlows(t *testing.T) {
	n := prepare(t, "n")
	home, dev, dev2 := newKey(t).Public(), newKey(t).Public(), newKey(t).Public()
	n.start(t, fmt.Sprintf("[[peers]]\npublic_key = %q\nendpoint = \"127.0.0.1:9\"\ndevices = [%q, %q]\n", home, dev, dev2)+
		allowDoc(home.String(), "tcp", "22")+allowDoc(dev.String(), "tcp", "22")+allowDoc(dev2.String(), "tcp", "22"))
	ct := n.filter.Conntrack()
	decode := func(b []byte) *packet.Parsed {
		var p packet.Parsed
		if err := p.Decode(b); err != nil {
			t.Fatal(err)
		}
		return &p
	}
	// n opens a flow to each; the SYN-ACK is its reply while the flow lasts.
	open := func(to netip.Addr) {
		t.Helper()
		if v := n.filter.Outbound(decode(packet.TCP(n.Address(), to, 40000, 80, packet.TCPSyn, nil)), time.Now().UnixNano()); v != policy.Accept {
			t.Fatalf("n's SYN to %v: %v", to, v)
		}
	}
	replies := func(from netip.Addr) bool {
		return ct.Reply(decode(packet.TCP(from, n.Address(), 80, 40000, packet.TCPSyn|packet.TCPAck, nil)), time.Now().UnixNano())
	}
	H, D, D2 := home.Address(), dev.Address(), dev2.Address()
	for _, a := range []netip.Addr{H, D, D2} {
		open(a)
	}
	revoke := func(key string) {
		t.Helper()
		if _, err := n.PolicyArea().Revoke(context.Background(), adminapi.RevokeRequest{From: key}); err != nil {
			t.Fatal(err)
		}
	}
	revoke(dev.String())
	if replies(D) {
		t.Error("the device's reply to n's flow passed after the device's rule was revoked")
	}
	if !replies(H) || !replies(D2) {
		t.Error("revoking one device's rule forgot the flows with its home or another device")
	}
	revoke(home.String())
	if replies(D2) {
		t.Error("a device's reply to n's flow passed after its home's rule was revoked (its session cut)")
	}
	if replies(H) {
		t.Error("the home's reply passed after its rule was revoked")
	}
}

// TestReloadFlushesHostedDeviceFlows: a reload that removes the rule
// naming a device a peer hosts forgets the flows this node opened with
// the device, and leaves its home's.
func TestReloadFlushesHostedDeviceFlows(t *testing.T) {
	n := prepare(t, "n")
	home, dev := newKey(t).Public(), newKey(t).Public()
	peer := fmt.Sprintf("[[peers]]\npublic_key = %q\nendpoint = \"127.0.0.1:9\"\ndevices = [%q]\n", home, dev)
	n.startFile(t, peer+allowDoc(home.String(), "tcp", "22")+allowDoc(dev.String(), "tcp", "22"))
	decode := func(b []byte) *packet.Parsed {
		var p packet.Parsed
		if err := p.Decode(b); err != nil {
			t.Fatal(err)
		}
		return &p
	}
	H, D := home.Address(), dev.Address()
	for _, a := range []netip.Addr{H, D} {
		if v := n.filter.Outbound(decode(packet.TCP(n.Address(), a, 40000, 80, packet.TCPSyn, nil)), time.Now().UnixNano()); v != policy.Accept {
			t.Fatalf("n's SYN to %v: %v", a, v)
		}
	}
	replies := func(from netip.Addr) bool {
		return n.filter.Conntrack().Reply(decode(packet.TCP(from, n.Address(), 80, 40000, packet.TCPSyn|packet.TCPAck, nil)), time.Now().UnixNano())
	}
	n.writeConfig(t, peer+allowDoc(home.String(), "tcp", "22"))
	n.reload(t)
	if replies(D) {
		t.Error("the device's reply to n's flow passed after a reload removed its rule")
	}
	if !replies(H) {
		t.Error("the home's flow went with its device's rule")
	}
}
