package policy

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/identity"
	"github.com/tomoe-net/tomoe/internal/packet"
)

func mustKey(t testing.TB) identity.PublicKey {
	t.Helper()
	k, err := identity.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

func TestParsePorts(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"22", "22"},
		{"22,8000-8080", "22,8000-8080"},
		{" 8080 , 22, 8000-8079 ", "22,8000-8080"},
		{"1-65535", "1-65535"},
		{"5,4,3", "3-5"},
	}
	for _, tt := range tests {
		ps, err := ParsePorts(tt.in)
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if ps.String() != tt.want {
			t.Errorf("%q -> %q, want %q", tt.in, ps.String(), tt.want)
		}
	}
	for _, bad := range []string{"0", "65536", "a", "22,", ",22", "10-5", "1-2-3", "-5", "22;23"} {
		if _, err := ParsePorts(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseIdentityAndRule(t *testing.T) {
	k := mustKey(t)
	for _, in := range []string{k.String(), k.Address().String(), "[" + k.Address().String() + "]"} {
		id, err := ParseIdentity(in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if id.Addr != k.Address() || id.Any {
			t.Fatalf("%q -> %+v", in, id)
		}
	}
	for _, bad := range []string{"", "fd00::1", "10.0.0.1", "bob", "fc00::1%eth0", "**"} {
		if _, err := ParseIdentity(bad); err == nil {
			t.Errorf("identity %q accepted", bad)
		}
	}
	if _, err := ParseRule("*", "icmp", "22"); err == nil {
		t.Error("icmp with ports accepted")
	}
	if _, err := ParseRule("*", "sctp", ""); err == nil {
		t.Error("unknown proto accepted")
	}
}

// Identities, protocols and ports parse themselves from text (config
// files carry them as typed values) and give back the form they parse.
func TestRuleTextForms(t *testing.T) {
	k := mustKey(t)
	for _, in := range []string{"*", k.String(), k.Address().String()} {
		var id Identity
		if err := id.UnmarshalText([]byte(in)); err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if b, _ := id.MarshalText(); string(b) != in || id.IsZero() {
			t.Errorf("identity %q -> %q", in, b)
		}
	}
	var id Identity
	if err := id.UnmarshalText([]byte("bob")); err == nil || !id.IsZero() {
		t.Errorf("identity bob: %v, %+v", err, id)
	}
	for in, want := range map[string]string{"": "any", "TCP": "tcp", "icmp6": "icmp", "udp": "udp"} {
		var p Proto
		if err := p.UnmarshalText([]byte(in)); err != nil {
			t.Fatalf("proto %q: %v", in, err)
		}
		if b, _ := p.MarshalText(); string(b) != want {
			t.Errorf("proto %q -> %q, want %q", in, b, want)
		}
	}
	var p Proto
	if err := p.UnmarshalText([]byte("gre")); err == nil {
		t.Error("proto gre accepted")
	}
	var ps Ports
	if err := ps.UnmarshalText([]byte(" 8080 , 22, 8000-8079 ")); err != nil {
		t.Fatal(err)
	}
	if b, _ := ps.MarshalText(); string(b) != "22,8000-8080" {
		t.Errorf("ports -> %q", b)
	}
	if err := ps.UnmarshalText([]byte("10-5")); err == nil {
		t.Error("ports 10-5 accepted")
	}
	if err := (Rule{From: Identity{Any: true}, Proto: ProtoICMP, Ports: Ports{{22, 22}}}).Check(); err == nil {
		t.Error("icmp with ports passes Check")
	}
	if err := (Rule{From: Identity{Any: true}, Proto: ProtoAny, Ports: Ports{{22, 22}}}).Check(); err != nil {
		t.Errorf("any with ports: %v", err)
	}
}

func TestMatcher(t *testing.T) {
	bob, carol := mustKey(t), mustKey(t)
	rules := []Rule{
		mustRule(t, bob.String(), "tcp", "22,8000-8080"),
		mustRule(t, carol.Address().String(), "icmp", ""),
		mustRule(t, carol.String(), "udp", "53"),
	}
	m := Compile(rules)
	cases := []struct {
		src   netip.Addr
		proto uint8
		port  uint16
		ports bool
		want  bool
	}{
		{bob.Address(), packet.ProtoTCP, 22, true, true},
		{bob.Address(), packet.ProtoTCP, 8080, true, true},
		{bob.Address(), packet.ProtoTCP, 8081, true, false},
		{bob.Address(), packet.ProtoUDP, 22, true, false},
		{bob.Address(), packet.ProtoICMPv6, 0, false, false},
		{carol.Address(), packet.ProtoICMPv6, 0, false, true},
		{carol.Address(), packet.ProtoUDP, 53, true, true},
		{carol.Address(), packet.ProtoTCP, 53, true, false},
		{mustKey(t).Address(), packet.ProtoTCP, 22, true, false},
	}
	for i, c := range cases {
		if got := m.Allows(c.src, c.proto, c.port, c.ports); got != c.want {
			t.Errorf("case %d: Allows = %v, want %v", i, got, c.want)
		}
	}
	any := Compile([]Rule{mustRule(t, "*", "tcp", "80")})
	if !any.Allows(mustKey(t).Address(), packet.ProtoTCP, 80, true) || any.Allows(mustKey(t).Address(), packet.ProtoTCP, 81, true) {
		t.Error("wildcard rule")
	}
	// "any" with ports admits only TCP and UDP on those ports.
	ap := Compile([]Rule{mustRule(t, bob.String(), "any", "443")})
	if !ap.Allows(bob.Address(), packet.ProtoUDP, 443, true) || ap.Allows(bob.Address(), packet.ProtoICMPv6, 0, false) {
		t.Error("proto any with ports")
	}
}

func mustRule(t testing.TB, from, proto, ports string) Rule {
	t.Helper()
	r, err := ParseRule(from, proto, ports)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestStorePersistsAndRevokes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.json")
	bob, carol := mustKey(t), mustKey(t)
	config := []Rule{mustRule(t, bob.String(), "tcp", "22")}
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

	s, warn, err := OpenStore(path, config)
	if err != nil || len(warn) != 0 {
		t.Fatal(err, warn)
	}
	if added, err := s.Allow(mustRule(t, carol.Address().String(), "any", ""), now); err != nil || !added {
		t.Fatal(added, err)
	}
	// The same rule written with the key is equal: not added twice.
	if added, _ := s.Allow(mustRule(t, carol.String(), "any", ""), now); added {
		t.Fatal("duplicate rule added")
	}
	if _, err := s.Revoke(Identity{Addr: mustKey(t).Address()}, now); !errors.Is(err, ErrNoRule) {
		t.Fatalf("revoking an unknown identity: %v", err)
	}
	removed, err := s.Revoke(Identity{Addr: bob.Address()}, now)
	if err != nil || len(removed) != 1 || removed[0].Source != SourceConfig {
		t.Fatalf("revoke bob: %v %+v", err, removed)
	}
	if s.Matcher().AllowsAny(bob.Address()) {
		t.Fatal("bob still allowed")
	}
	if info, _ := os.Stat(path); info.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %o", info.Mode().Perm())
	}

	// Restart with the same config: carol's API rule is back, bob stays
	// revoked although the config still names him, and we are told.
	s2, warn, err := OpenStore(path, config)
	if err != nil {
		t.Fatal(err)
	}
	if len(warn) != 1 || !strings.Contains(warn[0], "suppressed") {
		t.Fatalf("warnings %q", warn)
	}
	m := s2.Matcher()
	if m.AllowsAny(bob.Address()) || !m.Allows(carol.Address(), packet.ProtoUDP, 9, true) {
		t.Fatal("restart lost the policy")
	}
	// Allowing bob again lifts the revocation: his config rule applies.
	if _, err := s2.Allow(mustRule(t, bob.String(), "tcp", "22"), now); err != nil {
		t.Fatal(err)
	}
	if !s2.Matcher().Allows(bob.Address(), packet.ProtoTCP, 22, true) {
		t.Fatal("allow did not restore bob")
	}
	if got := len(s2.Rules()); got != 2 {
		t.Fatalf("%d rules, want 2 (config bob, api carol)", got)
	}
}

func TestStoreRejectsCorruptState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.json")
	os.WriteFile(path, []byte(`{"version":1,"rules":[{"from":"nobody","proto":"tcp"}]}`), 0o600)
	if _, _, err := OpenStore(path, nil); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("corrupt state accepted: %v", err)
	}
}

