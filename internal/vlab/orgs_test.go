package vlab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/node"
	"github.com/tomoe-net/tomoe/internal/org"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// orgLab is one organisation ("acme") on the in-memory internet: a bridge
// and four members that know only the bridge. The server admits tcp/7
// from the dev group only; alice and mallory are in dev, eve in sales.
type orgLab struct {
	*Lab
	signer                          *org.Signer
	keyPath                         string
	br, server, alice, mallory, eve *Node
	certs                           map[*Node]*org.Cert
}

func newOrgLab(t *testing.T, serverExtra string) *orgLab {
	t.Helper()
	lab := New(t, vnetConfig())
	keyPath := filepath.Join(t.TempDir(), "acme.key")
	s, err := org.Init("acme", keyPath)
	if err != nil {
		t.Fatal(err)
	}
	l := &orgLab{Lab: lab, signer: s, keyPath: keyPath, certs: map[*Node]*org.Cert{}}
	l.br = lab.NewNode("bridge", lab.AddHost("bridge"))
	l.server = lab.NewNode("server", lab.AddHost("server"))
	l.alice = lab.NewNode("alice", lab.AddHost("alice"))
	l.mallory = lab.NewNode("mallory", lab.AddHost("mallory"))
	l.eve = lab.NewNode("eve", lab.AddHost("eve"))
	members := []*Node{l.server, l.alice, l.mallory, l.eve}
	names := map[*Node][2]string{l.server: {"server.acme", "servers"}, l.alice: {"alice@dev.acme", "dev"}, l.mallory: {"mallory@dev.acme", "dev"}, l.eve: {"eve@sales.acme", "sales"}}
	l.br.Start(t, BridgeConfig(members...)+l.orgConfig(nil, ""))
	for _, m := range members {
		c, err := s.SignCert(org.CertRequest{Node: m.Public(), Name: names[m][0], Groups: []string{names[m][1]}, TTL: 24 * time.Hour}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		l.certs[m] = c
		extra := ""
		if m == l.server {
			extra = serverExtra
		}
		m.Start(t, JoinConfig(l.br, "")+l.orgConfig(m, "")+extra)
		m.Echo(t, echoPort)
	}
	for _, m := range members {
		m.WaitBridge(t, "registered", "udp", 10*time.Second)
	}
	return l
}

// orgConfig is the [[orgs]] entry for acme, with n's certificate (written
// to its directory) unless n is nil.
func (l *orgLab) orgConfig(n *Node, extra string) string {
	s := fmt.Sprintf("[[orgs]]\nname = \"acme\"\npublic_key = %q\n", l.signer.Public())
	if n != nil {
		if c := l.certs[n]; c != nil {
			if err := os.WriteFile(filepath.Join(n.Dir, "acme.cert"), []byte(c.Text()+"\n"), 0o644); err != nil {
				panic(err)
			}
			s += "cert = \"acme.cert\"\n"
		}
	}
	return s + extra
}

func orgStatus(t *testing.T, n *Node) adminapi.OrgStatus {
	t.Helper()
	st, err := n.StatusArea().Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Orgs) != 1 {
		t.Fatalf("%s: %d organisations in status", n.Name, len(st.Orgs))
	}
	return st.Orgs[0]
}

func crlVersion(t *testing.T, n *Node) uint64 {
	if c := orgStatus(t, n).CRL; c != nil {
		return c.Version
	}
	return 0
}

const devRule = "[[policy.allow]]\nfrom = \"group:acme/dev\"\nproto = \"tcp\"\nports = \"7\"\n"

