package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tomoe-net/tomoe/internal/adminapi"
	"github.com/tomoe-net/tomoe/internal/testnet"
)

// TestAdminOverOverlay: a node lists one identity as read and one as write
// in [[admin.allow]] and nothing in [[policy.allow]]. Over the overlay, the
// reader sees its status but cannot change a rule (403), the writer
// changes one, a node not listed gets no TCP answer at all, a cross-site
// request is refused, and nothing listens outside the TUN.
func TestAdminOverOverlay(t *testing.T) {
	parallel(t, 20*time.Second)
	testnet.RequireRoot(t)
	lan := testnet.NewLAN(t, "target", "reader", "writer", "stranger")
	nodes := map[string]*kernelNode{}
	var all []*kernelNode
	for _, name := range []string{"target", "reader", "writer", "stranger"} {
		nodes[name] = &kernelNode{nodeDir: newNodeDir(t, name), host: lan.Hosts[name]}
		all = append(all, nodes[name])
	}
	target, reader, writer, stranger := nodes["target"], nodes["reader"], nodes["writer"], nodes["stranger"]
	mesh := func(self *kernelNode) string {
		var b strings.Builder
		for _, o := range all {
			if o != self {
				b.WriteString(peerBlock(o.nodeDir, o.endpoint()))
			}
		}
		return b.String()
	}
	target.body = mesh(target) +
		fmt.Sprintf("[[admin.allow]]\nfrom = %q\nrole = \"read\"\n", reader.pub()) +
		fmt.Sprintf("[[admin.allow]]\nfrom = %q\nrole = \"write\"\n", writer.addr())
	for _, n := range all {
		if n != target {
			n.body = mesh(n)
		}
		n.start(t)
	}
	remote := func(from *kernelNode, args ...string) (string, error) {
		return from.host.Try(append([]string{tomoeBin, "--remote", target.addr()}, args...)...)
	}

	t.Run("read identity sees, cannot change", func(t *testing.T) {
		var out string
		testnet.WaitFor(t, 15*time.Second, "reader gets the target's status over the overlay", func() bool {
			o, err := remote(reader, "status", "--json")
			out = o
			return err == nil
		})
		if !strings.Contains(out, target.pub().String()) {
			t.Fatalf("status over the overlay does not name the target:\n%s", out)
		}
		out, err := remote(reader, "policy", "allow", stranger.addr(), "--proto", "tcp", "--ports", "22")
		if err == nil || !strings.Contains(out, "read role") {
			t.Fatalf("a read identity changed a rule (err %v):\n%s", err, out)
		}
		// Questions that change nothing are open to a read identity.
		if out, err := remote(reader, "policy", "explain", stranger.addr(), "--proto", "tcp", "--port", "22"); err != nil || !strings.HasPrefix(out, "deny") {
			t.Fatalf("explain over the overlay for a read identity (err %v; want a deny decision):\n%s", err, out)
		}
	})

	t.Run("write identity changes a rule", func(t *testing.T) {
		out, err := remote(writer, "policy", "allow", stranger.addr(), "--proto", "tcp", "--ports", "22")
		if err != nil {
			t.Fatalf("writer: %v\n%s", err, out)
		}
		var rules []adminapi.Rule
		target.cliJSON(t, &rules, "policy", "list", "--json")
		found := false
		for _, r := range rules {
			if r.From == stranger.addr() && r.Ports == "22" && r.Source == "api" {
				found = true
			}
		}
		if !found {
			t.Fatalf("the writer's rule is not in the target's policy: %+v", rules)
		}
	})

	t.Run("write identity changes a rule through the web UI", func(t *testing.T) {
		base := fmt.Sprintf("http://[%s]:%d", target.addr(), adminapi.AdminPort)
		page, err := writer.host.Try("curl", "-sf", base+"/policy")
		m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
		if err != nil || m == nil {
			t.Fatalf("policy page over the overlay (err %v):\n%s", err, page)
		}
		out, err := writer.host.Try("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Origin: "+base,
			"--data-urlencode", "csrf="+m[1], "--data-urlencode", "from="+reader.addr(), "--data-urlencode", "proto=udp", "--data-urlencode", "ports=53", base+"/policy/add")
		if err != nil || out != "303" {
			t.Fatalf("the form's change answered %q (err %v), want 303", out, err)
		}
		if !strings.Contains(target.cli(t, "policy", "list"), "53") {
			t.Fatalf("the UI's change is not in the target's policy:\n%s", target.cli(t, "policy", "list"))
		}
		// The same form from the read identity is refused.
		page, _ = reader.host.Try("curl", "-sf", base+"/policy")
		if m = regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page); m == nil {
			t.Fatalf("reader's policy page:\n%s", page)
		}
		out, _ = reader.host.Try("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Origin: "+base,
			"--data-urlencode", "csrf="+m[1], "--data-urlencode", "from="+reader.addr(), "--data-urlencode", "proto=udp", "--data-urlencode", "ports=54", base+"/policy/add")
		if out != "403" {
			t.Fatalf("the read identity's form answered %q, want 403", out)
		}
	})

	t.Run("identity not listed gets no answer", func(t *testing.T) {
		c, err := stranger.dialTCP(target.addr(), adminapi.AdminPort, 3*time.Second)
		if err == nil {
			c.Close()
			t.Fatal("a node not in [[admin.allow]] connected to the admin port")
		}
		if !strings.Contains(err.Error(), "timeout") {
			t.Fatalf("want no answer at all (a timeout), got %v", err)
		}
	})

	t.Run("cross-site and foreign-host requests refused", func(t *testing.T) {
		url := fmt.Sprintf("http://[%s]:%d/v1/policy/allow", target.addr(), adminapi.AdminPort)
		body := fmt.Sprintf(`{"from":%q,"proto":"tcp","ports":"23"}`, reader.addr())
		for _, tc := range []struct{ name, header string }{
			{"origin", "Origin: http://evil.example"},
			{"fetch-site", "Sec-Fetch-Site: cross-site"},
			{"host", "Host: evil.example"},
			{"form", "Content-Type: text/plain"},
		} {
			args := []string{"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "--data", body, "-H", tc.header, url}
			if tc.name != "form" {
				args = append(args, "-H", "Content-Type: application/json")
			}
			out, _ := writer.host.Try(args...)
			if out == "200" || out == "" {
				t.Errorf("%s: answered %q", tc.name, out)
			}
		}
		// By the rules themselves: the text form holds addresses, whose
		// random hex may contain "23".
		var rules []adminapi.Rule
		target.cliJSON(t, &rules, "policy", "list", "--json")
		for _, r := range rules {
			if r.Ports == "23" {
				t.Fatalf("a refused request changed the policy: %+v", r)
			}
		}
	})

	t.Run("nothing listens outside the overlay", func(t *testing.T) {
		out := target.host.Run("ss", "-Htln", fmt.Sprintf("sport = :%d", adminapi.AdminPort))
		if !strings.Contains(out, "["+target.addr()+"]%tomoe0:") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Fatalf("admin port listeners:\n%s", out)
		}
		// This host's own users have the socket, not the overlay port.
		if out, err := remote(target, "status"); err == nil {
			t.Fatalf("the target's own host reached its overlay admin port:\n%s", out)
		}
	})
}