func TestStoreSaveFailureChangesNothing(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "sub")
	s, _, err := OpenStore(filepath.Join(blocker, "policy.json"), nil)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(blocker, nil, 0o600) // the state's directory is now a file
	if _, err := s.Allow(mustRule(t, "*", "tcp", "1"), time.Now()); err == nil {
		t.Fatal("unsaveable change reported success")
	}
	if len(s.Rules()) != 0 {
		t.Fatal("failed change applied anyway")
	}
}

// pkt builds a decoded packet for filter tests.
func tcpPkt(src, dst netip.Addr, sport, dport uint16, flags uint8) *packet.Parsed {
	return &packet.Parsed{Version: 6, HasPorts: true, TCPFlags: flags,
		Flow: packet.Flow{Proto: packet.ProtoTCP, Src: src, Dst: dst, SrcPort: sport, DstPort: dport}}
}

func TestFilter(t *testing.T) {
	me, bob, eve := mustKey(t), mustKey(t), mustKey(t)
	local := Local{Addr: me.Address(), Site: me.SitePrefix()}
	var denials []Denial
	f := NewFilter(local, Compile([]Rule{mustRule(t, bob.String(), "tcp", "22")}), NewConntrack(0), func(d Denial) { denials = append(denials, d) })
	now := time.Now().UnixNano()
	A, B, E := me.Address(), bob.Address(), eve.Address()

	if v := f.Inbound(tcpPkt(B, A, 5000, 22, packet.TCPSyn), now); v != Accept {
		t.Fatalf("bob to 22: %v", v)
	}
	if v := f.Inbound(tcpPkt(B, A, 5000, 23, packet.TCPSyn), now); v != DropDenied {
		t.Fatalf("bob to 23: %v", v)
	}
	if v := f.Inbound(tcpPkt(E, A, 5000, 22, packet.TCPSyn), now); v != DropDenied {
		t.Fatalf("eve to 22: %v", v)
	}
	// Our SYN-ACK reply to bob must not open a way back in for bob's other ports.
	if v := f.Outbound(tcpPkt(A, B, 22, 5000, packet.TCPSyn|packet.TCPAck), now); v != Accept {
		t.Fatal(v)
	}
	if v := f.Inbound(tcpPkt(B, A, 5000, 23, packet.TCPAck), now); v != DropDenied {
		t.Fatalf("reply-looking packet to 23 admitted: %v", v)
	}
	// A flow we open to eve: her replies pass, a new connection from her does not.
	f.Outbound(tcpPkt(A, E, 40000, 80, packet.TCPSyn), now)
	if v := f.Inbound(tcpPkt(E, A, 80, 40000, packet.TCPSyn|packet.TCPAck), now); v != Accept {
		t.Fatalf("reply from eve: %v", v)
	}
	if v := f.Inbound(tcpPkt(E, A, 80, 40001, packet.TCPSyn), now); v != DropDenied {
		t.Fatalf("new flow from eve: %v", v)
	}
	// Spoofed outbound source.
	if v := f.Outbound(tcpPkt(B, E, 1, 2, packet.TCPSyn), now); v != DropSpoofed || f.Spoofed() != 1 {
		t.Fatalf("spoof: %v", v)
	}
	// A packet from bob for an address we do not own.
	if v := f.Inbound(tcpPkt(B, E, 5000, 22, packet.TCPSyn), now); v != DropNotLocal {
		t.Fatalf("not local: %v", v)
	}
	// The kernel's link-local and multicast chatter is not spoofing.
	if v := f.Outbound(tcpPkt(netip.MustParseAddr("fe80::1"), netip.MustParseAddr("ff02::2"), 1, 2, 0), now); v != DropNotOverlay || f.Spoofed() != 1 {
		t.Fatalf("link-local multicast: %v", v)
	}
	// Devices behind us (site prefix) may send and receive.
	site := me.SitePrefix().Addr().Next()
	if v := f.Outbound(tcpPkt(site, B, 1, 2, packet.TCPSyn), now); v != Accept {
		t.Fatalf("site source: %v", v)
	}
	if f.Denied(E) != 2 || f.Denied(B) != 3 {
		t.Fatalf("counters eve %d bob %d", f.Denied(E), f.Denied(B))
	}
	if len(denials) != 2 {
		t.Fatalf("%d denial reports, want one per source", len(denials))
	}
	// Flushing eve forgets our flow to her.
	f.Conntrack().Flush(func(a netip.Addr) bool { return a == E })
	if v := f.Inbound(tcpPkt(E, A, 80, 40000, packet.TCPAck), now); v != DropDenied {
		t.Fatalf("after flush: %v", v)
	}
}