// TestOrgGroupRuleAndRevocationSpread: a group rule admits members of the
// group whose certificate the server never saw before (it travels in-band
// with the handshake), refuses others; a revocation list pushed to one
// member reaches the server through the bridge and through a peer session
// and cuts the revoked member's live connection.
func TestOrgGroupRuleAndRevocationSpread(t *testing.T) {
	l := newOrgLab(t, devRule)

	start := time.Now()
	l.alice.Talk(t, l.server, echoPort)
	t.Logf("alice (group dev) reached the server in %v", time.Since(start).Round(time.Millisecond))
	live := l.mallory.Talk(t, l.server, echoPort)

	if c, err := l.eve.Dial(l.server, echoPort, 3*time.Second); err == nil {
		c.Close()
		t.Fatal("eve (group sales) connected to a server that admits group dev only")
	}
	peers, err := l.server.StatusArea().Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	names := map[string][]string{}
	for _, p := range peers {
		names[p.CertName] = p.Groups
	}
	if g := names["alice@dev.acme"]; len(g) != 1 || g[0] != "acme/dev" {
		t.Fatalf("server's peers: alice's certificate name and groups not shown: %v", names)
	}
	// Alice's first packets waited for her certificate; none was dropped.
	for _, p := range peers {
		if p.CertName == "alice@dev.acme" && p.DeniedPackets != 0 {
			t.Fatalf("the server dropped %d of alice's packets while her certificate was on its way", p.DeniedPackets)
		}
	}

	crl, err := l.signer.Revoke([]uint64{l.certs[l.mallory].Serial}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pushed := time.Now()
	res, err := node.OrgsArea{Node: l.alice.Node}.Push(context.Background(), adminapi.OrgPushRequest{Document: crl.Text()})
	if err != nil || !res.Newer || res.Version != 1 {
		t.Fatalf("push to alice = %+v, %v", res, err)
	}
	for _, n := range []*Node{l.server, l.mallory, l.eve} {
		testnet.WaitFor(t, 10*time.Second, n.Name+" has revocation list 1", func() bool { return crlVersion(t, n) == 1 })
	}
	t.Logf("revocation list spread to every node in %v", time.Since(pushed).Round(time.Millisecond))
	if err := testnet.RoundTrip(live, "mallory after revocation", 2*time.Second); err == nil {
		t.Fatal("the revoked member's live connection still works")
	}
	if c, err := l.mallory.Dial(l.server, echoPort, 3*time.Second); err == nil {
		c.Close()
		t.Fatal("the revoked member connected again")
	}
	l.alice.Talk(t, l.server, echoPort) // the others are unaffected

	// An older or the same list is not taken; a tampered one is refused.
	res, err = node.OrgsArea{Node: l.server.Node}.Push(context.Background(), adminapi.OrgPushRequest{Document: crl.Text()})
	if err != nil || res.Newer {
		t.Fatalf("same list again = %+v, %v; want not newer", res, err)
	}
	bad := []byte(crl.Text())
	bad[len(bad)-3] ^= 1
	if _, err := (node.OrgsArea{Node: l.server.Node}).Push(context.Background(), adminapi.OrgPushRequest{Document: string(bad)}); err == nil {
		t.Fatal("a tampered list was accepted")
	}
}

// TestOrgStaleListFailsClosed: with crl_max_age and no list fresh
// enough, the server refuses the organisation's certificates; a fresh
// list lets members in again.
func TestOrgStaleListFailsClosed(t *testing.T) {
	l := newOrgLab(t, devRule)
	l.server.Stop()
	l.server.Start(t, JoinConfig(l.br, "")+l.orgConfig(l.server, "crl_max_age = \"1h\"\n")+devRule)
	l.server.Echo(t, echoPort)
	l.server.WaitBridge(t, "registered", "udp", 10*time.Second)
	if st := orgStatus(t, l.server); !st.CRLStale {
		t.Fatalf("server status without a list: crl_stale false (%+v)", st)
	}
	if c, err := l.alice.Dial(l.server, echoPort, 3*time.Second); err == nil {
		c.Close()
		t.Fatal("alice connected while the server has no fresh revocation list")
	}
	crl, err := l.signer.Revoke(nil, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (node.OrgsArea{Node: l.alice.Node}).Push(context.Background(), adminapi.OrgPushRequest{Document: crl.Text()}); err != nil {
		t.Fatal(err)
	}
	testnet.WaitFor(t, 10*time.Second, "server has a fresh list", func() bool { return !orgStatus(t, l.server).CRLStale })
	testnet.WaitFor(t, 15*time.Second, "alice reaches the server", func() bool {
		c, err := l.alice.Dial(l.server, echoPort, 3*time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		return testnet.RoundTrip(c, "alice", 2*time.Second) == nil
	})
	if !strings.Contains(orgStatus(t, l.server).Name, "acme") {
		t.Fatal("status lost the organisation")
	}
}

// orgBlock is an [[orgs]] entry for s's organisation, with c (written to
// n's directory) as n's certificate unless c is nil.
func orgBlock(t *testing.T, s *org.Signer, n *Node, c *org.Cert, extra string) string {
	t.Helper()
	b := fmt.Sprintf("[[orgs]]\nname = %q\npublic_key = %q\n", s.Name(), s.Public())
	if c != nil {
		f := s.Name() + ".cert"
		if err := os.WriteFile(filepath.Join(n.Dir, f), []byte(c.Text()+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		b += fmt.Sprintf("cert = %q\n", f)
	}
	return b + extra
}

// TestOrgMemberOfTwoOrganisations: alice belongs to acme (group dev) and
// globex (group ops), each certificate with its own name. The server
// trusts both and admits acme/dev to port 7 and globex/ops to port 8.
// Revoking alice's acme certificate leaves her a member of globex only:
// her session stays, her live connection to port 8 goes on, the one to
// port 7 stops, and a new one to port 7 is refused.
func TestOrgMemberOfTwoOrganisations(t *testing.T) {
	lab := New(t, vnetConfig())
	sign := map[string]*org.Signer{}
	for _, name := range []string{"acme", "globex"} {
		s, err := org.Init(name, filepath.Join(t.TempDir(), name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		sign[name] = s
	}
	acme, globex := sign["acme"], sign["globex"]
	br := lab.NewNode("bridge", lab.AddHost("bridge"))
	server := lab.NewNode("server", lab.AddHost("server"))
	alice := lab.NewNode("alice", lab.AddHost("alice"))
	br.Start(t, BridgeConfig(server, alice))
	certFor := func(s *org.Signer, n *Node, name, group string) *org.Cert {
		c, err := s.SignCert(org.CertRequest{Node: n.Public(), Name: name, Groups: []string{group}, TTL: 24 * time.Hour}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	aliceAcme := certFor(acme, alice, "alice@dev.acme", "dev")
	server.Start(t, JoinConfig(br, "")+orgBlock(t, acme, server, certFor(acme, server, "server.acme", "servers"), "")+orgBlock(t, globex, server, nil, "")+
		"[[policy.allow]]\nfrom = \"group:acme/dev\"\nproto = \"tcp\"\nports = \"7\"\n"+
		"[[policy.allow]]\nfrom = \"group:globex/ops\"\nproto = \"tcp\"\nports = \"8\"\n")
	alice.Start(t, JoinConfig(br, "")+orgBlock(t, acme, alice, aliceAcme, "")+orgBlock(t, globex, alice, certFor(globex, alice, "alice@ops.globex", "ops"), ""))
	server.Echo(t, 7)
	server.Echo(t, 8)
	for _, n := range []*Node{server, alice} {
		n.WaitBridge(t, "registered", "udp", 10*time.Second)
	}

	live7 := alice.Talk(t, server, 7)
	live8 := alice.Talk(t, server, 8)
	peers, err := server.StatusArea().Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var orgsSeen []string
	for _, p := range peers {
		if p.Address == alice.Addr().String() {
			for _, m := range p.Memberships {
				orgsSeen = append(orgsSeen, m.Org+":"+m.Name)
			}
		}
	}
	if strings.Join(orgsSeen, " ") != "acme:alice@dev.acme globex:alice@ops.globex" {
		t.Fatalf("server sees alice's memberships as %v", orgsSeen)
	}

	crl, err := acme.Revoke([]uint64{aliceAcme.Serial}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (node.OrgsArea{Node: server.Node}).Push(context.Background(), adminapi.OrgPushRequest{Document: crl.Text()}); err != nil {
		t.Fatal(err)
	}
	testnet.WaitFor(t, 15*time.Second, "alice reaches port 8 as a member of globex", func() bool {
		c, err := alice.Dial(server, 8, 3*time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		return testnet.RoundTrip(c, "alice", 2*time.Second) == nil
	})
	if c, err := alice.Dial(server, 7, 3*time.Second); err == nil {
		c.Close()
		t.Fatal("alice reached acme's port 7 after acme revoked her")
	}
	if err := testnet.RoundTrip(live7, "alice on port 7 after acme revoked her", 2*time.Second); err == nil {
		t.Fatal("alice's live connection to acme's port 7 still works")
	}
	if err := testnet.RoundTrip(live8, "alice on port 8 after acme revoked her", 5*time.Second); err != nil {
		t.Fatalf("alice's live connection to globex's port 8 broke: %v", err)
	}
}

// TestAdminOverOverlayByGroup: in userspace mode, the server gives its
// admin API to group acme/dev as read through [[admin.allow]] alone:
// alice (dev) reads its status over the overlay and cannot change a rule;
// eve (sales) gets no answer.
func TestAdminOverOverlayByGroup(t *testing.T) {
	l := newOrgLab(t, "[[admin.allow]]\nfrom = \"group:acme/dev\"\nrole = \"read\"\n")
	url := fmt.Sprintf("http://[%s]:%d", l.server.Addr(), adminapi.AdminPort)
	client := func(n *Node) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return n.DialContext(ctx, "tcp6", addr) },
		}}
	}
	var resp *http.Response
	testnet.WaitFor(t, 15*time.Second, "alice reads the server's status over the overlay", func() bool {
		r, err := client(l.alice).Get(url + "/v1/status")
		if err != nil {
			return false
		}
		resp = r
		return true
	})
	var st adminapi.Status
	err := json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if resp.StatusCode != 200 || err != nil || st.PublicKey != l.server.Public().String() {
		t.Fatalf("status over the overlay: %d %v %+v", resp.StatusCode, err, st)
	}
	r, err := client(l.alice).Post(url+"/v1/policy/allow", "application/json", strings.NewReader(`{"from":"*"}`))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusForbidden {
		t.Fatalf("a read identity's change answered %d, want 403", r.StatusCode)
	}
	if _, err := client(l.eve).Get(url + "/v1/status"); err == nil {
		t.Fatal("eve (not in group dev) reached the admin API")
	}

	// The web UI beside it: no login, alice is who her address says; the
	// read role sees the pages and cannot change a rule through them.
	page := func(path string) (int, string) {
		r, err := client(l.alice).Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, string(b)
	}
	code, body := page("/policy")
	if code != 200 || !strings.Contains(body, "group:acme/dev") || strings.Contains(body, "Log out") {
		t.Fatalf("policy page over the overlay: %d\n%s", code, body)
	}
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(body)
	if csrf == nil {
		t.Fatal("no CSRF token on the policy page")
	}
	form := neturl.Values{"csrf": {csrf[1]}, "from": {"*"}, "proto": {"tcp"}, "ports": {"1"}}
	req, _ := http.NewRequest("POST", url+"/policy/add", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", url)
	r, err = client(l.alice).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusForbidden {
		t.Fatalf("a read identity's change through the UI answered %d, want 403", r.StatusCode)
	}
	if code, _ := page("/login?token=x"); code != http.StatusNotFound {
		t.Fatalf("login over the overlay answered %d, want 404", code)
	}
}