func TestFilterICMP(t *testing.T) {
	me, bob := mustKey(t), mustKey(t)
	A, B := me.Address(), bob.Address()
	f := NewFilter(Local{Addr: A, Site: me.SitePrefix()}, Compile([]Rule{mustRule(t, bob.String(), "tcp", "22")}), NewConntrack(0), nil)
	now := time.Now().UnixNano()
	decode := func(b []byte) *packet.Parsed {
		var p packet.Parsed
		if err := p.Decode(b); err != nil {
			t.Fatal(err)
		}
		return &p
	}
	req := decode(packet.EchoRequest(A, B, 7, 1, nil))
	f.Outbound(req, now)
	reply := packet.EchoRequest(B, A, 7, 1, nil)
	reply[packet.IPv6HeaderLen] = packet.ICMPv6EchoReply
	if v := f.Inbound(decode(reply), now); v != Accept {
		t.Fatalf("echo reply: %v", v)
	}
	if v := f.Inbound(decode(packet.EchoRequest(B, A, 7, 1, nil)), now); v != DropDenied {
		t.Fatalf("echo request from bob with our id: %v", v)
	}
	// Packet Too Big about our reply to bob's allowed SSH connection.
	ours := make([]byte, packet.IPv6HeaderLen+20)
	binary.BigEndian.PutUint16(ours[packet.IPv6HeaderLen:], 22)
	binary.BigEndian.PutUint16(ours[packet.IPv6HeaderLen+2:], 5000)
	ours[packet.IPv6HeaderLen+12] = 5 << 4
	packet.IPv6Header(ours, A, B, packet.ProtoTCP, 20, 64)
	ptb := packet.Unreachable(B, ours, 0)
	ptb[packet.IPv6HeaderLen] = packet.ICMPv6TooBig
	if v := f.Inbound(decode(ptb), now); v != Accept {
		t.Fatalf("ICMP error about our reply: %v", v)
	}
	// The same error about a flow nobody allowed is dropped.
	binary.BigEndian.PutUint16(ours[packet.IPv6HeaderLen:], 23)
	ptb = packet.Unreachable(B, ours, 0)
	if v := f.Inbound(decode(ptb), now); v != DropDenied {
		t.Fatalf("ICMP error about nothing: %v", v)
	}
}

func TestConntrackBoundAndExpiry(t *testing.T) {
	me, bob := mustKey(t), mustKey(t)
	ct := NewConntrack(2)
	now := time.Now().UnixNano()
	for i := uint16(1); i <= 2; i++ {
		if !ct.Outbound(tcpPkt(me.Address(), bob.Address(), i, 80, packet.TCPSyn), now) {
			t.Fatal("refused below the bound")
		}
	}
	if ct.Outbound(tcpPkt(me.Address(), bob.Address(), 3, 80, packet.TCPSyn), now) {
		t.Fatal("table grew past its bound")
	}
	later := now + int64(tcpNewTimeout) + int64(time.Second)
	if !ct.Outbound(tcpPkt(me.Address(), bob.Address(), 3, 80, packet.TCPSyn), later) {
		t.Fatal("expired flows not collected when full")
	}
	if ct.Reply(tcpPkt(bob.Address(), me.Address(), 80, 1, packet.TCPAck), later) {
		t.Fatal("expired flow answered")
	}
}

func FuzzParseRule(f *testing.F) {
	f.Add("*", "tcp", "22,8000-8080")
	f.Add("fcff:805b:1683:9242:1948:aa5b:d63a:3561", "udp", "53")
	f.Add("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "icmp", "")
	f.Fuzz(func(t *testing.T, from, proto, ports string) {
		r, err := ParseRule(from, proto, ports)
		if err != nil {
			return
		}
		// The canonical form parses back to an equal rule.
		back, err := ParseRule(r.From.String(), r.Proto.String(), r.Ports.String())
		if err != nil || !back.Equal(r) {
			t.Fatalf("round trip of %q: %v", r, err)
		}
		for _, pr := range r.Ports {
			if pr.Lo == 0 || pr.Lo > pr.Hi {
				t.Fatalf("bad range %+v", pr)
			}
		}
	})
}

// Devices behind a peer (its site prefix) are judged as the peer; a site
// address nobody owns is denied.
func TestFilterSiteSources(t *testing.T) {
	me, bob, eve := mustKey(t), mustKey(t), mustKey(t)
	f := NewFilter(Local{Addr: me.Address(), Site: me.SitePrefix()}, Compile([]Rule{mustRule(t, bob.String(), "tcp", "22")}), NewConntrack(0), nil)
	now := time.Now().UnixNano()
	behindBob := bob.SitePrefix().Addr().Next()
	if v := f.Inbound(tcpPkt(behindBob, me.Address(), 1, 22, packet.TCPSyn), now); v != DropDenied {
		t.Fatalf("site source without a known owner: %v", v)
	}
	f.SetSites(map[netip.Prefix]netip.Addr{bob.SitePrefix(): bob.Address(), eve.SitePrefix(): eve.Address()})
	if v := f.Inbound(tcpPkt(behindBob, me.Address(), 1, 22, packet.TCPSyn), now); v != Accept {
		t.Fatalf("device behind bob: %v", v)
	}
	if v := f.Inbound(tcpPkt(eve.SitePrefix().Addr().Next(), me.Address(), 1, 22, packet.TCPSyn), now); v != DropDenied {
		t.Fatalf("device behind eve: %v", v)
	}
	if f.Denied(eve.Address()) != 1 {
		t.Fatal("denial not counted against the owner")
	}
}

// A node that forwards (an exit) never treats its own addresses as
// forwarded: packets from peers to them are not for the overlay, and it
// does not send from them into the overlay.
func TestFilterHostAddressesAreNotForwarded(t *testing.T) {
	me, bob := mustKey(t), mustKey(t)
	own, other := netip.MustParseAddr("2001:db8::5"), netip.MustParseAddr("2001:db8::7")
	f := NewFilter(Local{Addr: me.Address(), Site: me.SitePrefix(), Offered: []netip.Prefix{netip.MustParsePrefix("2000::/3")},
		Host: []netip.Addr{netip.MustParseAddr("2001:db8::1"), own}}, Compile([]Rule{mustRule(t, bob.String(), "tcp", "22")}), NewConntrack(0), nil)
	now := time.Now().UnixNano()
	if v := f.Inbound(tcpPkt(bob.Address(), other, 5000, 22, packet.TCPSyn), now); v != Accept {
		t.Fatalf("bob to a forwarded address: %v", v)
	}
	if v := f.Inbound(tcpPkt(bob.Address(), own, 5000, 22, packet.TCPSyn), now); v != DropNotLocal {
		t.Fatalf("bob to the exit's own address: %v", v)
	}
	if v := f.Outbound(tcpPkt(own, bob.Address(), 22, 5000, packet.TCPSyn|packet.TCPAck), now); v != DropSpoofed {
		t.Fatalf("from the exit's own address: %v", v)
	}
	if v := f.Outbound(tcpPkt(other, bob.Address(), 22, 5000, packet.TCPSyn|packet.TCPAck), now); v != Accept {
		t.Fatalf("from a forwarded address: %v", v)
	}
}
